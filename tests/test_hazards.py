"""What a run meets besides its own mistakes: damaged data, data replaced under it, commands
that race, sweeps with failing jobs, signals to prepare, runs that died. The real commands as
subprocesses where a process is what matters, each bounded in time so that a regression
fails instead of hanging.
"""

import json
import os
import re
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

from samplernn.prepare import prepare
from samplernn.rundir import read_run
from samplernn.train import run

from conftest import compose_train
from test_reliability import (DAMAGE, ENV, ROOT, _start, _wait_for_step, command, damaged_copy,
                              files, tiny_train)


def _run(args: tuple, tmp: Path, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args, tmp=tmp), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout, **kw)


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process (zombies left out)."""
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[:2]
        except OSError:
            continue
        if state != "Z":
            table[int(pid)] = (int(ppid), line[:200])
    return table


def _processes_of(marker: str) -> list[str]:
    """Command lines of the live processes that mention marker."""
    return [f"{pid}: {line}" for pid, (_, line) in _process_table().items() if marker in line]


def _descendants(pid: int) -> set[int]:
    table, found, todo = _process_table(), set(), [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, (ppid, _) in table.items() if ppid == parent]
        found.update(children)
        todo += children
    return found


# ---------------------------------------------------------------- damaged data

@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated samples", "random bytes", "offsets past the end"])
def test_damaged_data_is_one_line_within_seconds_with_workers_on(tiny_dataset, tmp_path, how):
    """A damaged samples.npy or manifest is found when the dataset is opened, before any
    data-loading worker starts: one line, exit 2, and the process ends (it once printed the
    error and then waited forever for a worker that ignored SIGTERM)."""
    data = damaged_copy(tiny_dataset, tmp_path / "data", how)
    t0 = time.time()
    done = _run(tiny_train(data, tmp_path / "run", "dataset.num_workers=2"), tmp_path, timeout=60)
    assert time.time() - t0 < 45
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert re.search(DAMAGE[how], done.stderr.strip().splitlines()[-1]), done.stderr[-2000:]


@pytest.mark.slow
def test_a_killed_data_worker_is_one_line_and_leaves_no_process(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(tiny_train(tiny_dataset, run_dir, "train.max_steps=100000", "eval.every=100000",
                             "train.log_every=1", "dataset.num_workers=1"), tmp_path)
    try:
        _wait_for_step(run_dir, 2, proc)
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                   .read_text().split()]
        assert workers, "no data-loading worker"
        os.kill(workers[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2 and "Traceback" not in out, out[-3000:]
    assert "error: a data-loading worker process died" in out
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert not _processes_of(str(run_dir))


# ---------------------------------------------------------------- data replaced under a run

@pytest.mark.slow
def test_prepare_refuses_to_replace_the_data_a_run_reads(tmp_path):
    """prepare overwrite=true into a dataset a run trains on is refused, naming the run: the
    run would otherwise train on the old data and validate and test on the new."""
    from samplernn.synth import synthesize
    synthesize(tmp_path / "source", n_files=6, seconds=1.0, seed=1)
    data = tmp_path / "data"
    prepare(tmp_path / "source", data, valid_fraction=0.2, test_fraction=0.2, num_workers=0)
    before = files(data)
    run_dir = tmp_path / "run"
    proc = _start(tiny_train(data, run_dir, "train.max_steps=100000", "eval.every=100000",
                             "dataset.num_workers=0"), tmp_path)
    try:
        _wait_for_step(run_dir, 2, proc)
        again = _run(("datasets/prepare.py", f"source={tmp_path / 'source'}", f"out_dir={data}",
                      "normalize=peak", "overwrite=true", "num_workers=0"), tmp_path / "p")
        assert again.returncode == 2 and "Traceback" not in again.stderr
        assert f"is in use: training {run_dir} (pid {proc.pid}) reads it" in again.stderr
        assert {p: v for p, v in files(data).items() if ".in_use" not in p.parts} == before
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    assert not (data / ".in_use").exists()  # the run's mark goes with it
    done = _run(("datasets/prepare.py", f"source={tmp_path / 'source'}", f"out_dir={data}",
                 "normalize=peak", "overwrite=true", "num_workers=0"), tmp_path / "p")
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------- commands that race

@pytest.mark.slow
def test_two_generates_started_together_write_their_own_folders(tiny_dataset, tmp_path):
    """Started in the same second, two generates get two folders (their default, named by
    the time), and each file's sidecar describes that file."""
    run_dir = tmp_path / "run"
    run(compose_train("debug=tiny", "logger=none", f"dataset.path={tiny_dataset}",
                      "dataset.builtin=false", "dataset.num_workers=0", "eval.n_samples=0"),
        run_dir=run_dir)
    ckpt = run_dir / "checkpoints" / "last.pt"

    def generate(seed: int) -> subprocess.CompletedProcess:
        return _run(("scripts/generate.py", f"checkpoint={ckpt}", f"seed={seed}",
                     "num_samples=1", "seconds=0.5"), tmp_path / f"h{seed}")

    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(generate, (1, 100)))
    assert all(d.returncode == 0 for d in both), [d.stderr[-2000:] for d in both]
    folders = sorted((run_dir / "generated").iterdir())
    assert len(folders) == 2
    wavs = {}
    for folder in folders:
        (wav,) = folder.glob("*.wav")
        wavs[json.loads(wav.with_suffix(".json").read_text())["seed"]] = sf.read(wav)[0]
    assert sorted(wavs) == [1, 100]
    alone = generate(1)
    (latest,) = set((run_dir / "generated").iterdir()) - set(folders)
    assert np.array_equal(sf.read(next(latest.glob("*.wav")))[0], wavs[1]), alone.stderr


