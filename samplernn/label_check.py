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

   The classifier learns the recordings as the model codes them (quantized to its levels
   and back: the form every sample comes in). Learnt from the 16-bit recordings, it also
   hears the quantization: 8-bit linear codes put a floor of about -53 dB under every pause
   and raise the high bands, which halves some bands' spread over time: on the three
   voices it hears 14 of the 18 English test recordings, merely quantized, as the Russian
   voice, whose recordings are the least silent. That classifier is run too and reported
   beside it (`classifier_16bit`, with its score on the recordings as the model codes
   them: what a model whose samples were the recordings would get), as the earlier
   reports used it.

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
from .quantization import dequantize, quantize
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


def _as_coded(wav: np.ndarray, q_type: str, q_levels: int) -> np.ndarray:
    """Audio as the model codes it: quantized to its levels and back."""
    codes = quantize(torch.from_numpy(np.asarray(wav, np.float32)), q_type, q_levels)
    return dequantize(codes, q_type, q_levels).numpy()


def _classify(features, train_audio, train_labels, names, real_audio, real_labels, wavs,
              label: list[int], form, coded=None) -> dict:
    """One classifier: fitted on the training audio in `form`, checked on the real files
    (in the same form, at 1, 0.5 and 2 times their level, and `coded` if given: what a
    model whose samples were the recordings would score), then asked about the samples."""
    classifier = LogisticRegression().fit(
        np.stack([features(form(w)) for w in train_audio]), np.array(train_labels), len(names))

    def heard(audio) -> list[int]:
        return classifier.predict(np.stack([features(w) for w in audio])).tolist()
    real = confusion(real_labels, heard([form(w) for w in real_audio]), len(names))
    at_gain = {f"{gain:g}": accuracy(confusion(real_labels, heard([form(gain * w) for w in real_audio]),
                                               len(names))) for gain in GAINS}
    picked = heard(wavs)
    generated = confusion(label, picked, len(names))
    result = {"real": {"accuracy": accuracy(real), "confusion": real, "accuracy_at_gain": at_gain},
              "generated": {"accuracy": accuracy(generated), "confusion": generated,
                            "picked": picked}}
    if coded is not None:
        result["real"]["accuracy_as_coded"] = accuracy(confusion(
            real_labels, heard([coded(w) for w in real_audio]), len(names)))
    return result


def by_classifier(model, dataset: PreparedDataset, split: str, names: list[str],
                  per_label: int, seconds: float, seed: int, out_dir: Path) -> dict:
    """A classifier of the real audio as the model codes it (and one of the 16-bit audio),
    checked on the split's files, then asked which label each generated sample sounds like.
    -> {"classifier": ..., "classifier_16bit": ...}"""
    cfg = model.config
    features = VoiceFeatures(dataset.sample_rate)
    train, held_out = dataset.files("train"), dataset.files(split)
    train_audio, train_labels = _file_audio(dataset, train), [names.index(f["label"]) for f in train]
    real_audio, real_labels = _file_audio(dataset, held_out), [names.index(f["label"]) for f in held_out]
    lb = model.lookback
    length = max(lb, int(round(seconds * dataset.sample_rate)) // lb * lb)
    label = torch.arange(len(names)).repeat_interleave(per_label)
    codes = generate(model, len(label), length, temperature=1.0, seed=seed, label=label)
    wavs = dequantize(codes.cpu(), cfg.q_type, cfg.q_levels).numpy()
    label = label.tolist()

    def coded(w):
        return _as_coded(w, cfg.q_type, cfg.q_levels)
    checks = {"classifier": _classify(features, train_audio, train_labels, names, real_audio,
                                      real_labels, wavs, label, coded),
              "classifier_16bit": _classify(features, train_audio, train_labels, names,
                                            real_audio, real_labels, wavs, label, lambda w: w,
                                            coded)}
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for k, (wav, j) in enumerate(zip(wavs, label)):
        p, p16 = (checks[c]["generated"]["picked"][k] for c in ("classifier", "classifier_16bit"))
        stem = out_dir / f"{names[j]}_{k % per_label:03d}"
        write_wav(stem.with_suffix(".wav"), wav, dataset.sample_rate)
        Path(f"{stem}_spectrogram.png").write_bytes(spectrogram_png(
            wav, dataset.sample_rate, title=f"{names[j]} (heard as {names[p]})"))
        samples.append({"wav": str(stem.with_suffix(".wav")), "label": names[j],
                        "picked": names[p], "picked_16bit": names[p16]})
    for c in checks.values():
        del c["generated"]["picked"]
        c["real"] |= {"n_files": len(held_out), "n_train_files": len(train)}
        c["generated"] |= {"per_label": per_label, "seconds": length / dataset.sample_rate}
    checks["classifier"]["audio"] = f"as the model codes it ({cfg.q_levels} {cfg.q_type} levels)"
    checks["classifier_16bit"]["audio"] = "16-bit, as prepared"
    checks["classifier"]["real"]["rms"] = _rms_by_label(real_audio, real_labels, names)
    checks["classifier"]["generated"] |= {"rms": _rms_by_label(wavs, label, names),
                                          "samples": samples}
    return checks


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
              **by_classifier(model, dataset, split, names, per_label, seconds, seed,
                              out.with_suffix(""))}
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
    lines = [
        _table(f"by likelihood, {report['split']} files", report["likelihood"]["confusion"], names),
        f"classifier of the recordings {c.get('audio', '16-bit, as prepared')}:",
        _table(f"classifier on the real {report['split']} files", real["confusion"], names),
        f"  the same files 6 dB quieter and louder: {gains}",
        _table(f"classifier on {gen['per_label']} generated {gen['seconds']:g}-s samples per "
               "label", gen["confusion"], names),
        f"RMS level, real / generated: {levels}"]
    if "classifier_16bit" in report:  # reports written before it have only the first
        c16 = report["classifier_16bit"]
        per = " / ".join(str(row[i]) for i, row in enumerate(c16["generated"]["confusion"]))
        lines.append(f"the classifier of the 16-bit recordings (it hears the quantization too): "
                     f"real {c16['real']['accuracy']:.1%} (as the model codes them "
                     f"{c16['real']['accuracy_as_coded']:.1%}), generated "
                     f"{c16['generated']['accuracy']:.1%} ({per} of each label's samples)")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m samplernn.label_check: the same as samplernn-label-check
    from .cli import label_check
    label_check()
