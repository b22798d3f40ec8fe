"""Runs that survive clusters and mistakes: the real commands as subprocesses.

Bad input: one line `error: ...` naming the key or file, exit status 2, no traceback, nothing
half-written, earlier results intact. Signals: a real training process stops at a step
boundary with a checkpoint, says so in summary.json and resumes on the same trajectory.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from samplernn.train import run

from conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def command(script: str, *args: str, tmp: Path) -> list[str]:
    """A command line of ours, with Hydra's own output kept in tmp."""
    hydra_dir = [] if any(a.startswith("hydra.run.dir=") for a in args) else \
        [f"hydra.run.dir={tmp / 'hydra'}"]
    return [sys.executable, str(ROOT / script), *args, *hydra_dir]


def tiny_train(data: Path, run_dir: Path, *extra: str) -> tuple:
    return ("scripts/train.py", "debug=tiny", "logger=none", f"dataset.path={data}",
            "dataset.builtin=false", f"hydra.run.dir={run_dir}", *extra)


def files(folder: Path) -> dict:
    """Every file's bytes, but Hydra's own record of each launch (.hydra/, its job log)."""
    if not folder.exists():
        return {}
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and ".hydra" not in p.parts and p.suffix != ".log"}


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> Path:
    """A finished tiny run: its checkpoints serve the generate and evaluate cases."""
    run_dir = tmp_path_factory.mktemp("trained")
    cfg = compose_train("debug=tiny", "logger=none", f"dataset.path={tiny_dataset}",
                        "dataset.builtin=false", "dataset.num_workers=0", "eval.n_samples=0")
    run(cfg, run_dir=run_dir)
    return run_dir


# A prepared dataset damaged one way each (tests/test_hazards.py: they stop within seconds,
# workers on) -> the one line's pattern.
DAMAGE = {"truncated samples": r"samples\.npy is not the int16 array of \d+ samples .* truncated|"
                               r"samples\.npy is not the int16 array .*mmap length",
          "random bytes": r"samples\.npy is not the int16 array of \d+ samples",
          "float32 samples": r"samples\.npy holds float32 \(\d+,\), the manifest says int16",
          "offsets past the end": r"file entry 0 \(\S+\) does not lie within samples\.npy",
          "no sample_rate": r"manifest\.json lacks sample_rate",
          "no valid files": r"has no valid files to validate on \(eval\.split=valid\)"}