# ---------------------------------------------------------------- sweeps

@pytest.mark.slow
def test_a_sweep_runs_every_job_and_names_the_failed_ones(tiny_dataset, tmp_path):
    """A bad job (seed=-1) and a diverging one (optim.lr=1e10) fail alone: the other jobs run,
    each failed run says so in its summary, the sweep ends with a line per failed job and
    exits 1."""
    sweep = tmp_path / "sweep"
    done = _run(("scripts/train.py", "-m", "debug=tiny", "logger=none",
                 f"dataset.path={tiny_dataset}", "dataset.builtin=false", "dataset.num_workers=0",
                 "eval.n_samples=0", "train.max_nonfinite_steps=2", "seed=1,-1",
                 "optim.lr=1e10,1e-3", f"hydra.sweep.dir={sweep}"), tmp_path, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    tail = done.stderr[done.stderr.index("error: 3 of 4 jobs of the sweep failed:"):]
    assert "seed=-1 must be at least 0" in tail and "training diverged" in tail
    statuses = {}
    for job in sorted(sweep.iterdir()):
        if job.is_dir():
            statuses[job.name] = json.loads((job / "summary.json").read_text())["status"]
    assert sorted(statuses.values()) == ["failed", "failed", "failed", "finished"], statuses


# ---------------------------------------------------------------- dead runs

@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_not_listed_as_running(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(tiny_train(tiny_dataset, run_dir, "train.max_steps=100000", "eval.every=100000",
                             "dataset.num_workers=0"), tmp_path)
    _wait_for_step(run_dir, 2, proc)
    assert read_run(run_dir).status == "running"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    assert read_run(run_dir).status.startswith("died")


def test_a_checkpoint_that_cannot_be_written_fails_the_run_with_one_line(tiny_dataset, tmp_path,
                                                                        monkeypatch):
    """A full disk at a checkpoint: an OSError naming last.pt (one line from the command), the
    summary says failed, no half-written file (.tmp) is left."""
    import samplernn.checkpoint as checkpoint_module

    def full(obj, f):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage",
                        lambda path: type("usage", (), {"free": 0})())
    with pytest.raises(OSError, match=r"No space left on device") as caught:
        run(compose_train("debug=tiny", "logger=none", f"dataset.path={tiny_dataset}",
                          "dataset.builtin=false", "dataset.num_workers=0", "eval.n_samples=0"),
            run_dir=tmp_path)
    assert caught.value.filename == str(tmp_path / "checkpoints" / "last.pt")
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_full_disk_while_generating_is_one_line(tiny_dataset, tmp_path, monkeypatch):
    import samplernn.audio as audio
    import samplernn.generation
    from test_generate import compose_cfg
    run(compose_train("debug=tiny", "logger=none", f"dataset.path={tiny_dataset}",
                      "dataset.builtin=false", "dataset.num_workers=0", "eval.n_samples=0"),
        run_dir=tmp_path / "run")

    def full(self, data):
        raise sf.LibsndfileError(2, "System error")  # libsndfile's words for ENOSPC
    monkeypatch.setattr(audio.sf.SoundFile, "write", full)
    monkeypatch.setattr(audio.shutil, "disk_usage", lambda path: type("usage", (), {"free": 0})())
    out = tmp_path / "gen"
    with pytest.raises(audio.WriteError, match=r"could not write \S+t1_000\.wav .* the disk is full"):
        samplernn.generation.run(compose_cfg(
            "generate", f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}",
            "seconds=0.2", f"out_dir={out}"))
    assert not list(out.glob("*.partial"))


