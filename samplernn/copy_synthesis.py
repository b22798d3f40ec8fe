"""Copy synthesis: how close does a vocoder bring real files back from their features?

    python scripts/copy_synthesis.py <vocoder run>/checkpoints/best.pt \
        [--baseline <unconditioned run>/checkpoints/best.pt] [--split test] [--max-seconds S]

For every file of the split (the checkpoint's data, as stored): the vocoder's resynthesis
from the file's own feature frames, a sample of the same length from the baseline (an
unconditioned model: what a sample that knows nothing of the file scores), and the original
quantized and decoded by the vocoder's codes (the floor: what the codes alone lose). Each is
compared with the original by the log-mel distance (`lmd_db`): per frame, the RMS over the
bands of the difference of their levels in dB, both floored at the features' floor; the
mean over frames. The features' own spec (bands, hop, window) measures it.

One JSON report, the WAVs, and a PNG of one file's spectrograms (original, resynthesis,
baseline, one above the other) land beside the checkpoint.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch

from .audio import pcm16_to_float, write_wav
from .checkpoint import load_checkpoint
from .data import PreparedDataset
from .errors import ConfigError
from .features import FeatureSpec, Normaliser, for_model, logmel
from .plots import spectrograms_png
from .quantization import dequantize, quantize
from .sampler import generate

DB = 10.0 / math.log(10.0)  # natural log of power -> dB


def lmd_db(a: np.ndarray, b: np.ndarray, spec: FeatureSpec) -> float:
    """Log-mel distance of two waveforms in dB (the mean over frames of the RMS over bands
    of their level difference); the longer is cut to the shorter."""
    n = min(len(a), len(b))
    la, lb = logmel(a[:n], spec), logmel(b[:n], spec)
    return float(np.mean(np.sqrt(np.mean((DB * (la - lb)) ** 2, axis=1))))


def _streams(model, n: int, lengths: list[int], seed: int, temperature: float,
             feats: torch.Tensor | None, threads: int | None) -> list[np.ndarray]:
    codes = generate(model, n, max(lengths), temperature=temperature, seed=seed,
                     features=feats, threads=threads)
    cfg = model.config
    wavs = dequantize(codes.cpu(), cfg.q_type, cfg.q_levels).numpy()
    return [w[:m] for w, m in zip(wavs, lengths)]


def run(checkpoint, baseline=None, split: str = "test", max_seconds: float | None = None,
        temperature: float = 1.0, seed: int = 1, threads: int | None = None,
        out: Path | None = None) -> dict:
    """The distances for every file of `split`; the report is written to `out` (default:
    copy_synthesis_<split>_<checkpoint>.json beside the checkpoint)."""
    device = torch.device("cpu")
    model, info = load_checkpoint(checkpoint, device)
    if not model.config.has_features:
        raise ConfigError(f"{checkpoint} was trained without features: it resynthesises "
                          "nothing (train on data prepared with features=logmel)")
    dataset = PreparedDataset(info["dataset"]["path"])
    if not dataset.feature_info:
        raise ConfigError(f"{dataset.path} no longer has the features {checkpoint} was "
                          "trained on")
    base = None
    if baseline is not None:
        base, base_info = load_checkpoint(baseline, device)
        if base.config.has_features or base_info["dataset"]["fingerprint"] != \
                info["dataset"]["fingerprint"]:
            raise ConfigError(f"--baseline={baseline}: give an unconditioned model trained on "
                              f"the same data ({dataset.path})")
        base.eval()
    model.eval()
    spec = FeatureSpec.from_dict({**dataset.feature_info, "sample_rate": dataset.sample_rate})
    files = dataset.files(split)
    if not files:
        raise ConfigError(f"{dataset.path} has no {split} files")
    cap = None if max_seconds is None else int(max_seconds * dataset.sample_rate)
    lengths = [min(f["n_samples"], cap or f["n_samples"]) for f in files]
    originals = [pcm16_to_float(np.asarray(dataset.samples[f["offset"]:f["offset"] + m]))
                 for f, m in zip(files, lengths)]
    frames = [np.asarray(dataset.file_features(f))[:-(-m // spec.hop)]
              for f, m in zip(files, lengths)]
    feats = for_model(frames, Normaliser(dataset.feature_info), model.config.feature_radius)
    cfg = model.config
    with torch.inference_mode():
        resynthesised = _streams(model, len(files), lengths, seed, temperature, feats, threads)
        unconditioned = (_streams(base, len(files), lengths, seed, temperature, None, threads)
                         if base is not None else None)
    out = Path(out) if out else Path(checkpoint).with_name(
        f"copy_synthesis_{split}_{Path(checkpoint).stem}.json")
    folder = out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (f, wav, again) in enumerate(zip(files, originals, resynthesised)):
        floor = dequantize(quantize(torch.from_numpy(wav), cfg.q_type, cfg.q_levels),
                           cfg.q_type, cfg.q_levels).numpy()
        row = {"source": f["source"], "seconds": len(wav) / dataset.sample_rate,
               "resynthesis": lmd_db(wav, again, spec), "requantized": lmd_db(wav, floor, spec)}
        stem = Path(f["source"]).stem
        write_wav(folder / f"{k:03d}_{stem}_resynthesis.wav", again, dataset.sample_rate)
        if unconditioned is not None:
            row["unconditioned"] = lmd_db(wav, unconditioned[k], spec)
            write_wav(folder / f"{k:03d}_{stem}_unconditioned.wav", unconditioned[k],
                      dataset.sample_rate)
        rows.append(row)
    keys = [k for k in ("resynthesis", "unconditioned", "requantized") if k in rows[0]]
    weights = np.array(lengths, np.float64)
    mean = {k: float(np.average([r[k] for r in rows], weights=weights)) for k in keys}
    shown = int(np.argmax(lengths))  # the longest file: the most to look at
    panels = [("original", originals[shown]), ("resynthesis", resynthesised[shown])]
    if unconditioned is not None:
        panels.append(("unconditioned sample", unconditioned[shown]))
    png = folder / f"spectrograms_{Path(files[shown]['source']).stem}.png"
    png.write_bytes(spectrograms_png(panels, dataset.sample_rate,
                                     title=f"{files[shown]['source']} ({split})"))
    write_wav(folder / "original.wav", originals[shown], dataset.sample_rate)
    report = {"checkpoint": str(checkpoint), "step": info["step"], "baseline":
              None if baseline is None else str(baseline), "split": split,
              "dataset": str(dataset.path), "temperature": temperature, "seed": seed,
              "max_seconds": max_seconds, "distance": "log-mel distance, dB (" +
              spec.describe() + ")", "mean": mean, "files": rows, "spectrograms": str(png)}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    return report | {"out": str(out)}


def report_lines(report: dict) -> str:
    m = report["mean"]
    lines = [f"log-mel distance to the originals, {len(report['files'])} {report['split']} "
             f"files (dB, mean weighted by length; lower is closer):",
             f"  resynthesis from their features  {m['resynthesis']:.2f}"]
    if "unconditioned" in m:
        lines.append(f"  unconditioned samples            {m['unconditioned']:.2f}")
    lines.append(f"  the originals re-quantized       {m['requantized']:.2f}  (the floor)")
    return "\n".join(lines)
