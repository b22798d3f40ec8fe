"""Data-parallel training with torch.distributed: real process groups (gloo on the CPU).

Two processes, started by torchrun or as SLURM tasks would be, follow the single-process
run's trajectory, write one run directory, checkpoint every row's state, stop together on a
signal and resume with any number of processes; exact evaluation split between processes
gives the one-process NLL.
"""

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samplernn.data import EvalStream, PreparedDataset, TrainStream
from samplernn.distributed import World, environment, first_host

from test_reliability import ENV, ROOT, _steps, _wait_for_step, command, submitit_local, tiny_train

# Float tolerance between a 2-process and a 1-process run: the gradients are the same sums
# added in another order (each process's rows, then the all-reduce), so they differ in the
# last bits and Adam carries that through the steps. Measured: at most 7e-7 bits over 120
# steps of the tiny model (2-core VM, gloo); 1e-4 leaves room for other CPUs' kernels while
# anything really wrong (a row split, a missing average, a lost state) moves the loss by 1e-2
# and more.
TOL = 1e-4
STEPS = ("train.max_steps=120", "train.batch_size=4", "eval.every=40", "train.log_every=4",
         "eval.n_samples=0", "dataset.num_workers=0")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int, *args: str, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}",
            "--master_addr=127.0.0.1", f"--master_port={_port()}", *command(*args, tmp=tmp)[1:]]


