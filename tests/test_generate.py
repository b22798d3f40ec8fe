"""The generate and evaluate commands on a real (tiny) checkpoint."""

import json

import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

import samplernn.evaluate
import samplernn.generation
from samplernn import kernels
from samplernn.audio import write_wav
from samplernn.train import run as train

from conftest import CONFIGS, compose_train


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train("debug=tiny", "logger=none", f"dataset.path={tiny_dataset}",
                        "dataset.builtin=false", "dataset.num_workers=0", "eval.n_samples=0")
    final = train(cfg, run_dir=run_dir)
    return run_dir, final


def compose_cfg(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def test_evaluate_reproduces_the_training_test_nll(trained, tmp_path):
    run_dir, final = trained
    out = tmp_path / "eval.json"
    cfg = compose_cfg("evaluate", f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}",
                      "split=test", f"out={out}", "seq_len=64", "batch_size=1")
    result = samplernn.evaluate.run(cfg)
    assert result["nll_bits"] == pytest.approx(final["test/nll_bits"], abs=1e-5)
    assert json.loads(out.read_text())["n_samples"] == result["n_samples"] > 0
    assert result["n_parameters"] > 0


def test_evaluate_scores_the_weights_as_generation_stores_them(trained, tmp_path):
    """weights=int8: the NLL of the model whose matrices are rounded as the native kernel
    stores them, in a file of its own beside fp32's; close to it, but not it."""
    run_dir, _ = trained
    checkpoint = run_dir / "checkpoints" / "best.pt"
    results = {w: samplernn.evaluate.run(compose_cfg(
        "evaluate", f"checkpoint={checkpoint}", "seq_len=64", f"weights={w}"))
        for w in ("fp32", "int8")}
    assert results["int8"]["weights"] == "int8"
    assert results["int8"]["n_parameters"] == results["fp32"]["n_parameters"]  # the model's
    assert results["int8"]["nll_bits"] == pytest.approx(results["fp32"]["nll_bits"], abs=0.05)
    assert results["int8"]["nll_bits"] != results["fp32"]["nll_bits"]
    assert (checkpoint.parent / "eval_test_best_files_int8_weights.json").exists()
    assert (checkpoint.parent / "eval_test_best_files.json").exists()


