"""All audio file I/O: decoding, resampling, 16-bit PCM conversion and writing.

This is the only module that opens audio files (through soundfile, never
`torchaudio.load/save`); resampling uses `torchaudio.functional.resample`.

Conventions: `wav` is float32 mono [n] in [-1, 1]; `pcm16` is int16 [n] with
wav = pcm16 / 32768. Long files are decoded and resampled block by block
(`iter_audio_blocks`), so memory stays constant and the result is the same as
resampling the whole file at once.
"""

import contextlib
import math
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .errors import UserError

PCM16_SCALE = 32768.0
# Leading bytes of the containers libsndfile reads: a file that matches none of
# them and fails to open is "not_audio"; one that matches but fails is "unreadable".
_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"ID3", b"caff", b"riff",
          b".snd", b"NIST", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xfa")
_BLOCK_FRAMES = 1 << 18           # input frames decoded per block
_LOWPASS_WIDTH = 6                # torchaudio.functional.resample defaults
_ROLLOFF = 0.99


class WriteError(UserError):
    """An audio file that could not be written (a full disk, a folder we may not write)."""


class AudioError(UserError):
    """An audio file that cannot be used. `reason` is a short slug:
    "empty", "not_audio", "unreadable", "silent" or "too_short"."""

    def __init__(self, path, reason: str, detail: str):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")


def audio_info(path) -> dict:
    """Header facts without decoding: sample_rate, channels, n_frames, seconds, format.

    Raises AudioError("empty" | "not_audio" | "unreadable" | "unsupported_format").
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise AudioError(path, "empty", "the file has 0 bytes")
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile reports every failure the same way
        with open(path, "rb") as f:
            head = f.read(12)
        unsupported = _unsupported_format(head)
        if unsupported:
            raise AudioError(path, "unsupported_format", f"unsupported format ({unsupported}): "
                             "soundfile (libsndfile) cannot decode it; convert it, e.g. with "
                             f"ffmpeg -i '{path.name}' '{path.stem}.flac'") from None
        known = any(head.startswith(m) for m in _MAGIC)
        reason = "unreadable" if known else "not_audio"
        raise AudioError(path, reason, f"soundfile cannot open it ({str(err).strip()})") from None
    n_frames = int(info.frames) if info.frames > 0 else 0
    if n_frames == 0 or info.samplerate <= 0:
        raise AudioError(path, "empty", "the file holds no audio frames")
    return {"sample_rate": int(info.samplerate), "channels": int(info.channels),
            "n_frames": n_frames, "seconds": n_frames / info.samplerate,
            "format": f"{info.format}/{info.subtype}"}


def _unsupported_format(head: bytes) -> str | None:
    """Audio containers libsndfile does not read, by their first bytes: MP4/M4A (AAC, ALAC),
    raw AAC (ADTS), WMA/ASF."""
    if head[4:8] == b"ftyp":
        return "MP4/M4A, e.g. AAC"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "AAC (ADTS)"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "WMA/ASF"
    return None


def resampled_length(n_frames: int, orig_rate: int, new_rate: int) -> int:
    """Number of output samples `torchaudio.functional.resample` gives for n_frames inputs."""
    g = math.gcd(orig_rate, new_rate)
    return math.ceil(n_frames * (new_rate // g) / (orig_rate // g))


def _context_frames(orig_rate: int, new_rate: int) -> tuple[int, int, int]:
    """(o, n, context): the reduced rates and the input context, a multiple of o, that the
    resampling kernel needs on each side of a block (more than its half-width plus one frame)."""
    g = math.gcd(orig_rate, new_rate)
    o, n = orig_rate // g, new_rate // g
    width = math.ceil(_LOWPASS_WIDTH * o / (min(o, n) * _ROLLOFF))
    return o, n, (width // o + 2) * o


def _decoded_blocks(path: Path, block_frames: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks [block_frames] (the last one shorter) at the file's own rate. A
    file holding NaN or infinite values (a damaged float file) is an AudioError: patching
    them would hide the damage."""
    try:
        with sf.SoundFile(str(path)) as f:
            done = 0
            while True:
                block = f.read(block_frames, dtype="float32", always_2d=True)
                if len(block) == 0:
                    return
                bad = ~np.isfinite(block).all(axis=1)
                if bad.any():
                    raise AudioError(path, "bad_samples", f"it holds NaN or infinite values "
                                     f"(first at frame {done + int(np.argmax(bad))}): the file is "
                                     "damaged; repair or remove it")
                mono = block[:, 0].copy()
                for c in range(1, block.shape[1]):      # column sums: much faster than mean(axis=1)
                    mono += block[:, c]
                if block.shape[1] > 1:
                    mono *= np.float32(1.0 / block.shape[1])
                yield mono
                done += len(block)
                if len(block) < block_frames:
                    return
    except AudioError:
        raise
    except Exception as err:
        raise AudioError(path, "unreadable", f"decoding failed ({str(err).strip()})") from None


def _resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(x)), orig_rate, new_rate,
                      lowpass_filter_width=_LOWPASS_WIDTH, rolloff=_ROLLOFF)
    return out.numpy()