# ---------------------------------------------------------------- prepare and signals

def _slow_source(folder: Path) -> Path:
    """Audio that keeps two decoding workers busy for several seconds: 12 minutes at 44.1 kHz
    to resample (64 MB)."""
    folder.mkdir()
    noise = (0.1 * np.random.default_rng(0).standard_normal(44100 * 60)).astype(np.float32)
    for i in range(12):
        sf.write(folder / f"f{i:02d}.wav", np.roll(noise, i), 44100, subtype="PCM_16")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_prepare_stopped_by_a_signal_leaves_no_process_and_the_old_data(tmp_path, signum):
    """SIGTERM and SIGINT: one line, the previous dataset as it was, the partial folder gone.
    SIGKILL: nothing can run, but no process of it stays (its decoding workers end with it)."""
    source = _slow_source(tmp_path / "source")
    data = tmp_path / "data"
    small = tmp_path / "small"
    small.mkdir()
    sf.write(small / "a.wav", np.zeros(16000, np.float32) + 0.1, 16000)
    for name in "bcd":
        sf.write(small / f"{name}.wav", np.zeros(16000, np.float32) + 0.1, 16000)
    prepare(small, data, num_workers=0, valid_fraction=0.25, test_fraction=0.25)
    before = files(data)
    args = ("datasets/prepare.py", f"source={source}", f"out_dir={data}", "overwrite=true",
            "num_workers=2")
    proc = subprocess.Popen(command(*args, tmp=tmp_path / "h"), cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,  # a terminal's Ctrl-C: SIGINT as it comes
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 60  # until the forkserver, its 2 workers and the tracker run
        while len(helpers := _descendants(proc.pid)) < 4 and time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-2000:]
            time.sleep(0.05)
        assert len(helpers) >= 4 and list(tmp_path.glob(".data.partial-*")), _process_table()
        os.kill(proc.pid, signum)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == (-signum if signum == signal.SIGKILL else 128 + signum), out
    deadline = time.time() + 10  # the workers notice within a second
    while helpers & set(_process_table()) and time.time() < deadline:
        time.sleep(0.2)
    assert not helpers & set(_process_table()), {p: _process_table().get(p) for p in helpers}
    assert {p: v for p, v in files(data).items()} == before
    if signum != signal.SIGKILL:
        assert "Traceback" not in out and out.strip().splitlines()[-1] == (
            f"stopped by {signal.Signals(signum).name}: nothing was written, {data} is as it was")
        assert not list(tmp_path.glob(".data.partial-*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_held_act_at_the_end_of_the_block_as_they_would_have(signum):
    """Inside `signals_held` a stop signal waits (the block runs to its end); at the end it acts
    as the handler in place says: Stopped under abort_on_signals, KeyboardInterrupt for SIGINT.
    Handlers are as they were afterwards."""
    from samplernn.interrupt import Stopped, abort_on_signals, signals_held
    before = signal.getsignal(signum)
    ran = []
    with pytest.raises(KeyboardInterrupt if signum == signal.SIGINT else Stopped) as stop:
        with abort_on_signals(), signals_held():
            os.kill(os.getpid(), signum)
            ran.append("the rest of the block")
    assert ran == ["the rest of the block"] and signal.getsignal(signum) == before
    if signum != signal.SIGINT:
        assert stop.value.signum == signum
    with abort_on_signals(), signals_held():
        ran.append("no signal, nothing raised")


@pytest.mark.slow
def test_a_stop_while_a_worker_starts_lands_once_the_pool_can_end_it(tmp_path, monkeypatch):
    """SIGTERM just after the forkserver has forked a decoding worker, before the pool has it in
    its list (the race seen once under load): the signal is held until the worker is the pool's,
    then prepare stops and ends it. Before, the half-started worker was nobody's: it stayed
    while prepare lived and printed a traceback when prepare ended."""
    import multiprocessing.forkserver as forkserver
    from samplernn.interrupt import Stopped, abort_on_signals
    source = tmp_path / "source"
    source.mkdir()
    for name in "abcd":
        sf.write(source / f"{name}.wav", np.zeros(16000, np.float32) + 0.1, 16000)
    connect = forkserver.connect_to_new_process
    forked: set[int] = set()

    def workers() -> set[int]:
        server = forkserver._forkserver._forkserver_pid   # None until the first worker is asked for
        return _descendants(server) if server else set()

    def fork_then_stop(fds):
        before = workers()
        sentinel, w = connect(fds)
        if not forked:                # the first worker: stop once the forkserver has forked it
            deadline = time.time() + 30
            while not (new := workers() - before) and time.time() < deadline:
                time.sleep(0.01)
            forked.update(new)
            os.kill(os.getpid(), signal.SIGTERM)
        return sentinel, w
    monkeypatch.setattr(forkserver, "connect_to_new_process", fork_then_stop)
    with pytest.raises(Stopped) as stop, abort_on_signals():
        prepare(source, tmp_path / "data", num_workers=2, valid_fraction=0.25, test_fraction=0.25)
    assert stop.value.signum == signal.SIGTERM and forked
    deadline = time.time() + 10
    while (left := forked & set(_process_table())) and time.time() < deadline:
        time.sleep(0.1)
    assert not left, {p: _process_table().get(p) for p in left}
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob(".data.partial-*"))


# ---------------------------------------------------------------- audio patched silently

def test_damaged_and_out_of_range_audio_is_reported(tmp_path):
    """NaN or infinite values: the file is skipped as bad_samples (they were turned into 0 and
    +-1 without a word). Values beyond +-1: clipped before normalising (one outlier of 500
    divided the whole file by 500 under normalize=peak), and reported."""
    source = tmp_path / "source"
    source.mkdir()
    tone = (0.3 * np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000)).astype(np.float32)
    for name, index, value in (("nan", 100, np.nan), ("inf", 200, -np.inf), ("outlier", 300, 500.0),
                               ("ok1", 0, 0.3), ("ok2", 0, 0.3), ("ok3", 0, 0.3)):
        x = tone.copy()
        x[index] = value
        sf.write(source / f"{name}.wav", x, 16000, subtype="FLOAT")
    manifest = prepare(source, tmp_path / "data", normalize="peak", num_workers=0,
                       valid_fraction=0.2, test_fraction=0.2)
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    assert {r["source"]: r["reason"] for r in report["skipped"]} == {"nan.wav": "bad_samples",
                                                                     "inf.wav": "bad_samples"}
    assert report["clipped"] == [{"source": "outlier.wav", "clipped": 1, "peak": 500.0}]
    samples = np.load(tmp_path / "data" / "samples.npy")
    for f in manifest["files"]:
        x = samples[f["offset"]:f["offset"] + f["n_samples"]] / 32768
        assert np.abs(x).max() > 0.98  # every file at its level, the outlier's too
    outlier = next(f for f in manifest["files"] if f["source"] == "outlier.wav")
    x = samples[outlier["offset"]:outlier["offset"] + outlier["n_samples"]] / 32768
    assert np.median(np.abs(x)) > 0.1 and outlier["clipped"] == 1


