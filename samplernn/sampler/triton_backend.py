"""The triton backend (CUDA, float32 models, the default there).

The frame tiers as torch operations (tiers.py), each recurrent layer's gate arithmetic in
one kernel; the sample-level MLP as four Triton kernels per sample, or one per bottom
frame (`persistent`, up to 8 streams) (kernels.py: SampleLevel). Weights in float32 or
bfloat16 or float16 (`precision`; sums and logits stay float32). The kernels draw their Gumbel noise
from Philox keyed by (seed, absolute step, stream, code), so the codes never depend on
blocking or graphs. Without a GPU the kernels run in Triton's interpreter (the tests).
"""

import torch

from .. import kernels
from ..errors import Unavailable
from .base import Backend, Start
from .graphs import CudaGraphs
from .noise import RandomNumbers
from .tiers import FrameTiers


def _half_matmul(x, w):
    return torch.matmul(x.to(w.dtype), w).float()


def _fused_cell(x, weights, h, c):
    """A recurrent layer's step: two gate products, then one kernel for the rest."""
    w_ih, b_ih, w_hh, b_hh = weights
    gi, gh = torch.matmul(x.to(w_ih.dtype), w_ih), torch.matmul(h.to(w_hh.dtype), w_hh)
    return kernels.recurrent_cell(gi, b_ih, gh, b_hh, h, c)


class TritonBackend(Backend, CudaGraphs):
    name = "triton"
    xp = torch
    float32_only = True

    def __init__(self, model, start: Start, random: RandomNumbers, temperature: float,
                 precision: str = "fp32", persistent: bool = False, cuda_graph: bool = False,
                 graph_samples: int = 512):
        why = kernels.available(next(model.parameters()).device)
        if why:
            raise Unavailable(f"backend='triton' cannot run here: {why}")
        super().__init__(model, start, random, temperature)
        self.precision, self.persistent = precision, persistent
        self.fused = kernels.SampleLevel(self.w, self.batch_size, self.device, precision,
                                         random.kernel_seed(), self.temperature, persistent)
        matmul = None
        if precision != "fp32":  # the frame tiers' weights too
            dtype = kernels.DTYPES[precision]
            half = lambda x: None if x is None else x.to(dtype)  # noqa: E731
            for tier in self.w.tiers:
                tier.update(w_in=half(tier["w_in"]), w_up=half(tier["w_up"]),
                            layers=[(half(a), b, half(c), d) for a, b, c, d in tier["layers"]])
            matmul = _half_matmul
        self.tiers = FrameTiers(self.w, self.state, self.lookback, torch, matmul, _fused_cell,
                                self.labels)
        self._try(start)
        self.use_graphs(cuda_graph, graph_samples)

    def _try(self, start: Start) -> None:
        """Where the kernels are compiled (a GPU), one top frame at once, its effects undone:
        a GPU or driver Triton cannot compile for, or no C compiler for its launcher, fails
        here rather than in the first block."""
        if kernels.interpreted():  # nothing to compile
            return
        lb = self.lookback
        hist = start.codes.t().contiguous().repeat(2, 1)
        self.undone(lambda: self.steps(hist, lb))
        self.fused.check()

    def steps(self, hist: torch.Tensor, n: int) -> None:
        """The first n steps of hist (whole top frames); their random numbers are keyed by
        self.fused.step0[0] + t, which the caller sets to the first step's absolute index."""
        lb, fs0 = self.lookback, self.w.tiers[0]["frame_size"]
        conds = [None] * len(self.w.tiers)
        for t in range(0, n, fs0):
            self.tiers.step(hist, t, conds)
            self.fused.frame(hist, lb + t, conds[0].contiguous(), t)

    def run(self, hist: torch.Tensor, step: int, n: int) -> None:
        if self.cuda_graph:
            self.run_graphed(hist, step, n)
        else:
            self.fused.step0.fill_(step)
            self.steps(hist, n)

    def check(self) -> None:
        self.fused.check()

    def graph_body(self, hist: torch.Tensor, m: int):
        return lambda: self.steps(hist, m)

    def graph_inputs(self, step: int) -> None:
        self.fused.step0.fill_(step)
