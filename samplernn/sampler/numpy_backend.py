"""The numpy backend (CPU): the loop of loop.py on NumPy arrays.

NumPy's per-call overhead is several times lower than torch's for these vector-sized
operations. It runs float64 models, and float32 ones where no C compiler works for the
native backend (3 to 4 times slower than it).
"""

import numpy as np

from .loop import PythonLoop


class NumpyBackend(PythonLoop):
    name = "numpy"
    xp = np

    def gumbel(self, n_steps: int) -> np.ndarray:
        return self.random.gumbel_numpy(n_steps, self.temperature, self.w.w_out.dtype)
