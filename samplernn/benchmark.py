"""Speed and memory of training and generation, one JSON line per case.

python scripts/benchmark.py model=three_tier model.dim=256 device=cpu batch_sizes=[1,16]

Random weights and random codes: the cost of a step does not depend on what
the model has learned. Peak memory is the CUDA allocator's peak on a GPU and
the process's peak resident memory on the CPU.
"""

import json
import platform
import resource
import time

import torch
from omegaconf import DictConfig

from . import native
from .device import autocast, pick_device
from .errors import ConfigError
from .model import SampleRNN, SampleRNNConfig
from .quantization import nll_bits
from .sampler import STORES, Sampler, default_backend


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_speed(model: SampleRNN, batch_size: int, seq_len: int, steps: int, warmup: int,
                device: torch.device, precision: str, compile: bool = False) -> float:
    """Training samples per second: forward, backward, element-wise clipping and an Adam
    step per chunk, as train.py does them (fused Adam on a GPU)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    forward = torch.compile(model) if compile else model
    codes = torch.randint(0, model.config.q_levels, (batch_size, model.lookback + seq_len),
                          device=device)
    hidden = None
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with autocast(device, precision):
            logits, hidden = forward(codes, hidden)
        loss = nll_bits(logits, codes[:, model.lookback:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        optimizer.step()
        hidden = [h.detach() for h in hidden]
    _sync(device)
    return batch_size * seq_len * steps / (time.perf_counter() - start)


def gen_speed(model: SampleRNN, batch_size: int, length: int, device: torch.device,
              repeats: int = 1, **options) -> tuple[list[float], Sampler]:
    """Generated samples per second per stream, temperature 1, after a warm-up; one figure
    per repeat (a shared machine's speed varies from second to second), and the last sampler.
    Building a sampler (reading the weights, compiling kernels, recording its CUDA graphs) is
    not timed. options: Sampler's (backend, cuda_graph, precision, graph_samples,
    persistent)."""
    speeds = []
    with torch.inference_mode():
        warm = Sampler(model, batch_size, 1.0, seed=0, **options)
        list(warm.stream(warm.engine.graph_samples + model.lookback))
        for repeat in range(repeats):
            sampler = Sampler(model, batch_size, 1.0, seed=1 + repeat, **options)
            _sync(device)
            start = time.perf_counter()
            for _ in sampler.stream(length):
                pass
            _sync(device)
            speeds.append(length / (time.perf_counter() - start))
    return speeds, sampler


def run(cfg: DictConfig) -> list[dict]:
    if cfg.precision == "int8" and cfg.train_steps > 0:
        raise ConfigError("precision=int8 is generation's (the native backend's weights); "
                          "give train_steps=0 to benchmark generation alone")
    device = pick_device(cfg.device, cfg.get("threads"))
    torch.manual_seed(cfg.seed)
    model_cfg = SampleRNNConfig(**cfg.model)
    model = SampleRNN(model_cfg).to(device)
    rows = []
    for batch_size in cfg.batch_sizes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row = {"preset": cfg.get("preset") or _preset(), "frame_sizes": model_cfg.frame_sizes,
               "dim": model_cfg.dim, "n_rnn": model_cfg.n_rnn, "tiers": model_cfg.n_tiers,
               "n_parameters": model.n_parameters(), "device": device.type,
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else _cpu_name(),
               "threads": torch.get_num_threads(), "batch_size": int(batch_size),
               "precision": cfg.precision, "compile": cfg.compile, "torch": torch.__version__}
        if cfg.train_steps > 0:
            model.train()
            row["train_seq_len"] = cfg.train_seq_len
            row["train_samples_per_s"] = train_speed(model, batch_size, cfg.train_seq_len,
                                                     cfg.train_steps, cfg.warmup_steps, device,
                                                     cfg.precision, cfg.compile)
            row["train_peak_memory_mb"] = _peak_mb(device)
        if cfg.gen_seconds <= 0:
            _emit(row, cfg.out)
            rows.append(row)
            continue
        model.eval()
        length = max(model.lookback, int(cfg.gen_seconds * cfg.sample_rate) // model.lookback
                     * model.lookback)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        backend = cfg.backend or default_backend(device, next(model.parameters()).dtype)
        speeds, sampler = gen_speed(model, batch_size, length, device, cfg.repeats,
                                    backend=backend, cuda_graph=cfg.cuda_graph,
                                    graph_samples=cfg.graph_samples, persistent=cfg.persistent,
                                    precision=cfg.precision if backend in STORES else "fp32")
        speeds.sort()
        per_stream = speeds[len(speeds) // 2]  # the median repeat
        row.update(gen_backend=sampler.backend, gen_precision=sampler.precision,
                   gen_persistent=sampler.persistent,
                   gen_threads=sampler.engine.threads or row["threads"],
                   gen_cuda_graph=sampler.engine.cuda_graph,
                   gen_graph_samples=sampler.engine.graph_samples if sampler.engine.cuda_graph
                   else None,
                   gen_samples_per_s_per_stream=per_stream,
                   gen_samples_per_s_per_stream_best=speeds[-1], gen_repeats=len(speeds),
                   gen_samples_per_s_total=per_stream * batch_size,
                   gen_realtime_factor=per_stream / cfg.sample_rate,
                   gen_peak_memory_mb=_peak_mb(device))
        _emit(row, cfg.out)
        rows.append(row)
    return rows


def _emit(row: dict, out: str | None) -> None:
    print(json.dumps(row), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


def _cpu_name() -> str:
    """The CPU's model name and the cores this process may use, e.g. 'AMD EPYC (2 cores)'."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({native.usable_cores()} cores)"


def _preset() -> str:
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.get().runtime.choices.get("model", "custom") if HydraConfig.initialized() \
        else "custom"


if __name__ == "__main__":  # python -m samplernn.benchmark: the same app as samplernn-benchmark
    from .cli import benchmark
    benchmark()
