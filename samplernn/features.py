"""Frame-level acoustic features for local conditioning (SampleRNN as a vocoder).

One feature kind, the log-mel spectrogram, computed the same way everywhere: at `prepare
features=logmel` (from the stored 16-bit samples), at generation (`features=<audio file>`)
and for any user file. The spec (`FeatureSpec`) and the train split's per-band statistics
travel with the dataset's manifest and with every checkpoint trained on it.

Alignment: frame j of a file describes its samples [j * hop, (j + 1) * hop); its window of
`win` samples is centred on the middle of that span, the signal taken as silence beyond
the file's ends. A file of n samples has ceil(n / hop) frames. A model whose top frame size
divides hop conditions each top frame on the one feature frame that holds it.

Values: natural log of the mel power, floored at `floor`; normalised per band with the
train split's mean and standard deviation (`normalised`). Outside a file the features are
those of digital silence (`silence`), as the codes there are silence.
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import read_audio
from .errors import BadFile, ConfigError, NotFound

KINDS = ("logmel",)


@dataclass(frozen=True)
class FeatureSpec:
    """How log-mel features are made: sample_rate (Hz), n_mels bands between f_min and
    f_max (Hz; None: half the rate), hop (samples per frame), a Hann window of win samples
    zero-padded to n_fft, natural log of the power floored at floor."""
    sample_rate: int
    n_mels: int = 80
    hop: int = 160
    win: int = 640
    n_fft: int = 1024
    f_min: float = 0.0
    f_max: float | None = None
    floor: float = 1e-5
    kind: str = "logmel"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"features={self.kind!r} is unknown; use one of {list(KINDS)}")
        for name in ("n_mels", "hop", "win", "n_fft"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"mel_{name}={getattr(self, name)} must be at least 1")
        if self.win > self.n_fft:
            raise ConfigError(f"mel_win={self.win} is longer than mel_n_fft={self.n_fft}; "
                              "give mel_n_fft >= mel_win")
        if self.hop > self.win:
            raise ConfigError(f"mel_hop={self.hop} is longer than mel_win={self.win}: samples "
                              "between windows would be described by no frame")
        top = self.f_max if self.f_max is not None else self.sample_rate / 2
        if not 0 <= self.f_min < top <= self.sample_rate / 2:
            raise ConfigError(f"mel f_min={self.f_min}, f_max={self.f_max}: need 0 <= f_min < "
                              f"f_max <= {self.sample_rate / 2} (half the sample rate)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FeatureSpec":
        keys = {k: values[k] for k in cls.__dataclass_fields__ if k in values}
        return cls(**keys)

    def n_frames(self, n_samples: int) -> int:
        return math.ceil(n_samples / self.hop)

    def describe(self) -> str:
        ms = 1000 / self.sample_rate
        return (f"{self.n_mels}-band log-mel, hop {self.hop} ({self.hop * ms:g} ms), "
                f"window {self.win} ({self.win * ms:g} ms)")


_transforms: dict = {}


def _mel(spec: FeatureSpec):
    key = (spec.sample_rate, spec.n_mels, spec.hop, spec.win, spec.n_fft, spec.f_min, spec.f_max)
    if key not in _transforms:
        import torchaudio
        _transforms[key] = torchaudio.transforms.MelSpectrogram(
            sample_rate=spec.sample_rate, n_fft=spec.n_fft, win_length=spec.win,
            hop_length=spec.hop, f_min=spec.f_min, f_max=spec.f_max, n_mels=spec.n_mels,
            power=2.0, center=False, norm="slaney", mel_scale="slaney")
    return _transforms[key]


def logmel(wav, spec: FeatureSpec) -> np.ndarray:
    """wav [n] float in [-1, 1] (NumPy or torch) -> float32 [ceil(n / hop), n_mels]: frame j
    from the window centred on samples [j * hop, (j + 1) * hop) (see the module's doc)."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).flatten()
    n = x.shape[0]
    frames = spec.n_frames(n)
    if frames == 0:
        return np.zeros((0, spec.n_mels), np.float32)
    left = spec.n_fft // 2 - spec.hop // 2  # window j's centre: j * hop + hop / 2
    right = (frames - 1) * spec.hop + spec.n_fft - left - n
    x = torch.nn.functional.pad(x, (left, right))
    with torch.no_grad():
        mel = _mel(spec)(x)  # [n_mels, frames]
    assert mel.shape[1] == frames, (mel.shape, frames)
    return torch.log(mel.clamp_min(spec.floor)).T.contiguous().numpy()


def silence(spec: FeatureSpec) -> np.ndarray:
    """The features of digital silence [n_mels] (the floor)."""
    return np.full(spec.n_mels, math.log(spec.floor), np.float32)


def statistics(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation of the frames of some files (float64 sums);
    a band that never varies gets 1, so it stays finite."""
    n = sum(len(f) for f in frames)
    total = sum(f.sum(0, dtype=np.float64) for f in frames)
    mean = total / max(n, 1)
    var = sum(((f - mean) ** 2).sum(0, dtype=np.float64) for f in frames) / max(n, 1)
    std = np.sqrt(var)
    std[std < 1e-6] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


class Normaliser:
    """The dataset's statistics applied to raw log-mel frames: (x - mean) / std."""

    def __init__(self, info: dict):
        self.spec = FeatureSpec.from_dict(info)
        self.mean = np.asarray(info["mean"], np.float32)
        self.std = np.asarray(info["std"], np.float32)
        if self.mean.shape != (self.spec.n_mels,) or self.std.shape != (self.spec.n_mels,):
            raise ConfigError(f"feature statistics of {len(self.mean)} bands for a "
                              f"{self.spec.n_mels}-band spec")

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return ((frames - self.mean) / self.std).astype(np.float32)

    def window(self, frames: np.ndarray, first: int, count: int) -> np.ndarray:
        """`window` of one file's raw frames with silence beyond them, normalised."""
        return self(window(frames, first, count, silence(self.spec)))

    @property
    def silence(self) -> np.ndarray:
        return self(silence(self.spec)[None])[0]


def window(frames: np.ndarray, first: int, count: int, pad: np.ndarray) -> np.ndarray:
    """frames[first:first + count] of one file's frames [F, n_mels], rows outside [0, F)
    taken as `pad` (the silence features) -> [count, n_mels]."""
    out = np.broadcast_to(pad, (count, len(pad))).copy()
    a, b = max(first, 0), min(first + count, len(frames))
    if b > a:
        out[a - first:b - first] = frames[a:b]
    return out


def load(path, info: dict, data_options: dict) -> tuple[np.ndarray, int]:
    """(raw feature frames [F, n_mels], samples they describe) for generation: of an audio
    file (decoded, resampled to the model's rate and normalised as its data were, then
    computed as at prepare: copy synthesis; its length), or made elsewhere: a .npy of raw
    log-mel frames [F, n_mels] at the model's hop, or a .npz holding `logmel` with its
    `sample_rate` and `hop` (both checked; F * hop samples)."""
    from .prepare import as_stored  # prepare imports this module
    spec = FeatureSpec.from_dict(info)
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"features={path}: no such file; give an audio file (its features are "
                       "computed, copy synthesis) or a .npy/.npz of log-mel frames")
    if path.suffix.lower() not in (".npy", ".npz"):
        wav = read_audio(path, spec.sample_rate)
        stored = as_stored(wav, {**data_options, "sample_rate": spec.sample_rate})
        return logmel(stored, spec), len(wav)
    try:
        data = np.load(path, allow_pickle=False)
        if path.suffix.lower() == ".npz":
            rate, hop = int(data["sample_rate"]), int(data["hop"])
            if (rate, hop) != (spec.sample_rate, spec.hop):
                raise BadFile(f"features={path} are at {rate} Hz with a hop of {hop} samples; "
                              f"this model's are {spec.sample_rate} Hz, hop {spec.hop}: compute "
                              "them again at those")
            data = data["logmel"]
    except (ValueError, OSError, KeyError, EOFError) as err:
        raise BadFile(f"features={path} cannot be read as log-mel frames "
                      f"({' '.join(str(err).split())}); give a .npy of [frames, "
                      f"{spec.n_mels}] or a .npz with logmel, sample_rate and hop") from None
    frames = np.asarray(data)
    if frames.ndim != 2 or frames.shape[1] != spec.n_mels or not len(frames):
        raise BadFile(f"features={path} hold an array of shape {frames.shape}; this model "
                      f"reads [frames, {spec.n_mels}] ({spec.describe()})")
    if not np.isfinite(frames).all():
        raise BadFile(f"features={path} hold values that are not finite; give log-mel frames")
    return frames.astype(np.float32), len(frames) * spec.hop


def save(path, frames: np.ndarray, spec: FeatureSpec) -> None:
    """Frames as a .npz that generation checks: logmel, sample_rate, hop."""
    np.savez(path, logmel=np.asarray(frames, np.float32), sample_rate=spec.sample_rate,
             hop=spec.hop)


def for_model(frames: list[np.ndarray], normaliser: Normaliser, radius: int) -> torch.Tensor:
    """Raw frames per stream -> what Sampler(features=) takes: normalised, padded with
    silence's features to the longest and by `radius` frames before and after,
    [B, F + 2 * radius, n_mels]."""
    longest = max(len(f) for f in frames)
    return torch.from_numpy(np.stack([normaliser.window(f, -radius, longest + 2 * radius)
                                      for f in frames]))
