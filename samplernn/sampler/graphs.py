"""CUDA graphs for the backends whose steps are device calls (torch, triton).

A few hundred to thousands of small kernels per top frame cost more to launch than to
run at small batches: the steps are recorded once on fixed buffers and replayed, `span`
steps (whole top frames) per replay between copies in and out; a block's last top
frames, if fewer, replay a one-frame graph. A backend gives what one replay runs
(`graph_body`) and what changes from one replay to the next (`graph_inputs`).
"""

import torch


class CudaGraphs:
    """Mixed into a Backend: `run_graphed` instead of its eager steps when cuda_graph."""

    def use_graphs(self, enabled: bool, span: int) -> None:
        """span: steps per replay (rounded down to whole top frames); graphs of it and of
        one top frame are recorded now, not in the first block, when enabled."""
        lb = self.lookback
        self.cuda_graph, self.graph_samples = enabled, max(lb, span // lb * lb)
        self.graphs, self._g_hist = {}, None
        if enabled:
            for m in {self.graph_samples, lb}:
                self._capture(m)

    def graph_body(self, hist: torch.Tensor, m: int):
        """A callable running m steps (whole top frames) of the fixed history hist."""
        raise NotImplementedError

    def graph_inputs(self, step: int) -> None:
        """Before a replay: its steps start at absolute step `step`."""
        raise NotImplementedError

    def graph_buffers(self) -> list:
        """State a warm-up run must leave as it was, besides the recurrent state."""
        return []

    def run_graphed(self, hist: torch.Tensor, step: int, n: int) -> None:
        lb, span, t = self.lookback, self.graph_samples, 0
        while t < n:
            m = span if n - t >= span else lb
            graph = self.graphs.get(m) or self._capture(m)
            self._g_hist[:lb].copy_(hist[t:t + lb])
            self.graph_inputs(step + t)
            graph.replay()
            hist[lb + t:lb + t + m].copy_(self._g_hist[lb:lb + m])
            t += m

    def _capture(self, m: int):
        """Record m steps (whole top frames) on the fixed buffers."""
        if self._g_hist is None:
            self._g_hist = torch.zeros((self.lookback + self.graph_samples, self.batch_size),
                                       dtype=torch.long, device=self.device)
        self.graphs[m] = record(self, self.graph_body(self._g_hist[:self.lookback + m], m))
        return self.graphs[m]


def record(backend, body) -> torch.cuda.CUDAGraph:
    """A CUDA graph of body(), recorded after a warm-up whose effects are undone."""
    device = backend.device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up runs (cuBLAS handles, workspaces) off the record
        backend.undone(body, backend.graph_buffers())
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph
