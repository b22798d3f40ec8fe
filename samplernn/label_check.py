"""Does a conditioned model know its labels? Two checks, from a checkpoint and its data.

    python scripts/label_check.py <run dir>/checkpoints/best.pt [--per-label 10] [--seconds 4]

1. By likelihood: every file of a split scored under every label (evaluate's `as_label`);
   a file is identified as the label under which the model finds it most likely. The
   confusion matrix (rows: the file's label, columns: the label picked) and the accuracy.
2. By ear, with a classifier standing in for the listener: a multinomial logistic regression
   on per-file log-mel statistics (each band's mean and spread over time) of the real
   training audio, checked on the real files of the split (as they are, and 6 dB quieter and
   louder: how much the answer moves with level alone), then asked which label each of
   `per_label` generated samples per label sounds like. The RMS level of the real files and
   of the samples, per label, stands beside it.

Everything lands in one JSON file (and the generated WAVs with spectrograms in a folder
beside it); the tables are printed.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch

from . import labels as labelling
from .audio import pcm16_to_float, write_wav
from .checkpoint import load_checkpoint
from .data import PreparedDataset
from .device import pick_device
from .errors import ConfigError
from .evaluate import evaluate_nll
from .plots import spectrogram_png
from .quantization import dequantize
from .sampler import generate

N_MELS = 40
CLASSIFIER_SECONDS = 8.0  # at most this much of each file feeds the classifier
GAINS = (0.5, 2.0)  # the real files again, 6 dB quieter and louder


class VoiceFeatures:
    """Per-recording features: each log-mel band's mean and standard deviation over time
    (25 ms windows, 10 ms hop)."""

    def __init__(self, sample_rate: int):
        import torchaudio
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=int(0.025 * sample_rate),
            hop_length=int(0.010 * sample_rate), n_mels=N_MELS)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(wav, np.float32))
        logmel = torch.log(self.mel(x) + 1e-6)                       # [n_mels, frames]
        return torch.cat([logmel.mean(1), logmel.std(1, unbiased=False)]).numpy()


class LogisticRegression:
    """Multinomial logistic regression on standardised features, L2-penalised, fitted by
    L-BFGS to convergence."""

    def __init__(self, l2: float = 1e-3):
        self.l2 = l2

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> "LogisticRegression":
        x = torch.from_numpy(x).double()
        self.mean, self.std = x.mean(0), x.std(0).clamp(min=1e-8)
        z, target = (x - self.mean) / self.std, torch.from_numpy(y).long()
        self.w = torch.zeros(z.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([self.w, self.b], max_iter=500, line_search_fn="strong_wolfe")

        def loss():
            optimizer.zero_grad()
            value = torch.nn.functional.cross_entropy(z @ self.w + self.b, target) + \
                self.l2 * (self.w ** 2).sum()
            value.backward()
            return value
        optimizer.step(loss)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (torch.from_numpy(x).double() - self.mean) / self.std
        with torch.no_grad():
            return (z @ self.w + self.b).argmax(1).numpy()


def confusion(true: list[int], picked: list[int], n: int) -> list[list[int]]:
    """counts[i][j]: items of label i identified as label j."""
    counts = [[0] * n for _ in range(n)]
    for t, p in zip(true, picked):
        counts[t][p] += 1
    return counts


def accuracy(counts: list[list[int]]) -> float:
    total = sum(map(sum, counts))
    return sum(counts[i][i] for i in range(len(counts))) / max(total, 1)


def by_likelihood(model, dataset: PreparedDataset, split: str, names: list[str], device,
                  batch_size: int = 32, seq_len: int = 1024) -> dict:
    """Each file of the split under every label: which one makes it most likely."""
    nll = []  # [label][file]
    for j in range(len(names)):
        result = evaluate_nll(model, dataset, split, batch_size, seq_len, device, as_label=j)
        nll.append([f["nll_bits"] for f in result["files"]])
    files = dataset.files(split)
    true = [names.index(f["label"]) for f in files]
    picked = [int(np.argmin([nll[j][i] for j in range(len(names))])) for i in range(len(files))]
    counts = confusion(true, picked, len(names))
    return {"accuracy": accuracy(counts), "confusion": counts, "n_files": len(files),
            "files": [{"source": f["source"], "label": f["label"], "picked": names[p],
                       "nll_bits": {names[j]: nll[j][i] for j in range(len(names))}}
                      for i, (f, p) in enumerate(zip(files, picked))]}


def _file_audio(dataset: PreparedDataset, files: list[dict]) -> list[np.ndarray]:
    most = int(CLASSIFIER_SECONDS * dataset.sample_rate)
    return [pcm16_to_float(dataset.samples[f["offset"]:f["offset"] + min(f["n_samples"], most)])
            for f in files]


def _rms_by_label(wavs, labels: list[int], names: list[str]) -> dict:
    """Each label's mean RMS level (on the -1..1 scale)."""
    rms = [float(np.sqrt(np.mean(np.square(w, dtype=np.float64)))) for w in wavs]
    return {n: float(np.mean([r for r, j in zip(rms, labels) if j == i]))
            for i, n in enumerate(names) if i in labels}


def by_classifier(model, dataset: PreparedDataset, split: str, names: list[str],
                  per_label: int, seconds: float, seed: int, out_dir: Path) -> dict:
    """A classifier of the real audio, checked on the split's files, then asked which label
    each generated sample sounds like."""
    features = VoiceFeatures(dataset.sample_rate)
    train = dataset.files("train")
    classifier = LogisticRegression().fit(
        np.stack([features(w) for w in _file_audio(dataset, train)]),
        np.array([names.index(f["label"]) for f in train]), len(names))
    held_out = dataset.files(split)
    real_audio, real_labels = _file_audio(dataset, held_out), [names.index(f["label"]) for f in held_out]

    def heard(wavs, gain: float = 1.0) -> list[int]:
        return classifier.predict(np.stack([features(gain * w) for w in wavs])).tolist()
    real = confusion(real_labels, heard(real_audio), len(names))
    at_gain = {f"{gain:g}": accuracy(confusion(real_labels, heard(real_audio, gain), len(names)))
               for gain in GAINS}
    lb = model.lookback
    length = max(lb, int(round(seconds * dataset.sample_rate)) // lb * lb)
    label = torch.arange(len(names)).repeat_interleave(per_label)
    codes = generate(model, len(label), length, temperature=1.0, seed=seed, label=label)
    cfg = model.config
    wavs = dequantize(codes.cpu(), cfg.q_type, cfg.q_levels).numpy()
    picked = heard(wavs)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for k, (wav, j, p) in enumerate(zip(wavs, label.tolist(), picked)):
        stem = out_dir / f"{names[j]}_{k % per_label:03d}"
        write_wav(stem.with_suffix(".wav"), wav, dataset.sample_rate)
        Path(f"{stem}_spectrogram.png").write_bytes(spectrogram_png(
            wav, dataset.sample_rate, title=f"{names[j]} (heard as {names[p]})"))
        samples.append({"wav": str(stem.with_suffix(".wav")), "label": names[j],
                        "picked": names[p]})
    generated = confusion(label.tolist(), picked, len(names))
    return {"real": {"accuracy": accuracy(real), "confusion": real, "n_files": len(held_out),
                     "n_train_files": len(train), "accuracy_at_gain": at_gain,
                     "rms": _rms_by_label(real_audio, real_labels, names)},
            "generated": {"accuracy": accuracy(generated), "confusion": generated,
                          "per_label": per_label, "seconds": length / dataset.sample_rate,
                          "rms": _rms_by_label(wavs, label.tolist(), names),
                          "samples": samples}}


def check(checkpoint, split: str = "test", per_label: int = 10, seconds: float = 4.0,
          seed: int = 1, device: str = "cpu", out: Path | None = None,
          threads: int | None = 1) -> dict:
    """Both checks for a conditioned checkpoint; the report is written to `out` (default:
    label_check_<split>_<checkpoint>.json beside it). threads: torch's, as evaluate's."""
    model, info = load_checkpoint(checkpoint, pick_device(device, threads))
    names = labelling.of_checkpoint(info)
    if not model.config.conditioned:
        raise ConfigError(f"{checkpoint} was trained without labels: nothing to check")
    dataset = PreparedDataset(info["dataset"]["path"])
    if dataset.labels != names:
        raise ConfigError(f"{dataset.path} no longer has the labels {checkpoint} was trained on")
    out = Path(out) if out else Path(checkpoint).with_name(
        f"label_check_{split}_{Path(checkpoint).stem}.json")
    model.eval()
    report = {"checkpoint": str(checkpoint), "step": info["step"], "split": split,
              "labels": names, "dataset": str(dataset.path),
              "likelihood": by_likelihood(model, dataset, split, names,
                                          next(model.parameters()).device),
              "classifier": by_classifier(model, dataset, split, names, per_label, seconds,
                                          seed, out.with_suffix(""))}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    return report | {"out": str(out)}


def _table(title: str, counts: list[list[int]], names: list[str]) -> str:
    width = max(8, *map(len, names))
    lines = [f"{title}: {accuracy(counts):.1%} of {sum(map(sum, counts))} "
             f"(rows: true label, columns: picked)",
             " " * width + "".join(f"{n:>{width + 1}}" for n in names)]
    lines += [f"{n:<{width}}" + "".join(f"{c:>{width + 1}}" for c in row)
              for n, row in zip(names, counts)]
    return "\n".join(lines)


def report_lines(report: dict) -> str:
    """The three tables of a report and the levels, for the terminal."""
    names, c = report["labels"], report["classifier"]
    real, gen = c["real"], c["generated"]
    gains = ", ".join(f"{a:.1%} at x{g}" for g, a in real["accuracy_at_gain"].items())
    levels = ", ".join(f"{n} {real['rms'].get(n, math.nan):.3f} / {gen['rms'][n]:.3f}"
                       for n in names)  # a label may have no file in a small split
    return "\n".join([
        _table(f"by likelihood, {report['split']} files", report["likelihood"]["confusion"], names),
        _table(f"classifier on the real {report['split']} files", real["confusion"], names),
        f"  the same files 6 dB quieter and louder: {gains}",
        _table(f"classifier on {gen['per_label']} generated {gen['seconds']:g}-s samples per "
               "label", gen["confusion"], names),
        f"RMS level, real / generated: {levels}"])


if __name__ == "__main__":  # python -m samplernn.label_check: the same as samplernn-label-check
    from .cli import label_check
    label_check()