def slurm_tasks(n: int, *args: str, tmp: Path) -> list[subprocess.Popen]:
    """n tasks as srun (or hydra-submitit-launcher) starts them: SLURM's variables (the
    rendezvous port, which a cluster derives from the job id, is given: a free one)."""
    procs = []
    port = str(_port())
    for rank in range(n):
        env = {k: v for k, v in ENV.items() if not k.startswith(("MASTER_", "SLURM_"))}
        env.update(SLURM_PROCID=str(rank), SLURM_NTASKS=str(n), SLURM_STEP_NUM_TASKS=str(n),
                   SLURM_LOCALID=str(rank), SLURM_STEP_NODELIST="localhost",
                   SLURM_JOB_ID="4242", MASTER_PORT=port)
        procs.append(subprocess.Popen(command(*args, tmp=tmp), cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _close(a: list, b: list) -> None:
    assert [s for s, _ in a] == [s for s, _ in b]
    assert np.allclose([v for _, v in a], [v for _, v in b], rtol=0, atol=TOL), (a, b)


# -- the launch environment -------------------------------------------------------------

def test_the_process_group_comes_from_torchrun_or_slurm():
    assert environment({}) is None
    assert environment({"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process: no group
    assert environment({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
                        "MASTER_PORT": "29400"}) == dict(rank=1, size=4, local_rank=1,
                                                         addr="n1", port=29400)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8",
             "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "gpu[07-09,12]", "SLURM_JOB_ID": "123456"}
    assert environment(slurm) == dict(rank=5, size=8, local_rank=1, addr="gpu07", port=23456)
    assert environment({**slurm, "MASTER_ADDR": "head", "MASTER_PORT": "1234"})["addr"] == "head"
    assert environment({**slurm, "SLURM_STEP_NUM_TASKS": "1"}) is None  # a one-task step
    # python run by the batch script of a 4-task allocation, not by srun: one process
    assert environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}) is None
    local = {"SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_NTASKS": "2",
             "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_LOCAL_JOB_ID": "41234"}
    assert environment(local) == dict(rank=1, size=2, local_rank=1, addr="127.0.0.1", port=21234)
    assert first_host("node3") == "node3"
    assert first_host("a[1-2],b5") == "a1"
    assert first_host("x-[010,020]") == "x-010"


def test_a_batch_that_does_not_split_is_refused():
    with pytest.raises(Exception, match="train.batch_size=6 does not split between 4 processes"):
        World(rank=0, size=4).rows(6)
    assert [World(r, 4).rows(8) for r in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]


# -- the data a process reads ---------------------------------------------------------------

@pytest.mark.parametrize("order", ["epoch", "random"])
def test_each_process_reads_its_rows_of_the_global_batch(tiny_dataset, order):
    data = PreparedDataset(tiny_dataset)
    whole = TrainStream(data, 4, 64, 8, 2000, seed=5, order=order)
    parts = [TrainStream(data, 4, 64, 8, 2000, seed=5, order=order, rows=rows, start_step=30)
             for rows in [(0, 2), (2, 4)]]
    streams = [iter(p) for p in parts]
    for k in range(30, 90):  # past segment ends: rows reset independently
        full, halves = whole.batch_at(k), [next(s) for s in streams]
        for field in ("codes", "reset", "mask"):
            joined = torch.cat([getattr(h, field) for h in halves])
            assert torch.equal(joined, getattr(full, field)), (k, field)


def test_evaluation_shards_cover_the_split_once(tiny_dataset):
    data = PreparedDataset(tiny_dataset)
    whole = EvalStream(data, "valid", 2, 256, 8, piece_samples=4000)
    shards = [EvalStream(data, "valid", 2, 256, 8, piece_samples=4000, shard=(i, 3)) for i in range(3)]
    assert sum(s.n_targets for s in shards) == whole.n_targets
    assert sorted(r for s in shards for r in s.runs) == sorted(whole.runs)


# -- real process groups ------------------------------------------------------------------

@pytest.fixture(scope="module")
def single(tiny_dataset, tmp_path_factory) -> Path:
    """The reference: one process, the same global batch and seed."""
    tmp = tmp_path_factory.mktemp("single")
    done = subprocess.run(command(*tiny_train(tiny_dataset, tmp / "run", *STEPS), tmp=tmp),
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp / "run"


@pytest.mark.slow
def test_two_processes_follow_the_single_process_run(tiny_dataset, single, tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(torchrun(2, *tiny_train(tiny_dataset, run_dir, *STEPS), tmp=tmp_path),
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for key in ("train/nll_bits", "valid/nll_bits", "test/nll_bits"):
        _close(_steps(run_dir, key), _steps(single, key))
    # one writer: each step's line once, one log, the summary says how many processes
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len([s for s in steps if s == 4]) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["processes"] == 2
    assert (run_dir / "train.log").read_text().count("model tiny") == 1
    # the checkpoint holds every row's state: resume with any number of processes
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert all(h.shape[1] == 4 for h in last["hidden"])
    reference = torch.load(single / "checkpoints" / "last.pt", weights_only=True)
    for mine, theirs in zip(last["hidden"], reference["hidden"]):
        assert torch.allclose(mine, theirs, atol=1e-3)


@pytest.mark.slow
def test_a_two_process_run_resumes_in_one_process_on_the_same_trajectory(tiny_dataset, single,
                                                                         tmp_path):
    """Stopped by a signal to one task only (as SLURM's tasks launched by srun): both stop at
    the same step; the run then continues in one process and ends where the single run did."""
    run_dir = tmp_path / "run"
    args = tiny_train(tiny_dataset, run_dir, *STEPS)
    procs = slurm_tasks(2, *args, tmp=tmp_path)
    try:
        _wait_for_step(run_dir, 10, procs[0])
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [143, 143], outs
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert stopped["status"] == "preempted" and stopped["stopped_by"] == "SIGTERM"
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == stopped["step"] < 120 and all(h.shape[1] == 4 for h in last["hidden"])
    again = subprocess.run(command(*args, tmp=tmp_path), cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for key in ("train/nll_bits", "valid/nll_bits", "test/nll_bits"):
        _close(_steps(run_dir, key), _steps(single, key))


HANDED = r'''
import torch
import torch.distributed as dist
from samplernn import distributed

handed = []  # every tensor the collectives hand gloo
real_all_reduce, real_all_gather = dist.all_reduce, dist.all_gather
dist.all_reduce = lambda t, **kw: real_all_reduce(handed.append(t) or t, **kw)
dist.all_gather = lambda parts, t, **kw: real_all_gather(handed.extend([*parts, t]) or parts, t, **kw)
held = calls = 0
torch.set_num_threads(1)
with distributed.process_group("cpu") as world:
    for _ in range(200):
        world.sum(1.0, 2.0)
        world.max(3.0)
        world.gather_rows([torch.randn(1, 2, 8), torch.randn(1, 2, 8)])
        held += sum(t._use_count() > 1 for t in handed)
        calls += len(handed)
        handed.clear()
print("held", held, "of", calls, flush=True)
'''


@pytest.mark.slow
def test_a_collective_returns_once_gloo_has_let_go_of_its_tensors(tmp_path):
    """A gloo collective returns with its result while its worker thread may still hold the
    tensors (1 call in 6, for up to 3 ms). A worker that drops the last reference to a
    Python tensor needs the GIL: after a process's last collective, with the interpreter
    already exiting, that aborted the process (SIGABRT, "terminate called without an active
    exception"; once in 15 runs of the two-task signal test on a loaded machine), and a
    DDP-held group's threads outlive destroy_process_group. So World's collectives return
    only once gloo holds none of their tensors."""
    script = tmp_path / "handed.py"
    script.write_text(HANDED)
    port = str(_port())
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank),
                                   "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": port})
             for rank in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert "held 0 of 1600" in out, out  # 200 x (sum, max, 2 x gather of 2 + 1)


@pytest.mark.slow
def test_evaluation_split_between_processes_equals_one_process(single, tmp_path):
    ckpt = single / "checkpoints" / "best.pt"
    outs = []
    for n in (1, 2):
        out = tmp_path / f"eval{n}.json"
        args = ("scripts/evaluate.py", f"checkpoint={ckpt}", "split=test", "batch_size=1",
                f"out={out}")
        cmd = torchrun(n, *args, tmp=tmp_path / str(n)) if n > 1 else command(*args, tmp=tmp_path)
        done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outs.append(json.loads(out.read_text()))
    assert outs[1]["processes"] == 2 and outs[0]["n_samples"] == outs[1]["n_samples"]
    assert abs(outs[0]["nll_bits"] - outs[1]["nll_bits"]) < 1e-6


@pytest.mark.slow
def test_a_global_batch_that_does_not_split_is_one_line(tiny_dataset, tmp_path):
    """Every process says the same one line and exits 2 (torchrun then adds its own report)."""
    procs = slurm_tasks(2, *tiny_train(tiny_dataset, tmp_path / "run", "train.batch_size=3"),
                        tmp=tmp_path)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    for out in outs:
        assert out.strip().splitlines()[-1].startswith(
            "error: train.batch_size=3 does not split between 2 processes"), out
        assert "Traceback" not in out
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_hydra_submitit_launcher_tasks_train_together(tiny_dataset, single, tmp_path):
    """hydra-submitit-launcher with tasks_per_node=2 (its local executor, as on a SLURM node):
    the two tasks form one process group, write one run directory and follow the one-process
    run."""
    sweep = tmp_path / "sweep"
    done = submitit_local(sweep, tiny_dataset, "hydra.launcher.tasks_per_node=2", *STEPS)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = sweep / "0"
    assert json.loads((run_dir / "summary.json").read_text())["processes"] == 2
    for key in ("train/nll_bits", "valid/nll_bits", "test/nll_bits"):
        _close(_steps(run_dir, key), _steps(single, key))
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "multirun.yaml"]
