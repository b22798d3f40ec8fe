"""Prepare the real speech set in ../shared/data/speech_en_allison (CI: SAMPLERNN_REAL_DATA=1)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplernn.data import EvalStream, PreparedDataset, TrainStream
from samplernn.prepare import prepare

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALLISON = SHARED / "speech_en_allison"

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(os.environ.get("SAMPLERNN_REAL_DATA") != "1",
                       reason="real-data test: set SAMPLERNN_REAL_DATA=1 (reads ../shared/data)"),
]


def test_prepare_speech_allison(tmp_path):
    if not ALLISON.is_dir():
        pytest.fail(f"SAMPLERNN_REAL_DATA=1 but {ALLISON} is missing")
    sources = sorted(p for p in ALLISON.rglob("*") if p.is_file() and not p.name.startswith("."))
    frames = {p.relative_to(ALLISON).as_posix(): sf.info(p).frames for p in sources}
    out = tmp_path / "speech_allison"
    manifest = prepare(ALLISON, out)
    report = json.loads((out / "report.json").read_text())

    # every file is accounted for; the only skips are clips under min_seconds (0.5 s)
    assert report["n_found"] == len(sources)
    assert report["n_kept"] + report["n_skipped"] == len(sources)
    assert set(report["counts"]) <= {"too_short"}
    assert all(frames[s["source"]] < 0.5 * 16000 for s in report["skipped"])
    kept = {f["source"]: f for f in manifest["files"]}
    assert len(kept) == report["n_kept"] == sum(n >= 0.5 * 16000 for n in frames.values())
    # 16 kHz mono 16-bit FLAC in, 16 kHz out: sample counts exact, samples bit-exact
    assert all(f["n_samples"] == frames[s] for s, f in kept.items())
    samples = np.load(out / "samples.npy", mmap_mode="r")
    assert len(samples) == manifest["n_samples"] == sum(f["n_samples"] for f in kept.values())
    name, entry = sorted(kept.items())[len(kept) // 2]
    original, _ = sf.read(ALLISON / name, dtype="int16")
    assert np.array_equal(samples[entry["offset"]:entry["offset"] + entry["n_samples"]], original)
    assert 19.5 < manifest["n_samples"] / 16000 / 60 < 21.5

    # split by file: disjoint, about 5 % / 5 %, and seeded
    splits = {s: {f["source"] for f in manifest["files"] if f["split"] == s}
              for s in ("train", "valid", "test")}
    assert sum(len(v) for v in splits.values()) == len(kept)
    assert not (splits["train"] & splits["valid"] or splits["train"] & splits["test"]
                or splits["valid"] & splits["test"])
    for s in ("valid", "test"):
        assert len(splits[s]) == round(0.05 * len(kept))

    # a re-run is a no-op; loaders cover the data
    assert prepare(ALLISON, out) == manifest
    ds = PreparedDataset(out)
    stream = EvalStream(ds, "valid", 16, 1024, 64, "mu-law", 256)
    assert sum(int(b.mask.sum()) for b in stream) == ds.n_samples("valid")
    batch = next(iter(TrainStream(ds, 8, 1024, 64, 8 * 16000, "mu-law", 256)))
    assert batch.codes.shape == (8, 1088) and batch.reset.all()


def test_training_on_real_speech_lowers_the_exact_nll(tmp_path):
    """A few dozen steps of the tiny model on real speech: valid NLL falls well below 8 bits."""
    if not ALLISON.is_dir():
        pytest.fail(f"SAMPLERNN_REAL_DATA=1 but {ALLISON} is missing")
    from conftest import compose_train

    from samplernn.train import run
    prepare(ALLISON, tmp_path / "data")
    cfg = compose_train("debug=tiny", "logger=none", f"dataset.path={tmp_path / 'data'}",
                        "dataset.builtin=false", "dataset.num_workers=0", "train.max_steps=60",
                        "train.batch_size=8", "train.seq_len=256", "eval.every=30",
                        "eval.n_samples=1", "eval.sample_seconds=0.5", "optim.lr=3e-3")
    final = run(cfg, run_dir=tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [m["valid/nll_bits"] for m in lines if "valid/nll_bits" in m]
    assert valid[-1] < valid[0] < 8.0
    assert final["test/nll_bits"] < 7.0
    wav, _ = sf.read(tmp_path / "run" / "samples" / "step_60" / "sample_0.wav")
    assert np.abs(wav).max() > 0  # not silence