def resample_blocks(blocks: Iterator[np.ndarray], orig_rate: int,
                    new_rate: int) -> Iterator[np.ndarray]:
    """Resample a stream of float32 blocks [k * o] (o = orig_rate / gcd; only the last block may
    be shorter), yielding blocks at new_rate whose concatenation equals resampling the whole
    signal at once: each block is resampled with enough real context on both sides that the
    sinc kernel never sees the zero padding except at the true ends of the signal.
    """
    if orig_rate == new_rate:
        yield from blocks
        return
    o, n, context = _context_frames(orig_rate, new_rate)
    history = np.zeros(0, np.float32)
    it = iter(blocks)
    cur = next(it, None)
    while cur is not None:
        nxt = next(it, None)
        if nxt is not None and (len(cur) % o or len(cur) < context):
            raise ValueError(f"inner blocks must be multiples of {o} frames and >= {context}")
        look = nxt[:context] if nxt is not None else np.zeros(0, np.float32)
        out = _resample(np.concatenate([history, cur, look]), orig_rate, new_rate)
        first = len(history) // o * n
        yield out[first:] if nxt is None else out[first:first + len(cur) // o * n]
        history = np.concatenate([history, cur])[-context:]
        cur = nxt


def iter_audio_blocks(path, sample_rate: int, block_frames: int = _BLOCK_FRAMES
                      ) -> Iterator[np.ndarray]:
    """Decode `path` as float32 mono blocks at `sample_rate` (channels averaged).

    Constant memory for any file length. Raises AudioError for files soundfile cannot read.
    """
    path = Path(path)
    info = audio_info(path)
    rate = info["sample_rate"]
    o, _, context = _context_frames(rate, sample_rate)
    block_frames = max(context, block_frames // o * o)
    yield from resample_blocks(_decoded_blocks(path, block_frames), rate, sample_rate)


def read_audio(path, sample_rate: int) -> np.ndarray:
    """Whole file as float32 mono [n] at `sample_rate`, n = ceil(frames * sample_rate / rate).

    Values are as decoded (float files may exceed [-1, 1]; nothing is clipped here).
    Raises AudioError("empty" | "not_audio" | "unreadable").
    """
    blocks = list(iter_audio_blocks(path, sample_rate))
    if not blocks or sum(len(b) for b in blocks) == 0:
        raise AudioError(path, "empty", "the file decoded to 0 samples")
    return np.concatenate(blocks).astype(np.float32, copy=False)


def float_to_pcm16(wav) -> np.ndarray:
    """Float audio [n] in [-1, 1] (numpy or torch) -> int16 [n]; values outside are clipped."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().float().numpy()
    wav = np.asarray(wav, dtype=np.float32)
    return np.clip(np.rint(wav * PCM16_SCALE), -32768, 32767).astype(np.int16)


def pcm16_to_float(pcm16) -> np.ndarray:
    """int16 [...] -> float32 [...] in [-1, 1)."""
    return np.asarray(pcm16, dtype=np.float32) / np.float32(PCM16_SCALE)


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def write_wav(path, wav, sample_rate: int) -> Path:
    """Write float audio [n] in [-1, 1] as a 16-bit PCM mono WAV, atomically
    (`<name>.partial` in the same folder, then renamed)."""
    path = Path(path)
    with WavStreamWriter(path, sample_rate) as w:
        w.write(wav)
    return path


class WavStreamWriter:
    """Append float audio blocks [n] to a 16-bit PCM mono WAV in constant memory.

        with WavStreamWriter(path, 16000) as w:
            w.write(block)          # numpy or torch, float [n] in [-1, 1]

    Writes `<name>.partial` in the target folder; a clean exit renames it to `path`
    (header finalised by soundfile), an exception deletes it. `n_samples` counts what
    has been written.
    """

    def __init__(self, path, sample_rate: int):
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.n_samples = 0
        self._partial = _partial_path(self.path)
        self._file = None

    def __enter__(self) -> "WavStreamWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._said():
            self._file = sf.SoundFile(str(self._partial), mode="w", samplerate=self.sample_rate,
                                      channels=1, format="WAV", subtype="PCM_16")
        return self

    def write(self, wav) -> None:
        """Append float audio [n] (or [1, n]) in [-1, 1]; values outside are clipped."""
        if self._file is None:
            raise RuntimeError(f"WavStreamWriter({self.path}) is not open; use it in a with block")
        pcm = float_to_pcm16(wav).reshape(-1)
        with self._said():
            self._file.write(pcm)
        self.n_samples += len(pcm)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            with self._said():
                self._file.close()
        except WriteError:
            if exc_type is None:
                raise
        finally:
            self._file = None
            if exc_type is None and self._partial.exists():
                os.replace(self._partial, self.path)
            else:
                self._partial.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _said(self):
        """libsndfile's failures ("System error") as one line naming the file."""
        try:
            yield
        except (sf.LibsndfileError, RuntimeError) as error:
            self._partial.unlink(missing_ok=True)
            free = shutil.disk_usage(self.path.parent).free
            why = "the disk is full: free some space or write elsewhere" if free < (1 << 20) \
                else "check the folder and its permissions"
            raise WriteError(f"could not write {self.path} ({' '.join(str(error).split())}): "
                             f"{why}") from None
