"""Where and how the numbers run: device choice, CPU threads, mixed precision."""

import re

import torch

from .errors import ConfigError, check_int


def pick_device(name: str, threads: int | None = None) -> torch.device:
    """auto -> cuda when available, else cpu; a clear error for cuda without a GPU.

    threads: torch's CPU threads for this process (None keeps torch's default). One is
    fastest for SampleRNN's small sequential ops on a 2-core machine (measured: 21k vs
    12k training samples/s for the quick-start model), since idle OpenMP threads spin.
    """
    check_int("threads", threads, minimum=1, optional=True)
    if threads:
        torch.set_num_threads(int(threads))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"device={name!r} is unknown; use auto, cpu, cuda or cuda:<index>")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is visible; use device=cpu or device=auto")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"device={name} but this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(name)


HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}  # precision -> autocast's dtype


def autocast(device: torch.device, precision: str):
    """The model's forward in `precision`: fp32 (off), bf16 or fp16 (torch.autocast: matrix
    products and recurrent layers in half precision, sums and the loss in float32).
    fp16 trains with a gradient scaler (grad_scaler)."""
    if precision not in ("fp32", *HALF):
        raise ConfigError(f"precision={precision!r}; use fp32, bf16 or fp16")
    return torch.autocast(device.type, dtype=HALF.get(precision, torch.bfloat16),
                          enabled=precision != "fp32")


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16's loss scaling: the loss is multiplied before backward so that small gradients
    do not underflow to zero, and the scale halves whenever the scaled gradients overflow
    (that step is skipped). A scaler that does nothing for fp32 and bf16."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