def damaged_copy(data: Path, out: Path, how: str) -> Path:
    """A copy of the prepared dataset `data`, damaged as `how` says."""
    shutil.copytree(data, out)
    samples, manifest_path = out / "samples.npy", out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if how == "truncated samples":
        os.truncate(samples, samples.stat().st_size // 2)
    elif how == "random bytes":
        samples.write_bytes(np.random.default_rng(0).bytes(samples.stat().st_size))
    elif how == "float32 samples":
        np.save(samples, np.zeros(manifest["n_samples"], np.float32))
    elif how == "offsets past the end":
        manifest["files"][0]["offset"] = manifest["n_samples"]
    elif how == "no sample_rate":
        del manifest["sample_rate"]
    elif how == "no valid files":
        for f in manifest["files"]:
            f["split"] = "train" if f["split"] == "valid" else f["split"]
    elif how == "sample_rate_8000":
        manifest["sample_rate"] = 8000
    manifest_path.write_text(json.dumps(manifest))
    return out


def bad_input_cases(data: Path, ckpt: Path, tmp: Path) -> dict:
    """name -> (command args, the one line's pattern, the folder that must stay as it was)."""
    text = tmp / "notes.txt"
    text.write_text("not audio")
    only_text = tmp / "only_text"
    only_text.mkdir()
    (only_text / "a.txt").write_text("hello")
    fresh = tmp / "fresh"
    damaged = {name: damaged_copy(data, tmp / name, name) for name in DAMAGE}
    rate_8k = damaged_copy(data, tmp / "rate_8k", "sample_rate_8000")
    folder = tmp / "a_folder"
    folder.mkdir()
    return {
        **{f"train {name}": (tiny_train(damaged[name], tmp / f"fresh {name}"), DAMAGE[name],
                             damaged[name]) for name in DAMAGE},  # run folders of their own
        "train run folder is a file": (tiny_train(data, text), r"hydra\.run\.dir=\S+notes\.txt is a "
                                                               r"file", None),
        "train resume by a group": (tiny_train(data, ckpt.parent.parent, "model=quickstart"),
                                    r"model\.dim=128 \(set by model=quickstart\) cannot change",
                                    ckpt.parent.parent),
        "evaluate other sample rate": (("scripts/evaluate.py", f"checkpoint={ckpt}",
                                        f"dataset.path={rate_8k}", f"out={tmp / 'e.json'}"),
                                       r"models 16000 Hz audio and \S+ holds 8000 Hz", tmp / "rate_8k"),
        "evaluate out is a folder": (("scripts/evaluate.py", f"checkpoint={ckpt}", f"out={folder}"),
                                     r"out=\S+a_folder is a folder", ckpt.parent),
        "generate seconds=1e-6": (("scripts/generate.py", f"checkpoint={ckpt}", "seconds=1e-6",
                                   f"out_dir={tmp / 'gen'}"), r"seconds=1e-06 is less than one "
                                                             r"sample at 16000 Hz", tmp / "gen"),
        "generate out_dir is a file": (("scripts/generate.py", f"checkpoint={ckpt}",
                                        f"out_dir={text}"), r"out_dir=\S+notes\.txt is a file", None),
        "prepare chunk_seconds=nan": (("datasets/prepare.py", f"source={only_text}", "chunk_seconds=nan",
                                       f"out_dir={tmp / 'p'}"), r"chunk_seconds=nan must be a finite",
                                      tmp / "p"),
        "prepare silence_db=nan": (("datasets/prepare.py", f"source={only_text}", "silence_db=nan",
                                    f"out_dir={tmp / 'p'}"), r"silence_db=nan must be a finite",
                                   tmp / "p"),
        "train eval.every=0": (tiny_train(data, fresh, "eval.every=0"),
                               r"eval\.every=0 must be at least 1", fresh),
        "train log_every=0": (tiny_train(data, fresh, "train.log_every=0"),
                              r"train\.log_every=0 must be at least 1", fresh),
        "train device=gpu": (tiny_train(data, fresh, "device=gpu"), r"device='gpu' is unknown", fresh),
        "train seed=-1": (tiny_train(data, fresh, "seed=-1"), r"seed=-1 must be at least 0", fresh),
        "train lr=-1": (tiny_train(data, fresh, "optim.lr=-1"), r"optim\.lr=-1\.?0? must be greater", fresh),
        "train frame sizes": (tiny_train(data, fresh, "model.frame_sizes=[3,8]"),
                              r"model\.frame_sizes=\[3, 8\]: 8 is not a multiple of 3", fresh),
        "train no such checkpoint": (tiny_train(data, fresh, "resume=/nope.pt"),
                                     r"resume=/nope\.pt: no such checkpoint", fresh),
        "train dataset typo": (("scripts/train.py", "logger=none", f"dataset.path={tmp / 'dat'}",
                                f"hydra.run.dir={fresh}"),
                               r"dataset\.path=\S+dat holds no prepared dataset; the built-in", tmp / "dat"),
        "train resume changes the model": (tiny_train(data, ckpt.parent.parent, "model.dim=64"),
                                           r"model\.dim=64 cannot change when resuming", ckpt.parent.parent),
        "generate no checkpoint": (("scripts/generate.py", "checkpoint=/nope.pt"),
                                   r"checkpoint /nope\.pt does not exist", None),
        "generate not a checkpoint": (("scripts/generate.py", f"checkpoint={text}"),
                                      r"could not be read .* not a samplernn checkpoint", None),
        "generate temperature=nan": (("scripts/generate.py", f"checkpoint={ckpt}", "temperature=nan",
                                      f"out_dir={tmp / 'gen'}"), r"temperature=nan", tmp / "gen"),
        "generate prime missing": (("scripts/generate.py", f"checkpoint={ckpt}", "prime=nope.wav",
                                    f"out_dir={tmp / 'gen'}"), r"prime=nope\.wav: no such audio file",
                                   tmp / "gen"),
        "evaluate split=dev": (("scripts/evaluate.py", f"checkpoint={ckpt}", "split=dev"),
                               r"split=dev: Invalid value 'dev', expected one of \[train, valid, test\]", ckpt.parent),
        "evaluate unwritable out": (("scripts/evaluate.py", f"checkpoint={ckpt}", f"out={text}/x.json"),
                                    r"Not a directory: \S+notes\.txt/x\.json\.tmp", ckpt.parent),
        "prepare no source": (("datasets/prepare.py", "source=/nope", f"out_dir={tmp / 'p'}"),
                              r"source=/nope does not exist", tmp / "p"),
        "prepare normalize": (("datasets/prepare.py", f"source={only_text}", "normalize=loud",
                               f"out_dir={tmp / 'p'}"),
                              r"normalize=loud: Invalid value 'loud', expected one of \[none, peak, "
                              r"minmax\]", tmp / "p"),
        "prepare no audio": (("datasets/prepare.py", f"source={only_text}", f"out_dir={tmp / 'p'}"),
                             r"no usable audio in \S+only_text: 1 files, all skipped", tmp / "p"),
        "benchmark device=gpu": (("scripts/benchmark.py", "device=gpu"), r"device='gpu' is unknown", None),
    }


@pytest.mark.slow
def test_every_user_error_is_one_line(tiny_dataset, trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.pt"
    cases = bad_input_cases(tiny_dataset, ckpt, tmp_path)
    before = {name: files(keep) for name, (_, _, keep) in cases.items() if keep is not None}

    def attempt(item):
        name, (args, pattern, keep) = item
        done = subprocess.run(command(*args, tmp=tmp_path / re.sub(r"\W", "_", name)), cwd=ROOT,
                              env=ENV, capture_output=True, text=True, timeout=300)
        return name, done

    with ThreadPoolExecutor(3) as pool:
        results = dict(pool.map(attempt, cases.items()))
    for name, (args, pattern, keep) in cases.items():
        done = results[name]
        out = done.stdout + done.stderr
        assert done.returncode == 2, (name, done.returncode, out[-2000:])
        assert "Traceback" not in out, (name, out[-2000:])
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, (name, done.stderr[-2000:])
        assert re.search(pattern, errors[0]), (name, errors[0])
        if keep is not None:
            assert files(keep) == before[name], name  # nothing written, nothing lost
    assert not (tmp_path / "dat").exists()  # a mistyped dataset.path is never synthesised


@pytest.mark.slow
def test_a_mistyped_value_stops_at_composition(tiny_dataset, tmp_path):
    """Types are checked when Hydra composes (samplernn/schema.py): its message, no traceback."""
    done = subprocess.run(command(*tiny_train(tiny_dataset, tmp_path / "run", "train.max_steps=abc"),
                                  tmp=tmp_path), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors == ["error: train.max_steps=abc: Value 'abc' of type 'str' could not be "
                      "converted to Integer"], done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------- signals

def _start(args: tuple, tmp: Path) -> subprocess.Popen:
    """A process in its own group, as a scheduler or a terminal would signal it."""
    return subprocess.Popen(command(*args, tmp=tmp), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.stdout.read()[-3000:]}")
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if any(json.loads(x)["step"] >= step for x in lines if x.strip()):
            return
        time.sleep(0.1)
    raise AssertionError("the run did not reach step %d" % step)


def _steps(run_dir: Path, key: str) -> list:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(m["step"], m[key]) for m in map(json.loads, lines) if key in m]


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, "preempted"), (signal.SIGUSR1, "preempted"),
                                            (signal.SIGUSR2, "preempted"), (signal.SIGINT, "interrupted"),
                                            (signal.SIGHUP, "interrupted")])
