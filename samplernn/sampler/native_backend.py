"""The native backend (CPU, float32 models, the default there): the whole loop in C.

native.c steps the frame tiers and the sample-level MLP (first layer as lookup sums, as
loop.py) with weights packed in 16-column panels, stored in float32, bfloat16 or int8
(`precision`; float32 sums either way). Its threads share out the output columns of every
product (one stream uses every core). Each code is drawn by the inverse CDF of
softmax(logits / T) from one uniform number per stream and step, drawn from the seed in
chunks of whole top frames.
"""

import numpy as np

from .. import native
from ..errors import Unavailable
from .base import Backend, Start
from .noise import Chunks, RandomNumbers
from .weights import lookup_sums


class NativeBackend(Backend):
    name = "native"
    xp = np
    float32_only = True

    def __init__(self, model, start: Start, random: RandomNumbers, temperature: float,
                 threads: int | None = None, precision: str = "fp32"):
        super().__init__(model, start, random, temperature)
        lib = native.load()
        if lib is None:
            raise Unavailable("backend='native' needs a working C compiler (see the warning)")
        acc = lookup_sums(self.w, self.to_array(start.codes.t().contiguous()), self.lookback)
        self.kernel = native.Kernel(lib, self.w, self.state, acc, self.batch_size,
                                    threads or native.usable_cores(), self.labels, precision)
        self.threads, self.precision = self.kernel.threads, precision
        self._uniform = Chunks(random.uniform, random.chunk_steps)

    def run(self, hist: np.ndarray, step: int, n: int) -> None:
        lb, t, chunk = self.lookback, 0, self._uniform.chunk_steps
        while t < n:  # at most up to the end of a chunk of random numbers at a time
            m = min(n - t, chunk - (step + t) % chunk)
            uniform = None if self.temperature == 0 else self._uniform(step + t, m)
            self.kernel.run(hist[t:t + lb + m], lb, uniform, self.temperature)
            t += m
