"""The training job end to end on the CPU: outputs, exact resume, checkpoints, W&B."""

import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from samplernn import SampleRNN, SampleRNNConfig, load_checkpoint
from samplernn.train import run

from conftest import CONFIGS, compose_train


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def series(run_dir: Path, key: str) -> list[tuple[int, float]]:
    return [(m["step"], m[key]) for m in metrics(run_dir) if key in m]


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml")))
def test_every_model_preset_composes_and_builds(model):
    cfg = compose_train(f"model={model}")
    config = SampleRNNConfig(**cfg.model)
    assert cfg.train.seq_len % config.frame_sizes[-1] == 0


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    cfg = compose_train(f"experiment={experiment}")
    SampleRNNConfig(**cfg.model)
    assert cfg.experiment_name


@pytest.mark.parametrize("variant", sorted(p.stem for p in (CONFIGS / "variant").glob("*.yaml")))
def test_every_variant_composes_onto_the_fidelity_experiment(variant):
    """configs/variant: the authors' model (the defaults) or named deviations from it."""
    from samplernn.model import DEVIATIONS
    cfg = compose_train("experiment=fidelity", f"variant={variant}")
    config = SampleRNNConfig(**cfg.model)
    authors = SampleRNNConfig(**compose_train("experiment=fidelity").model)
    changed = {k for k, v in config.to_dict().items() if authors.to_dict()[k] != v}
    assert changed <= set(DEVIATIONS) | {"q_type"}
    assert (cfg.train.order == "random") == (variant.startswith("old") and variant != "old_epoch_order"
                                             or variant == "authors_random_order")
    if variant == "old":
        assert changed == set(DEVIATIONS) and all(getattr(config, k) == v for k, v in DEVIATIONS.items())
    if variant == "authors":
        assert not changed and cfg.train.order == "epoch"