def test_a_signal_stops_at_a_step_with_a_checkpoint(tiny_dataset, tmp_path, signum, status):
    """The whole process group gets the signal (data-loading worker included, as from SLURM or
    a terminal); the run finishes its step, writes last.pt there and exits 128 + signal."""
    run_dir = tmp_path / "run"
    args = tiny_train(tiny_dataset, run_dir, "train.max_steps=100000", "eval.every=100000",
                      "train.log_every=1", "dataset.num_workers=1")
    proc = _start(args, tmp_path)
    _wait_for_step(run_dir, 3, proc)
    sent = time.time()
    os.killpg(proc.pid, signum)
    out, _ = proc.communicate(timeout=60)
    assert time.time() - sent < 15, "stopping took too long"
    assert proc.returncode == 128 + signum, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert summary["status"] == status and summary["stopped_by"] == signal.Signals(signum).name
    assert summary["step"] == last["step"] == _steps(run_dir, "train/nll_bits")[-1][0] >= 3


@pytest.mark.slow
def test_a_preempted_run_continues_on_the_same_trajectory(tiny_dataset, tmp_path):
    """SIGTERM mid-run, then the same command again: the metrics equal an uninterrupted run."""
    preempted_and_resumed(tiny_dataset, tmp_path, ("train/nll_bits", "valid/nll_bits",
                                                   "test/nll_bits"))


