"""The torch backend (CUDA; the fallback where the Triton kernels do not run): the loop of
loop.py on torch tensors, every buffer preallocated on the device, one CUDA graph replay
per top frame (its noise buffer holds one top frame's Gumbel noise)."""

import torch

from .base import Start
from .graphs import CudaGraphs
from .loop import PythonLoop
from .noise import RandomNumbers


class TorchBackend(PythonLoop, CudaGraphs):
    name = "torch"
    xp = torch

    def __init__(self, model, start: Start, random: RandomNumbers, temperature: float,
                 cuda_graph: bool = False):
        super().__init__(model, start, random, temperature)
        self._g_noise = None
        self.use_graphs(cuda_graph, self.lookback)

    def gumbel(self, n_steps: int) -> torch.Tensor:
        return self.random.gumbel_torch(n_steps, self.temperature, self.dtype)

    def run(self, hist: torch.Tensor, step: int, n: int) -> None:
        if self.cuda_graph:
            self.run_graphed(hist, step, n)
        else:
            self.steps(hist, step, n)

    def graph_body(self, hist: torch.Tensor, m: int):
        if self._g_noise is None:
            lb, b, q = self.lookback, self.batch_size, self.q_levels
            self._g_noise = self.w.b_out.expand(lb, b, q).contiguous()
        noise = self._g_noise if self.temperature > 0 else None
        return lambda: self.steps(hist, 0, m, noise)

    def graph_inputs(self, step: int) -> None:
        if self.temperature > 0:
            self._g_noise.copy_(self.noise(step, self.lookback))

    def graph_buffers(self) -> list:
        return [self.acc]
