"""The contract every sampler backend keeps.

A backend is built from the model, the state generation starts from (`Start`: the last
top frame of codes and every tier's recurrent state, after the prime if any) and the
sampler's random numbers. After that the Sampler calls only `run` for each block of steps
and `check` after it; everything else (options, priming, blocks, seeds) is the Sampler's.
A label (global conditioning) is one more field of `Start`: per place, what each stream's
label adds there, a constant every backend adds where the model does (`labels`). Frame
features (local conditioning) use the same arrays: the Sampler runs one feature frame at a
time and writes what the label and that frame add into them first (`condition`).
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..model import SampleRNN
from .noise import RandomNumbers
from .weights import Weights


@dataclass
class Start:
    """Where generation starts: codes [B, lookback] (silence, or the prime's last top frame)
    and per tier its recurrent state [layers (x2 for LSTMs), B, dim] (rows may be a
    broadcast view of one primed row); labels: SampleRNN.label_vectors of the streams'
    labels (per tier, then the sample level: [B, width] or None)."""
    codes: torch.Tensor
    hidden: list[torch.Tensor]
    labels: list | None = None


class Backend:
    """One way of computing the sampler's steps.

    name: as in sampler.BACKENDS (what sidecars and benchmarks record).
    xp: the array namespace of its code history and state: NumPy or torch.
    state: per tier, its recurrent state arrays (h per layer, then c per layer for LSTMs),
        updated in place.
    precision, persistent, threads, cuda_graph, graph_samples: how it runs (for the record).
    """
    name: str
    xp = np
    float32_only = False  # a kernel that computes in float32 whatever the model's dtype
    precision = "fp32"
    persistent = False
    threads: int | None = None
    cuda_graph = False

    def __init__(self, model: SampleRNN, start: Start, random: RandomNumbers, temperature: float):
        dtype = next(model.parameters()).dtype
        if self.float32_only and dtype != torch.float32:
            raise ConfigError(f"backend={self.name!r} runs float32 models; this one is {dtype}")
        self.model, self.random, self.temperature = model, random, float(temperature)
        self.device, self.dtype = next(model.parameters()).device, dtype
        self.batch_size, self.lookback = start.codes.shape[0], model.lookback
        self.q_levels = model.config.q_levels
        self.graph_samples = self.lookback  # steps the benchmark warms up with
        self.w = Weights(model, self.to_array)
        # copies: kernels update them in place, and the model's h0 must never change
        self.state = [[self.to_array(h[i].clone(memory_format=torch.contiguous_format))
                       for i in range(h.shape[0])] for h in start.hidden]
        # what the streams' labels add at each place (tiers bottom-up, then the sample level)
        self.labels = [None if v is None else self.to_array(v.to(dtype).contiguous())
                       for v in (start.labels or [None] * (len(start.hidden) + 1))]

    def run(self, hist, step: int, n: int) -> None:
        """hist [lookback + n, B] int64 codes, time-major, its first `lookback` rows given:
        fill hist[lookback:] with the codes of the n steps (whole top frames) from absolute
        step `step`, which keys the random numbers."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise if something failed on the device during the last block (waits for it)."""

    def condition(self, vectors: list) -> None:
        """Per place, what is added there from now on ([B, width] tensors, or None where
        nothing changes): written into the arrays the steps read, in place (the C kernel
        holds their addresses, a CUDA graph their buffers)."""
        for array, v in zip(self.labels, vectors):
            if v is not None:
                array[...] = self.to_array(v.to(self.dtype))

    # -- arrays in this backend's namespace ---------------------------------------------

    def to_array(self, x: torch.Tensor):
        return x.detach().cpu().numpy() if self.xp is np else x.detach()

    def history(self, rows: int):
        """An uninitialised code history [rows, B] int64."""
        if self.xp is np:
            return np.empty((rows, self.batch_size), dtype=np.int64)
        return torch.empty((rows, self.batch_size), dtype=torch.long, device=self.device)

    def copy(self, x):
        return x.copy() if self.xp is np else x.clone()

    def codes(self, rows) -> torch.Tensor:
        """Rows [n, B] of a history -> LongTensor [B, n]."""
        out = torch.from_numpy(np.ascontiguousarray(rows.T)) if self.xp is np else rows.t()
        return out.contiguous()

    def undone(self, body, buffers=()) -> None:
        """body(), then the state (and `buffers`) as it was before, also where body() fails:
        a trial run or a CUDA graph's warm-up leaves no trace."""
        buffers = list(buffers) + [s for tier in self.state for s in tier]
        saved = [self.copy(x) for x in buffers]
        try:
            body()
        finally:
            for x, y in zip(buffers, saved):
                x[...] = y