def preempted_and_resumed(data: Path, tmp_path: Path, keys) -> None:
    """A run on `data` stopped by SIGTERM at step 13 and started again ends with the metrics
    `keys` of a run that never stopped."""
    steps = 30
    whole = tmp_path / "whole"
    run(compose_train("debug=tiny", "logger=none", f"dataset.path={data}",
                      "dataset.builtin=false", "dataset.num_workers=0", f"train.max_steps={steps}",
                      "eval.every=10", "train.log_every=4", "eval.n_samples=0"), run_dir=whole)
    run_dir = tmp_path / "run"
    args = tiny_train(data, run_dir, f"train.max_steps={steps}", "eval.every=10",
                      "train.log_every=4", "eval.n_samples=0", "dataset.num_workers=0")
    proc = _start(args, tmp_path)
    _wait_for_step(run_dir, 13, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert proc.returncode == 143 and stopped["status"] == "preempted" and stopped["step"] < steps
    again = subprocess.run(command(*args, tmp=tmp_path), cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout + again.stderr
    for key in keys:
        assert _steps(run_dir, key) == _steps(whole, key), key
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_one_writer_per_run_directory(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_train(tiny_dataset, run_dir, "train.max_steps=100000", "eval.every=100000",
                      "train.log_every=1", "dataset.num_workers=0")
    proc = _start(args, tmp_path)
    try:
        _wait_for_step(run_dir, 1, proc)
        second = subprocess.run(command(*args, tmp=tmp_path), cwd=ROOT, env=ENV,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"pid {proc.pid} is writing there" in second.stderr
        assert "Traceback" not in second.stderr
        assert proc.poll() is None  # the first is untouched
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "preempted"


@pytest.mark.slow
def test_generate_stopped_by_sigterm_leaves_no_partial_file(trained, tmp_path):
    out_dir = tmp_path / "gen"
    proc = _start(("scripts/generate.py", f"checkpoint={trained / 'checkpoints' / 'last.pt'}",
                   "num_samples=1", "seconds=100000", f"out_dir={out_dir}", "backend=numpy"),
                  tmp_path)
    deadline = time.time() + 120
    while not list(out_dir.glob("*.partial")) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in out, out[-3000:]
    assert "nothing half-written" in out
    assert not list(out_dir.iterdir())


# ---------------------------------------------------------------- non-finite steps

def _cfg(data, *extra):
    return compose_train("debug=tiny", "logger=none", f"dataset.path={data}", "dataset.builtin=false",
                         "dataset.num_workers=0", "eval.n_samples=0", *extra)


def test_a_diverging_run_stops_with_one_line_and_writes_no_checkpoint(tiny_dataset, tmp_path):
    from samplernn.train import Diverged
    with pytest.raises(Diverged, match=r"not finite for 3 steps in a row .* none .* lower optim\.lr"):
        run(_cfg(tiny_dataset, "optim.lr=1e10", "train.max_nonfinite_steps=3", "train.max_steps=20"),
            run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "diverged" in summary["error"]
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def _poison(monkeypatch, bad_calls):
    """The training loss is NaN on the given calls (1-based), as a diverging step's would be."""
    import samplernn.train as train_module
    from samplernn.quantization import nll_bits as real
    calls = [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls[0] in bad_calls else value
    monkeypatch.setattr(train_module, "nll_bits", loss)


def test_non_finite_steps_are_skipped_and_the_last_good_checkpoint_stays(tiny_dataset, tmp_path,
                                                                          monkeypatch):
    from samplernn.train import Diverged
    _poison(monkeypatch, bad_calls=range(5, 100))  # from step 5 on (validation uses its own)
    with pytest.raises(Diverged, match=r"last good checkpoint is \S+last\.pt"):
        run(_cfg(tiny_dataset, "train.max_nonfinite_steps=3", "train.max_steps=20", "eval.every=2",
                 "train.log_every=1"), run_dir=tmp_path)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["step"] == 4 and last["step"] == 6  # skipped steps leave the weights as they were
    assert all(torch.equal(v, best["model"][k]) for k, v in last["model"].items())
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert _steps(tmp_path, "train/skipped_steps")[-1] == (6, 2.0)

    _poison(monkeypatch, bad_calls={2})  # once: that step is skipped and training goes on
    final = run(_cfg(tiny_dataset, "train.max_steps=6", "train.log_every=1"), run_dir=tmp_path / "once")
    assert final["step"] == 6 and _steps(tmp_path / "once", "train/skipped_steps")[-1] == (6, 1.0)
    assert json.loads((tmp_path / "once" / "summary.json").read_text())["status"] == "finished"


def test_a_checkpoint_with_non_finite_weights_is_refused(trained, tmp_path):
    from samplernn.checkpoint import read_checkpoint
    from samplernn.errors import BadFile
    state = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] * float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(BadFile, match="non-finite weights"):
        read_checkpoint(tmp_path / "nan.pt")
    done = subprocess.run(command("scripts/evaluate.py", f"checkpoint={tmp_path / 'nan.pt'}",
                                  tmp=tmp_path), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "non-finite weights" in done.stderr
    assert not list(tmp_path.glob("eval_*"))


# ---------------------------------------------------------------- the run directory

def test_a_cut_metrics_line_does_not_block_resume(tiny_dataset, tmp_path):
    run(_cfg(tiny_dataset, "train.max_steps=4", "eval.every=2"), run_dir=tmp_path)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "train/nll')  # a kill mid-write
    final = run(_cfg(tiny_dataset, "train.max_steps=6", "eval.every=2"), run_dir=tmp_path)
    assert final["step"] == 6
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())


def test_the_checkpoint_records_its_data_absolutely(tiny_dataset, trained, tmp_path):
    """evaluate from another folder finds the run's data; changed data are refused."""
    from samplernn.data import PreparedDataset
    last = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    assert Path(last["dataset"]["path"]).is_absolute()
    assert last["dataset"]["fingerprint"] == PreparedDataset(tiny_dataset).fingerprint
    out = tmp_path / "eval.json"
    done = subprocess.run(command("scripts/evaluate.py", f"checkpoint={trained / 'checkpoints' / 'last.pt'}",
                                  f"out={out}", tmp=tmp_path), cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(out.read_text())["dataset"] == last["dataset"]["path"]


# ---------------------------------------------------------------- prepare

def _tone_file(path: Path, seconds: float = 1.0, subtype: str = "PCM_16", spike: float | None = None):
    t = np.arange(int(16000 * seconds)) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    if spike is not None:
        wav[100] = spike
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, 16000, subtype=subtype)


def test_prepare_visits_each_real_file_once_through_links(tmp_path):
    from samplernn.prepare import prepare
    src = tmp_path / "src"
    for name in ("a/x.wav", "b/y.wav", "z.wav"):
        _tone_file(src / name)
    (src / "self").symlink_to(src)                     # a link to its own folder
    (src / "a" / "to_b").symlink_to(src / "b")         # two links into each other
    (src / "b" / "to_a").symlink_to(src / "a")
    (src / "z_again.wav").symlink_to(src / "z.wav")
    manifest = prepare(src, tmp_path / "out", num_workers=0, min_seconds=0.1,
                       valid_fraction=0.34, test_fraction=0.34)
    assert sorted(f["source"] for f in manifest["files"]) == ["a/x.wav", "b/y.wav", "z.wav"]


def test_prepare_reports_damaged_samples_and_unreadable_folders(tmp_path, monkeypatch):
    from samplernn import prepare as prep
    src = tmp_path / "src"
    for name in ("good1.wav", "good2.wav", "good3.wav", "locked/inside.wav"):
        _tone_file(src / name)
    _tone_file(src / "spike.wav", subtype="FLOAT", spike=1e30)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    prep.prepare(src, tmp_path / "out", num_workers=0, normalize="peak")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    reasons = {s["source"]: s["reason"] for s in report["skipped"]}
    assert reasons == {"spike.wav": "bad_samples", "locked/": "unreadable"}


def test_prepare_on_a_full_disk_says_so_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno
    import shutil

    from samplernn import prepare as prep
    from samplernn.errors import one_line_errors
    src = tmp_path / "src"
    for i in range(3):
        _tone_file(src / f"f{i}.wav")
    out = tmp_path / "data" / "set"
    prep.prepare(src, out, num_workers=0)
    before = files(out)
    _tone_file(src / "f3.wav")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))
    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        prep.prepare(src, out, num_workers=0, overwrite=True)
    assert exit_info.value.code == 2
    assert "No space left on device" in capsys.readouterr().err
    assert files(out) == before                                       # the old dataset stays
    assert sorted(p.name for p in out.parent.iterdir()) == ["set"]   # no partial folder


@pytest.mark.slow
def test_two_prepares_into_one_folder(tmp_path):
    from samplernn.errors import AlreadyExists
    from samplernn.prepare import prepare
    src = tmp_path / "src"
    _tone_file(src / "f.wav")
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from samplernn.lock import DirLock\n"
         f"with DirLock({str(out)!r}, 'prepare', beside=True):\n"
         "    print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyExists, match=f"prepare by pid {holder.pid}"):
            prepare(src, out, num_workers=0)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    prepare(src, out, num_workers=0, valid_fraction=0, test_fraction=0)  # free again


# ---------------------------------------------------------------- a real scheduler's signal

def submitit_local(sweep: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    """A tiny training sweep through hydra-submitit-launcher's local executor."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher is not installed (requirements.txt has it)")
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "hydra/launcher=submitit_local",
         f"hydra.sweep.dir={sweep}", "debug=tiny", "logger=none", f"dataset.path={data}",
         "dataset.builtin=false", *extra],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_submitit_timeout_signal_requeues_and_the_run_continues(tiny_dataset, tmp_path):
    """hydra-submitit-launcher's local executor sends SIGUSR2 30 s before its 1-minute limit;
    the run checkpoints, submitit requeues the job with the same command, and the run
    continues by itself (resume=auto) until its train.max_minutes of training are done."""
    sweep = tmp_path / "sweep"
    done = submitit_local(sweep, tiny_dataset, "hydra.launcher.timeout_min=1",
                          "train.max_steps=10000000", "train.max_minutes=0.6", "eval.every=100000",
                          "train.log_every=20", "eval.n_samples=0")
    run_dir = sweep / "0"
    log = (run_dir / "train.log").read_text()
    assert done.returncode == 0, (done.stderr[-3000:], log[-3000:])
    assert "SIGUSR2: stopped at step" in log and "resuming from" in log, log[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["wall_time_s"] >= 36
    steps = [s for s, _ in _steps(run_dir, "train/nll_bits")]
    assert steps == sorted(set(steps)) and steps[-1] >= 20   # one continuous run, no repeats
