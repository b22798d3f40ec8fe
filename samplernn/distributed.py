"""Data-parallel training over several processes: torch.distributed and DDP.

One process per device, started by either

- torchrun: `torchrun --nproc_per_node=4 scripts/train.py ...` (RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment), or
- SLURM: one task per GPU through `srun` or hydra-submitit-launcher (SLURM_PROCID,
  SLURM_STEP_NUM_TASKS, SLURM_LOCALID; the first node of the step hosts the rendezvous
  on a port derived from the job id, unless MASTER_ADDR / MASTER_PORT are set), or the
  launcher's local executor with tasks_per_node > 1 (its SUBMITIT_LOCAL_* variables).

Without either, training is one process and nothing here does anything. Each process
drives cuda:<local rank> with NCCL, or the CPU with gloo (the same code, tested on a CPU).
The global batch's rows are split between the processes in equal contiguous blocks;
collectives keep every decision (stop, skip, validate) the same on every process.
"""

import contextlib
import os
import re
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import ConfigError, UserError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when alone)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives' tensors live: cuda with NCCL, cpu with gloo

    @property
    def main(self) -> bool:
        """The one process that writes: metrics, W&B, checkpoints, samples, summary."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def rows(self, batch_size: int, what: str = "train.batch_size") -> tuple[int, int]:
        """[lo, hi): this process's rows of a global batch of batch_size rows."""
        if batch_size % self.size:
            raise ConfigError(f"{what}={batch_size} does not split between {self.size} processes; "
                              f"use a multiple of {self.size} (it is the global batch)")
        n = batch_size // self.size
        return self.rank * n, (self.rank + 1) * n

    def only_main(self, lock):
        """`lock` on the main process, nothing elsewhere (one writer per run directory)."""
        return lock if self.main else nullcontext()

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the processes (float64; the values themselves when alone)."""
        return self._reduce(values, dist.ReduceOp.SUM)

    def max(self, *values: float) -> list[float]:
        return self._reduce(values, dist.ReduceOp.MAX)

    def _reduce(self, values, op) -> list[float]:
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        with self._let_go(t):
            dist.all_reduce(t, op=op)
        return t.tolist()

    def gather_rows(self, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
        """The TBPTT state of the whole global batch (rows on dim 1), from every process."""
        if not self.active:
            return hidden
        out = []
        for h in hidden:
            parts, mine = [torch.empty_like(h) for _ in range(self.size)], h.contiguous()
            with self._let_go(mine, *parts):
                dist.all_gather(parts, mine)
            out.append(torch.cat(parts, dim=1))
        return out

    @contextlib.contextmanager
    def _let_go(self, *tensors: torch.Tensor):
        """Around a gloo collective: return only once gloo's worker threads hold none of
        the tensors. A gloo collective returns as soon as its result is there, but its worker
        thread lets go of the tensors a little later (measured: after 1 call in 6, up to
        3 ms later). A Python tensor whose last reference a worker drops needs the GIL to
        be freed; if that is the process's last collective and the interpreter has begun to
        exit by then, the process aborts (SIGABRT, "terminate called without an active
        exception") instead of exiting with its status. Once DDP has held a process group,
        destroying the group no longer stops its threads (torch 2.14), so this is where it
        is prevented. NCCL's work is released by its watchdog, and shut down with the
        group: only gloo's (the CPU's) waits."""
        before = [t._use_count() for t in tensors]
        yield
        deadline = time.monotonic() + 1.0
        while self.device == "cpu" and time.monotonic() < deadline and any(
                t._use_count() > n for t, n in zip(tensors, before)):
            time.sleep(0)  # the worker thread may need the GIL to finish

    def broadcast(self, obj):
        """The main process's obj, on every process."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_first(self, fn):
        """fn() on the main process, then on the others (make data once, then open it); a
        user's mistake found by the main process stops every process with the same line."""
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except UserError as e:
                error = e
        error = self.broadcast(error)
        if error is not None:
            raise error
        return result if self.main else fn()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'gpu[07-09,12],cpu3' -> 'gpu07'."""
    first = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if first is None or not first.group(1):
        raise ConfigError(f"SLURM_JOB_NODELIST={nodelist!r} names no host; set MASTER_ADDR")
    prefix, ranges = first.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _job_port(env, job_key: str) -> str:
    """MASTER_PORT if set, else a port in [20000, 40000) from the job id: the same for every
    task of a job, different for most jobs sharing a node."""
    return env.get("MASTER_PORT") or str(20000 + int(env.get(job_key, "0")) % 20000)


def environment(env=None) -> dict | None:
    """{rank, size, local_rank, addr, port} of a multi-process launch; None for one process."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun (its MASTER_* are its own store's)
        spec = {"rank": env["RANK"], "size": env["WORLD_SIZE"],
                "local_rank": env.get("LOCAL_RANK", "0"),
                "addr": env.get("MASTER_ADDR", "127.0.0.1"), "port": env.get("MASTER_PORT", "29500")}
    elif "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:  # a task of srun (or submitit)
        # the step's tasks, not the allocation's: python started by the batch script itself
        # in an allocation of several tasks is one process
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        spec = {"rank": env["SLURM_PROCID"], "size": env["SLURM_STEP_NUM_TASKS"],
                "local_rank": env.get("SLURM_LOCALID", "0"),
                "addr": env.get("MASTER_ADDR") or first_host(nodes),
                "port": _job_port(env, "SLURM_JOB_ID")}
    elif "SUBMITIT_LOCAL_GLOBALID" in env:  # hydra-submitit-launcher's local executor
        spec = {"rank": env["SUBMITIT_LOCAL_GLOBALID"], "size": env.get("SUBMITIT_LOCAL_NTASKS", "1"),
                "local_rank": env.get("SUBMITIT_LOCAL_LOCALID", "0"),
                "addr": env.get("MASTER_ADDR", "127.0.0.1"),
                "port": _job_port(env, "SUBMITIT_LOCAL_JOB_ID")}
    else:
        return None
    try:
        out = {k: (v if k == "addr" else int(v)) for k, v in spec.items()}
    except ValueError:
        raise ConfigError(f"the launcher's environment is not a process group: {spec}") from None
    if out["size"] < 2:
        return None
    if not 0 <= out["rank"] < out["size"]:
        raise ConfigError(f"rank {out['rank']} is outside a world of {out['size']} processes")
    return out


