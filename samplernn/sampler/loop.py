"""The sampler's loop in array arithmetic, shared by the numpy and torch backends.

Written once against an array namespace `xp` that NumPy and torch both satisfy. The
sample-level MLP's first layer is the running sums of lookup rows (weights.lookup_sums):
each new code adds its rows once into the next steps' inputs. Codes are the argmax of
the logits plus the output bias plus temperature-scaled Gumbel noise (Gumbel-max).
"""

import numpy as np
import torch

from .base import Backend, Start
from .noise import Chunks, RandomNumbers
from .tiers import FrameTiers
from .weights import lookup_sums


def _relu_numpy(x):
    return np.maximum(x, 0, out=x)


class PythonLoop(Backend):
    """A subclass sets xp and draws Gumbel noise [n, B, q] scaled by T (`gumbel`)."""

    def __init__(self, model, start: Start, random: RandomNumbers, temperature: float):
        super().__init__(model, start, random, temperature)
        self.tiers = FrameTiers(self.w, self.state, self.lookback, self.xp, labels=self.labels)
        self.acc = lookup_sums(self.w, self.to_array(start.codes.t().contiguous()), self.lookback)
        self._relu = _relu_numpy if self.xp is np else torch.relu_
        self._noise = Chunks(self._biased_noise, random.chunk_steps)

    def gumbel(self, n_steps: int):
        raise NotImplementedError

    def _biased_noise(self, n_steps: int):
        noise = self.gumbel(n_steps)
        noise += self.w.b_out
        return noise

    def noise(self, step: int, n: int):
        """The output bias plus scaled Gumbel noise of the n steps from `step` [n, B, q]
        (the bias alone when greedy); they must lie in one chunk."""
        if self.temperature == 0:
            b = self.w.b_out
            return np.broadcast_to(b, (n, len(b))) if self.xp is np else b.expand(n, -1)
        return self._noise(step, n)

    def run(self, hist, step: int, n: int) -> None:
        self.steps(hist, step, n)

    def steps(self, hist, step: int, n: int, noise=None) -> None:
        """The first n steps of hist (whole top frames), one xp call at a time.

        noise [n, B, q]: output bias plus scaled Gumbel noise for these steps (default:
        drawn from step `step` on). Every buffer it writes is updated in place, so on CUDA
        these calls can be recorded once in a graph and replayed.
        """
        w, lb = self.w, self.lookback
        fs0 = w.tiers[0]["frame_size"]
        relu = self._relu
        conds = [None] * len(w.tiers)
        for t in range(0, n, fs0):
            pos = lb + t
            self.tiers.step(hist, t, conds)
            acc = self.acc
            acc[:, :fs0] += conds[0]                  # [B, fs0, dim]: this frame's inputs
            frame_noise = self.noise(step + t, fs0) if noise is None else noise[t:t + fs0]
            for j in range(fs0):
                p = pos + j
                x = relu(acc[:, j]) if w.first_relu else acc[:, j]  # row j is used once
                for w_h, b_h in w.hidden:
                    x = x @ w_h
                    x += b_h
                    x = relu(x)
                logits = x @ w.w_out
                logits += frame_noise[j]
                code = logits.argmax(-1)
                hist[p] = code
                acc[:, j + 1:j + 1 + fs0] += w.lut_rev[code]
            acc[:, :fs0] = acc[:, fs0:]
            acc[:, fs0:] = 0
