"""Audio samples written during training: WAV + JSON sidecar + waveform/spectrogram PNGs.

samples/step_<N>/sample_<K>.wav, sample_<K>.json (how it was made), and
sample_<K>_waveform.png / sample_<K>_spectrogram.png; mirrored to W&B.
"""

import json
import time
from pathlib import Path

import torch

from .audio import write_wav
from .features import Normaliser, for_model
from .plots import spectrogram_png, waveform_png
from .quantization import dequantize
from .sampler import generate


def write_samples(model, run_dir, step: int, logger, *, n: int, seconds: float,
                  temperature: float, seed: int, sample_rate: int,
                  labels: list[str] | None = None, copies: list[dict] | None = None,
                  features: dict | None = None) -> float | None:
    """Generate n samples of `seconds` each; returns generation speed in samples/s per stream.
    A conditioned model's samples go through its labels in turn (sample k: label k mod
    the number of labels), so n >= the number of labels hears every one. A model with
    features resynthesises `copies` (source, raw frames, n_samples, label: validation files,
    at most `seconds` of each) with the statistics of `features` (the dataset's)."""
    if n <= 0 or seconds <= 0:
        return None
    length = max(model.lookback, int(round(seconds * sample_rate)) // model.lookback * model.lookback)
    label = torch.arange(n) % len(labels) if labels else None
    feats = None
    if copies:
        n, hop = len(copies), model.config.feature_hop
        length = min(length, max(c["n_samples"] for c in copies) // model.lookback * model.lookback)
        frames = [c["frames"][:-(-length // hop)] for c in copies]
        feats = for_model(frames, Normaliser(features), model.config.feature_radius)
        label = torch.tensor([c["label"] for c in copies]) if labels else None
    t0 = time.perf_counter()
    codes = generate(model, n, length, temperature=temperature, seed=seed, label=label,
                     features=feats)
    speed = length / max(time.perf_counter() - t0, 1e-9)
    cfg = model.config
    wavs = dequantize(codes.cpu(), cfg.q_type, cfg.q_levels).numpy()
    out_dir = Path(run_dir) / "samples" / f"step_{step}"
    out_dir.mkdir(parents=True, exist_ok=True)
    media = []
    for k, wav in enumerate(wavs):
        name = labels[int(label[k])] if labels else None
        said = f", label {name}" if labels else ""
        if copies:
            said += f", from the features of {copies[k]['source']}"
        stem = out_dir / f"sample_{k}"
        write_wav(stem.with_suffix(".wav"), wav, sample_rate)
        sidecar = {"checkpoint": str(Path(run_dir) / "checkpoints" / "last.pt"), "step": step,
                   "temperature": temperature, "seed": seed, "index": k,
                   "seconds": length / sample_rate, "sample_rate": sample_rate,
                   "gen_samples_per_s": speed, "prime": None,
                   **({"label": name} if labels else {}),
                   **({"features": copies[k]["source"]} if copies else {})}
        stem.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
        wave = waveform_png(wav, sample_rate, title=f"step {step}, sample {k}{said}")
        spec = spectrogram_png(wav, sample_rate, title=f"step {step}, sample {k}{said}")
        Path(f"{stem}_waveform.png").write_bytes(wave)
        Path(f"{stem}_spectrogram.png").write_bytes(spec)
        media.append({"index": k, "wav": wav, "sample_rate": sample_rate, "waveform_png": wave,
                      "spectrogram_png": spec, "temperature": temperature, "seed": seed,
                      "label": name, "caption": f"step {step}, sample {k}{said}, temperature "
                                                f"{temperature:g}, seed {seed}"})
    logger.log({"perf/gen_samples_per_s": speed}, step)
    logger.log_media(step, media)
    return speed

