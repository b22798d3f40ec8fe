"""A sampler's random numbers: all from its seed, keyed by absolute step.

Each backend draws what its way of sampling needs: Gumbel noise for the argmax of noisy
logits (numpy, torch), one uniform per stream and step for the inverse CDF (native), a
seed for the kernels' own Philox generator (triton). Noise drawn on the host comes in
chunks of whole top frames, so how the output is blocked never changes it.
"""

import numpy as np
import torch


class RandomNumbers:
    """rng: NumPy's generator from the seed; gen: torch's, seeded with the seed too (from
    rng when there is none)."""

    def __init__(self, seed: int | None, device: torch.device, batch_size: int, q_levels: int,
                 lookback: int):
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed if seed is not None else int(self.rng.integers(2**62)))
        self.batch_size, self.q_levels, self.device = batch_size, q_levels, device
        chunk = max(64, min(4096, (1 << 22) // (batch_size * q_levels)))
        self.chunk_steps = max(lookback, chunk // lookback * lookback)

    def kernel_seed(self) -> int:
        """A seed for a kernel's own generator."""
        return int(self.rng.integers(2**62))

    def uniform(self, n_steps: int) -> np.ndarray:
        """[n_steps, B] float64 in [0, 1)."""
        return self.rng.random((n_steps, self.batch_size))

    def gumbel_numpy(self, n_steps: int, temperature: float, dtype) -> np.ndarray:
        """Gumbel noise [n_steps, B, q] times the temperature, from NumPy's generator.

        Drawn in float64: NumPy's float32 exponential is exactly 0 about once in 2^23
        draws, and each such draw picks a uniformly random code: at T=1 the quick-start
        model then fell into noise in about half of its streams instead of a quarter.
        """
        e = self.rng.standard_exponential((n_steps, self.batch_size, self.q_levels))
        g = -np.log(np.maximum(e, np.finfo(np.float64).tiny, out=e), out=e)
        return (g * temperature).astype(dtype)

    def gumbel_torch(self, n_steps: int, temperature: float, dtype: torch.dtype) -> torch.Tensor:
        """The same from torch's generator, on its device."""
        g = torch.empty((n_steps, self.batch_size, self.q_levels), device=self.device,
                        dtype=torch.float64)
        g.exponential_(generator=self.gen).clamp_(min=torch.finfo(g.dtype).tiny).log_().neg_()
        return (g * temperature).to(dtype)


class Chunks:
    """Random numbers per absolute step, drawn `chunk_steps` at a time by draw(chunk_steps)
    -> [chunk_steps, ...] (a multiple of the top frame, so a frame never straddles two)."""

    def __init__(self, draw, chunk_steps: int):
        self.draw, self.chunk_steps = draw, chunk_steps
        self._chunk, self._at = None, 0

    def __call__(self, step: int, n: int):
        """The numbers of the n steps from `step`, which must lie in one chunk."""
        if self._chunk is None or not self._at <= step < self._at + self.chunk_steps:
            self._at = step - step % self.chunk_steps
            self._chunk = self.draw(self.chunk_steps)
        return self._chunk[step - self._at:step - self._at + n]