# ---------------------------------------------------------------- resuming and the run's record

@pytest.mark.slow
def test_a_resume_keeps_what_the_command_does_not_name_and_its_record(tiny_dataset, tmp_path):
    """A run started with seed=2 resumes under a command that does not name the seed (it
    once refused: `seed=1 cannot change`); a refused resume leaves .hydra/ as it was."""
    run_dir = tmp_path / "run"
    first = _run(tiny_train(tiny_dataset, run_dir, "seed=2", "eval.n_samples=0",
                            "dataset.num_workers=0"), tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    record = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    refused = _run(tiny_train(tiny_dataset, run_dir, "model.dim=16", "train.max_steps=8"),
                   tmp_path)
    assert refused.returncode == 2 and "model.dim=16 cannot change" in refused.stderr
    assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == record
    again = _run(tiny_train(tiny_dataset, run_dir, "train.max_steps=8", "eval.n_samples=0",
                            "dataset.num_workers=0"), tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "seed: 2" in (run_dir / "config.yaml").read_text()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 8
    assert "train.max_steps=8" in (run_dir / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_compare_that_cannot_write_its_report_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text('{"status": "finished"}')
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"),
                           str(tmp_path / "run"),
                           f"out={blocker}/report.html"], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"compare.py: error: could not write {blocker}/report.html" in done.stderr
