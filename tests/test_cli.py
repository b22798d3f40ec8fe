"""The commands as a user meets them: typed configs, the installed package, W&B's records."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import CONFIGS, compose_train

ROOT = Path(__file__).resolve().parents[1]


def _compose(name: str, *overrides: str):
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.mark.parametrize("name, override", [
    ("train", "train.max_steps=abc"), ("train", "eval.every=often"), ("train", "model.dim=big"),
    ("train", "train.max_stepz=10"), ("train", "optim.lr=fast"), ("train", "dataset.num_workers=x"),
    ("generate", "num_samples=many"), ("generate", "seconds=long"), ("evaluate", "batch_size=x"),
    ("prepare", "sample_rate=fast"), ("benchmark", "batch_sizes=[a]"),
])
def test_a_wrong_type_or_key_fails_at_composition(name, override):
    with pytest.raises((ConfigCompositionException, ValidationError, ConfigKeyError)):
        _compose(name, override)


def test_every_command_config_composes_typed():
    cfg = compose_train("experiment=quickstart")
    assert isinstance(cfg.train.max_steps, int) and isinstance(cfg.optim.lr, float)
    for name in ("generate", "evaluate", "benchmark"):
        _compose(name, "checkpoint=x.pt") if name != "benchmark" else _compose(name)
    _compose("prepare", "source=a", "name=b")


def _records(path: Path):
    """The protobuf records of a W&B offline run file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending + chunk if kind == 4 else chunk)
            yield record
        pending = chunk if kind == 2 else pending + chunk if kind == 3 else b""


def test_the_wandb_run_is_made_for_comparing_tiers(tiny_dataset, tmp_path):
    """Read back from the offline run file: name, job type, the keys a workspace groups by,
    captioned audio, a table of samples, and NLLs summarised by their minimum."""
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "debug=tiny", "logger=wandb",
         f"dataset.path={tiny_dataset}", "dataset.builtin=false", f"hydra.run.dir={run_dir}",
         "logger.system_metrics=false"],
        cwd=tmp_path, env={**os.environ, "WANDB_MODE": "offline"}, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    run, history, summary, metrics = None, {}, {}, {}
    for record in _records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            history.update({item.key or "/".join(item.nested_key): item.value_json
                            for item in record.history.item})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): item.value_json
                            for item in record.summary.update})
        elif kind == "metric":
            metrics[record.metric.name] = record.metric.summary
    assert run.display_name == "tiny-s1" and run.job_type == "train"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert {"tiers", "preset", "n_parameters", "dataset"} <= set(config)
    assert config["tiers"] == 3 and config["preset"] == "tiny"
    assert history["samples/audio_0/caption"].startswith('"step 6, sample 0, temperature 1')
    assert json.loads(history["samples/table/ncols"]) == 6
    for key in ("train/nll_bits", "valid/nll_bits", "test/nll_bits"):
        assert metrics[key].min
    assert "min" in json.loads(summary["valid/nll_bits"])
    assert f"wandb sync {run_dir}/wandb/offline-run-*-{run.run_id}" in done.stdout


def test_the_wandb_report_shows_the_tiers_of_one_group(tmp_path):
    """The report is built offline (saving it needs W&B's servers): one grid over the group's
    runs, grouped by the `tiers` config key the runs carry, with docs/wandb.md's panels."""
    from samplernn.wandb_report import build_report
    report = build_report("lab", "samplernn", "tiers-2026-11-27-12-00-00")
    assert (report.entity, report.project) == ("lab", "samplernn")
    (grid,) = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    (runs,) = grid.runsets
    assert runs.filters == "Group = 'tiers-2026-11-27-12-00-00'" and runs.groupby == ["config.tiers"]
    lines = {p.y[0]: p for p in grid.panels if type(p).__name__ == "LinePlot"}
    assert {"valid/nll_bits", "train/nll_bits", "perf/samples_per_s"} <= set(lines)
    for plot in lines.values():  # the keys the logger writes, grouped by tier count
        assert plot.x == "trainer/step" and plot.groupby.name == "tiers"
    (bar,) = [p for p in grid.panels if type(p).__name__ == "BarPlot"]
    assert bar.metrics[0].name == "test/nll_bits" and bar.groupby.name == "tiers"
    kinds = {type(p).__name__ for p in grid.panels}
    assert {"ScatterPlot", "MediaBrowser", "WeavePanelSummaryTable", "RunComparer"} <= kinds


def test_the_wandb_report_without_a_login_is_one_line(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path), "WANDB_API_KEY": ""}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "wandb_report.py"), "--entity",
                           "lab", "--project", "samplernn", "--group", "g"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: the report could not be saved")
    assert "Traceback" not in done.stderr