_WORLD: World | None = None


def join(device_name: str = "auto") -> World:
    """Join the launcher's process group (once per process); World() when started alone.

    device_name: auto or cuda -> NCCL on cuda:<local rank>; cpu -> gloo.
    """
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    spec = environment()
    if spec is None:
        _WORLD = World()
        return _WORLD
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda:"):
        raise ConfigError(f"device={device_name}: with {spec['size']} processes each takes "
                          "cuda:<its local rank>; use device=cuda or device=auto")
    os.environ.update(MASTER_ADDR=spec["addr"], MASTER_PORT=str(spec["port"]),
                      RANK=str(spec["rank"]), WORLD_SIZE=str(spec["size"]),
                      LOCAL_RANK=str(spec["local_rank"]))
    if use_cuda:
        torch.cuda.set_device(spec["local_rank"] % torch.cuda.device_count())
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://")
    _WORLD = World(spec["rank"], spec["size"], spec["local_rank"], "cuda" if use_cuda else "cpu")
    return _WORLD


def device(world: World, device: torch.device) -> torch.device:
    """This process's device: cuda:<local rank> in a multi-process CUDA job."""
    if world.active and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def leave() -> None:
    """Leave the process group (the end of a training or evaluation run)."""
    global _WORLD
    if _WORLD is not None and _WORLD.active and dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = None


@contextlib.contextmanager
def process_group(device_name: str = "auto"):
    """with process_group(device) as world: ... : join() on entry, leave() on exit."""
    world = join(device_name)
    try:
        yield world
    finally:
        leave()


def drop_stray_output_dir(mine: Path, main: Path) -> None:
    """A non-main process whose Hydra clock ticked past the main one's made its own output
    folder (only .hydra/ and a log inside); the run is the main process's folder."""
    mine, main = Path(mine).resolve(), Path(main).resolve()
    if mine != main and mine.is_dir() and {p.name for p in mine.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(mine, ignore_errors=True)