def test_a_few_steps_end_to_end(train_cfg, tmp_path):
    final = run(train_cfg(), run_dir=tmp_path)
    assert final["step"] == 6
    keys = {k for m in metrics(tmp_path) for k in m}
    assert {"train/nll_bits", "valid/nll_bits", "test/nll_bits", "perf/samples_per_s",
            "train/grad_norm", "perf/gen_samples_per_s"} <= keys
    assert 0 < final["test/nll_bits"] < 9  # near log2(256) = 8 bits after 6 steps
    for name in ("last.pt", "best.pt"):
        assert (tmp_path / "checkpoints" / name).is_file()
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.partial"))
    wavs = sorted((tmp_path / "samples").rglob("*.wav"))
    assert [w.parent.name for w in wavs] == ["step_3", "step_6"]
    info = sf.info(wavs[-1])
    assert info.samplerate == 16000 and info.subtype == "PCM_16" and info.frames == 4000
    sidecar = json.loads(wavs[-1].with_suffix(".json").read_text())
    assert sidecar["step"] == 6 and sidecar["temperature"] == 1.0
    assert (wavs[-1].parent / "sample_0_spectrogram.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["tiers"] == 3
    assert not (tmp_path / "wandb").exists()  # logger=none writes no W&B files


def test_resume_after_a_kill_continues_the_same_trajectory(train_cfg, tmp_path, monkeypatch):
    overrides = ("train.max_steps=10", "eval.every=4", "train.log_every=1", "eval.n_samples=0")
    whole = tmp_path / "whole"
    run(train_cfg(*overrides), run_dir=whole)

    # the same run, killed at step 7 (after the step-4 checkpoint, before the next)
    killed = tmp_path / "killed"
    from samplernn import logger as logger_module
    original = logger_module.RunLogger.log

    def dying_log(self, values, step):
        original(self, values, step)
        if step == 7:
            raise KeyboardInterrupt("killed")
    monkeypatch.setattr(logger_module.RunLogger, "log", dying_log)
    with pytest.raises(KeyboardInterrupt):
        run(train_cfg(*overrides), run_dir=killed)
    monkeypatch.setattr(logger_module.RunLogger, "log", original)
    assert json.loads((killed / "summary.json").read_text())["status"] == "interrupted"
    assert torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["step"] == 4

    run(train_cfg(*overrides, "resume=auto"), run_dir=killed)
    assert series(killed, "train/nll_bits") == series(whole, "train/nll_bits")
    assert series(killed, "valid/nll_bits") == series(whole, "valid/nll_bits")
    assert series(killed, "test/nll_bits") == series(whole, "test/nll_bits")


def test_checkpoint_rebuilds_an_identical_model(train_cfg, tmp_path):
    cfg = train_cfg("train.max_steps=3", "eval.n_samples=0")
    run(cfg, run_dir=tmp_path)
    path = tmp_path / "checkpoints" / "last.pt"
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["model_config"]["frame_sizes"] == [2, 8]
    assert raw["run_config"]["train"]["max_steps"] == 3
    model, info = load_checkpoint(path)
    assert info["step"] == 3 and info["sample_rate"] == 16000
    twin = SampleRNN(SampleRNNConfig(**raw["model_config"]))
    twin.load_state_dict(raw["model"])
    codes = torch.randint(0, 256, (2, 8 + 64))
    with torch.no_grad():
        assert torch.equal(model(codes)[0], twin.eval()(codes)[0])


def test_bad_inputs_are_clear_errors(train_cfg, tmp_path):
    with pytest.raises(ValueError, match="multiple of the top frame size 8"):
        run(train_cfg("train.seq_len=60"), run_dir=tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="prepare"):
        run(train_cfg(f"dataset.path={tmp_path / 'missing'}"), run_dir=tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        run(train_cfg(f"resume={tmp_path / 'nope.pt'}"), run_dir=tmp_path / "c")


def test_wandb_offline_run_holds_audio(train_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run(train_cfg("logger=wandb", "train.max_steps=3"), run_dir=tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].rglob("*.wav")), "no audio in the W&B run"
    assert list(runs[0].rglob("*.png")), "no images in the W&B run"
    run_id = runs[0].name.split("-")[-1]
    assert (runs[0] / f"run-{run_id}.wandb").is_file()
    # resuming continues the same W&B run id
    run(train_cfg("logger=wandb", "train.max_steps=5", "resume=auto"), run_dir=tmp_path)
    ids = {r.name.split("-")[-1] for r in (tmp_path / "wandb").glob("offline-run-*")}
    assert ids == {run_id}


def test_exact_nll_does_not_depend_on_batching(tiny_dataset):
    from samplernn.data import PreparedDataset
    from samplernn.evaluate import evaluate_nll
    torch.manual_seed(0)
    model = SampleRNN(SampleRNNConfig(frame_sizes=[2, 8], dim=16, emb_dim=8)).double()
    dataset = PreparedDataset(tiny_dataset)
    cpu = torch.device("cpu")
    a = evaluate_nll(model, dataset, "valid", 1, 64, cpu)
    b = evaluate_nll(model, dataset, "valid", 8, 4096, cpu)
    assert a["n_samples"] == b["n_samples"] == dataset.n_samples("valid")
    assert a["nll_bits"] == pytest.approx(b["nll_bits"], abs=1e-9)


def test_paper_protocol_resets_the_state_every_piece(tiny_dataset, tmp_path):
    """eval.protocol=paper: each chunk_seconds piece of a file (the min-max normalised unit)
    is predicted from the initial state and silence, exactly as a model run on that piece
    alone; the default protocol carries the state through the file instead."""
    from samplernn.audio import pcm16_to_float
    from samplernn.data import PreparedDataset
    from samplernn.evaluate import evaluate_nll
    from samplernn.prepare import prepare
    from samplernn.quantization import nll_bits, quantize, silence_code
    prepare(tiny_dataset.parent / "source", tmp_path / "minmax", valid_fraction=0.25,
            test_fraction=0.25, num_workers=0, normalize="minmax", chunk_seconds=0.5)
    dataset = PreparedDataset(tmp_path / "minmax")
    torch.manual_seed(0)
    model = SampleRNN(SampleRNNConfig(frame_sizes=[2, 8], dim=16, emb_dim=8)).double().eval()
    cpu = torch.device("cpu")
    paper = evaluate_nll(model, dataset, "valid", 3, 1024, cpu, protocol="paper")
    again = evaluate_nll(model, dataset, "valid", 1, 64, cpu, protocol="paper")
    files = evaluate_nll(model, dataset, "valid", 3, 1024, cpu, protocol="files")
    total, count = 0.0, 0
    for f in dataset.files("valid"):
        for a in range(0, f["n_samples"], 8000):                  # pieces of 0.5 s
            wav = pcm16_to_float(dataset.samples[f["offset"] + a:f["offset"] + min(a + 8000, f["n_samples"])])
            codes = quantize(torch.from_numpy(wav))
            pad = (-len(codes)) % 8
            full = torch.cat([torch.full((8,), silence_code()), codes,
                              torch.full((pad,), silence_code())])[None]
            with torch.no_grad():
                logits, _ = model(full)
            mask = torch.arange(full.shape[1] - 8) < len(codes)
            total += float(nll_bits(logits, full[:, 8:], mask[None], reduction="sum"))
            count += len(codes)
    assert paper["n_samples"] == again["n_samples"] == files["n_samples"] == count
    assert paper["nll_bits"] == pytest.approx(total / count, abs=1e-9)
    assert again["nll_bits"] == pytest.approx(paper["nll_bits"], abs=1e-9)
    assert abs(files["nll_bits"] - paper["nll_bits"]) > 1e-4
    assert paper["protocol"] == "paper" and paper["normalize"] == "minmax"


@pytest.mark.slow
def test_multirun_sweep_of_tiers_shares_one_wandb_group(tiny_dataset, tmp_path):
    """python scripts/train.py -m experiment=tiers: 2-, 3- and 4-tier runs in one group."""
    import os
    import subprocess
    import sys
    root = CONFIGS.parent
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(root / "scripts" / "train.py"), "-m", "experiment=tiers",
           "debug=tiny", "logger.mode=offline", f"dataset.path={tiny_dataset}",
           "dataset.builtin=false", "dataset.num_workers=0", "model.dim=16", "model.emb_dim=8",
           "train.max_steps=2", "eval.every=2", "eval.n_samples=1", "eval.sample_seconds=0.05",
           f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in range(3)]
    assert [(s["preset"], s["tiers"], s["status"]) for s in summaries] == [
        ("two_tier", 2, "finished"), ("three_tier", 3, "finished"), ("four_tier", 4, "finished")]
    groups = {s["group"] for s in summaries}
    assert len(groups) == 1 and groups.pop().startswith("tiers-")
    for i in range(3):
        assert list((sweep / str(i) / "wandb").glob("offline-run-*"))


def test_a_run_directory_is_the_run(train_cfg, tmp_path):
    """The same command again finds the run finished and changes nothing; a longer
    train.max_steps continues it; an immutable change, or resume=false, is refused with one
    line before anything is written."""
    from samplernn.errors import ConfigError
    run(train_cfg("train.max_steps=2", "eval.n_samples=0"), run_dir=tmp_path)
    files = lambda: {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    assert run(train_cfg("train.max_steps=2", "eval.n_samples=0"), run_dir=tmp_path)["step"] == 2
    assert files() == before
    with pytest.raises(ConfigError, match=r"model.dim=16 cannot change when resuming .* model.dim=32"):
        run(train_cfg("train.max_steps=3", "eval.n_samples=0", "model.dim=16"), run_dir=tmp_path)
    with pytest.raises(FileExistsError, match="already holds a run"):
        run(train_cfg("train.max_steps=3", "eval.n_samples=0", "resume=false"), run_dir=tmp_path)
    assert files() == before
    first = series(tmp_path, "train/nll_bits")
    final = run(train_cfg("train.max_steps=3", "eval.n_samples=0"), run_dir=tmp_path)
    assert final["step"] == 3
    assert series(tmp_path, "train/nll_bits")[:len(first)] == first and first
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["train"]["max_steps"] == 3 and config["model"]["dim"] == 32


@pytest.mark.parametrize("half", ["bf16", "fp16"])
def test_half_precision_trains_like_fp32(train_cfg, tmp_path, half):
    """bf16 autocast, and fp16 autocast with its gradient scaler, follow the fp32 run of the
    same seed (the loss is in fp32 either way). The authors' init starts above
    log2(256) = 8 bits: its logits have a std of about 1.6."""
    finals = [run(train_cfg(f"precision={p}", "train.max_steps=2", "eval.n_samples=0"),
                  run_dir=tmp_path / p) for p in ("fp32", half)]
    fp32, other = (f["valid/nll_bits"] for f in finals)
    assert 5 < fp32 < 11 and abs(other - fp32) < 0.05, (fp32, other)


def test_fp16_skips_overflowing_steps_and_resumes_at_its_scale(train_cfg, tmp_path,
                                                                monkeypatch):
    """precision=fp16 scales the loss before backward. A step whose scaled gradients
    overflow makes no update, counts in train/skipped_steps as a non-finite step does, and
    halves the scale; the checkpoint holds the scale, so a run trained further goes on
    where it was. Started at 2^24 (torch's default is 2^16), the half-precision gradients
    of the first steps overflow (here the first 6)."""
    import samplernn.train as train_module
    monkeypatch.setattr(train_module, "grad_scaler", lambda device, precision: torch.amp.GradScaler(
        device.type, init_scale=2.0 ** 24, enabled=precision == "fp16"))
    overrides = ("precision=fp16", "train.log_every=1", "eval.every=6", "eval.n_samples=0",
                 "train.max_nonfinite_steps=20")
    whole = tmp_path / "whole"
    final = run(train_cfg(*overrides, "train.max_steps=12"), run_dir=whole)
    skipped = int(series(whole, "train/skipped_steps")[-1][1])
    assert 3 <= skipped < 12 and math.isfinite(final["valid/nll_bits"])
    assert len(series(whole, "train/nll_bits")) == 12 - skipped  # the updates' losses only
    state = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    assert state["scaler"]["scale"] == 2.0 ** (24 - skipped)

    parts = tmp_path / "parts"
    run(train_cfg(*overrides, "train.max_steps=6"), run_dir=parts)
    run(train_cfg(*overrides, "train.max_steps=12"), run_dir=parts)
    for key in ("train/nll_bits", "train/skipped_steps", "valid/nll_bits"):
        assert series(parts, key) == series(whole, key), key