def test_prepare_draws_no_bar_into_a_log(tmp_path):
    import numpy as np
    import soundfile as sf
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        sf.write(src / f"f{i}.wav", np.zeros(16000, np.float32) + 0.1 * (i + 1), 16000)
    done = subprocess.run([sys.executable, str(ROOT / "datasets" / "prepare.py"), f"source={src}",
                           f"out_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'h'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "decoding" not in done.stderr and "%|" not in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SAMPLERNN_SLOW") != "1",
                    reason="about a minute: set SAMPLERNN_SLOW=1 (CI sets it)")
def test_the_installed_wheel_works_without_the_repository(tmp_path):
    """pip install of a built wheel into a fresh venv; its console scripts, from another
    folder: train the tiny model on the built-in data, then generate from its checkpoint."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # the dependencies (torch, hydra, ...) come from this environment, not a download
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    [wheel] = list(wheels.glob("samplernn-*.whl"))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": ""}
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import samplernn, samplernn.cli; print(samplernn.__file__); "
                            "print(samplernn.cli.CONFIG_DIR)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True)
    package, configs = where.stdout.split()
    assert package.startswith(str(venv)) and configs.startswith(str(venv))
    train = subprocess.run([str(venv / "bin" / "samplernn-train"), "debug=tiny", "logger=none",
                            "hydra.run.dir=runs/tiny"], cwd=work, env=env, capture_output=True,
                           text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (work / "data" / "default" / "manifest.json").is_file()     # built where it ran
    assert "samplernn-generate checkpoint=" in train.stdout             # hints in its own words
    generate = subprocess.run([str(venv / "bin" / "samplernn-generate"),
                               "checkpoint=runs/tiny/checkpoints/best.pt", "num_samples=1",
                               "seconds=0.5", "out_dir=generated"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
    assert generate.returncode == 0, generate.stderr[-3000:]
    assert len(list((work / "generated").glob("*.wav"))) == 1
    listen = subprocess.run([str(venv / "bin" / "samplernn-listen"), "build",
                             "conditions=[runs/tiny,generated]", "test=tests/ab", "n_items=1",
                             "seconds=0.5"], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)  # a listening test: the page's code ships too
    assert listen.returncode == 0, listen.stderr[-3000:]
    assert "samplernn-listen serve tests/ab" in listen.stdout
    module = subprocess.run([str(venv / "bin" / "python"), "-m", "samplernn.evaluate",
                             "checkpoint=runs/tiny/checkpoints/best.pt", "hydra.run.dir=ev"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert module.returncode == 0 and '"nll_bits"' in module.stdout, module.stderr[-3000:]
    assert not list(Path(package).parent.rglob("*.pt")) and not (Path(package).parent / "data").exists()

    # one's own data: prepared by name, trained from a preset of one's own (--config-dir)
    import numpy as np
    import soundfile as sf
    (work / "audio").mkdir()
    for i in range(5):
        sf.write(work / "audio" / f"{i}.wav", np.sin(np.arange(16000) * (0.05 + 0.01 * i)) * 0.3,
                 16000)
    prep = subprocess.run([str(venv / "bin" / "samplernn-prepare"), "source=audio", "name=mine",
                           "valid_fraction=0.2", "test_fraction=0.2"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-3000:]
    assert "samplernn-train dataset.path=data/mine" in prep.stdout, prep.stdout
    (work / "conf" / "dataset").mkdir(parents=True)
    (work / "conf" / "dataset" / "mine.yaml").write_text(
        "name: mine\npath: data/mine\nsegment_seconds: 8.0\nnum_workers: 0\nbuiltin: false\n")
    mine = subprocess.run([str(venv / "bin" / "samplernn-train"), "--config-dir", "conf",
                           "dataset=mine", "debug=tiny", "logger=none", "train.max_steps=2",
                           "eval.n_samples=0", "hydra.run.dir=runs/mine"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert mine.returncode == 0, mine.stderr[-3000:]
    config = (work / "runs" / "mine" / "config.yaml").read_text()
    assert "name: mine" in config and "builtin: false" in config

    # the first mistake, and help, in the installed commands' own words
    bare = subprocess.run([str(venv / "bin" / "samplernn-generate")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and bare.stderr.strip() == (  # runnable: the venv is not on PATH
        f"error: say which model: {venv / 'bin' / 'samplernn-generate'} "
        "checkpoint=<run dir>/checkpoints/best.pt")
    helped = subprocess.run([str(venv / "bin" / "samplernn-train"), "--help"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "samplernn-train -sc install=bash" in helped.stdout