def test_the_precision_check_script_measures_the_greedy_codes(trained, capsys):
    """scripts/precision_check.py on a checkpoint: per precision, the kernel's greedy codes
    and the rounded model's argmax on the test audio are the float32 model's but at
    near-ties; the kernel's codes are the rounded model's argmax everywhere."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("precision_check", CONFIGS.parent / "scripts"
                                                  / "precision_check.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run_dir, _ = trained
    script.main([str(run_dir / "checkpoints" / "best.pt"), "--seconds", "0.1"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["precision"], row["positions_from"]) for row in rows] == [
        ("bf16", "greedy"), ("bf16", "real"), ("int8", "greedy"), ("int8", "real")]
    for row in rows:
        assert row["positions"] > 0 and row["differs_from_as_stored"] == 0
        assert row["beyond_tolerance"] == 0 and row["differs_from_fp32"] < 0.05


def test_generate_one_file_set_per_temperature(trained, tmp_path):
    run_dir, _ = trained
    cfg = compose_cfg("generate", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
                      "num_samples=3", "batch_size=2", "seconds=0.3", "temperature=[0.5,1.0]",
                      f"out_dir={tmp_path}", "block_seconds=0.05")
    paths = samplernn.generation.run(cfg)
    names = sorted(p.name for p in paths)
    assert names == [f"t{t}_{k:03d}.wav" for t in ("0.5", "1") for k in range(3)]
    for path in paths:
        info = sf.info(path)
        assert (info.frames, info.samplerate, info.subtype) == (4800, 16000, "PCM_16")
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["seconds"] == pytest.approx(0.3) and sidecar["step"] == 6
    assert not list(tmp_path.glob("*.partial"))


def test_long_output_streams_to_disk_with_the_requested_length(trained, tmp_path):
    run_dir, _ = trained
    cfg = compose_cfg("generate", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
                      "num_samples=1", "seconds=2.0001", "block_seconds=0.1", f"out_dir={tmp_path}")
    (path,) = samplernn.generation.run(cfg)
    wav, rate = sf.read(path)
    assert rate == 16000 and len(wav) == round(2.0001 * 16000)


def test_priming_with_an_audio_file(trained, tmp_path):
    import numpy as np
    run_dir, _ = trained
    prime = write_wav(tmp_path / "prime.wav", 0.3 * np.sin(np.arange(8000) / 5.0), 16000)
    cfg = compose_cfg("generate", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
                      "num_samples=2", "seconds=0.1", f"prime={prime}", "prime_seconds=0.25",
                      f"out_dir={tmp_path / 'out'}")
    paths = samplernn.generation.run(cfg)
    assert len(paths) == 2
    assert json.loads(paths[0].with_suffix(".json").read_text())["prime"] == str(prime)


def test_an_interrupted_generation_leaves_no_file(trained, tmp_path, monkeypatch):
    run_dir, _ = trained
    from samplernn import sampler

    def broken_stream(self, length, block_size=8192):
        yield from ()
        raise KeyboardInterrupt
    monkeypatch.setattr(sampler.Sampler, "stream", broken_stream)
    cfg = compose_cfg("generate", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
                      "num_samples=2", "seconds=0.1", f"out_dir={tmp_path}")
    with pytest.raises(KeyboardInterrupt):
        samplernn.generation.run(cfg)
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoint_and_temperature_are_clear(trained, tmp_path):
    run_dir, _ = trained
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a samplernn checkpoint|could not be read"):
        samplernn.generation.run(compose_cfg("generate", f"checkpoint={bogus}"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        samplernn.generation.run(compose_cfg("generate", f"checkpoint={tmp_path / 'none.pt'}"))
    with pytest.raises(ValueError, match="temperature"):
        samplernn.generation.run(compose_cfg(
            "generate", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", "temperature=-1"))
    with pytest.raises(ValueError, match="persistent=true generates up to 8 streams"):
        samplernn.generation.run(compose_cfg(
            "generate", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", "num_samples=20",
            "persistent=true", f"out_dir={tmp_path / 'out'}"))
    with pytest.raises(ValueError, match="persistent=true is the triton backend's"):
        samplernn.generation.run(compose_cfg(
            "generate", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", "device=cpu",
            "persistent=true", f"out_dir={tmp_path / 'out'}"))
    assert not (tmp_path / "out").exists()  # nothing made for a run that could not start


def test_benchmark_prints_one_json_line_per_case(capsys):
    import samplernn.benchmark
    cfg = compose_cfg("benchmark", "model=tiny", "batch_sizes=[1,2]", "train_steps=1",
                      "warmup_steps=0", "train_seq_len=64", "gen_seconds=0.01", "repeats=2")
    rows = samplernn.benchmark.run(cfg)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert lines == rows and [r["batch_size"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("device", "batch_size", "train_samples_per_s", "gen_samples_per_s_per_stream",
                    "gen_samples_per_s_total", "gen_peak_memory_mb"):
            assert row[key] is not None
        assert row["gen_samples_per_s_total"] == pytest.approx(
            row["gen_samples_per_s_per_stream"] * row["batch_size"])


@pytest.mark.skipif(kernels.triton is None, reason="Triton is not installed")
def test_benchmark_measures_the_triton_persistent_kernel(capsys):
    """backend=triton persistent=true: on the CPU in Triton's interpreter (conftest.py)."""
    import samplernn.benchmark
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = compose_cfg("benchmark", "model=tiny", f"device={device}", "batch_sizes=[2]",
                      "train_steps=0", "gen_seconds=0.002", "repeats=1", "backend=triton",
                      "persistent=true", "graph_samples=16")
    (row,) = samplernn.benchmark.run(cfg)
    assert row["gen_backend"] == "triton" and row["gen_persistent"] is True
    assert row["gen_samples_per_s_per_stream"] > 0


def test_benchmark_measures_training_alone_per_precision_and_compile(capsys):
    """gen_seconds=0: the training figures only, with the precision and compile setting."""
    import samplernn.benchmark
    for precision, compiled in (("bf16", "false"), ("fp32", "true")):
        cfg = compose_cfg("benchmark", "model=tiny", "batch_sizes=[2]", "train_steps=1",
                          "warmup_steps=1", "train_seq_len=64", "gen_seconds=0",
                          f"precision={precision}", f"compile={compiled}")
        (row,) = samplernn.benchmark.run(cfg)
        assert row["precision"] == precision and row["compile"] == (compiled == "true")
        assert row["train_samples_per_s"] > 0 and row["train_peak_memory_mb"] > 0
        assert "gen_samples_per_s_per_stream" not in row
