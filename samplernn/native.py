"""The CPU sampling kernel (native.c): built with the machine's C compiler on first use.

The library is cached under $SAMPLERNN_CACHE (default ~/.cache/samplernn),
keyed by the source, the compiler and the CPU, so a shared home directory on a
cluster of mixed machines never loads code built for another CPU. Where no C
compiler works, `load()` warns once and returns None, and the sampler runs its
NumPy loop instead (3 to 4 times slower).
"""

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("native.c")
FLAGS = [["-O3", "-march=native"], ["-O3"]]  # the second where the compiler lacks -march=native
COMMON = ["-std=gnu11", "-fPIC", "-shared", "-Wall"]

_f = ctypes.POINTER(ctypes.c_float)
_fp = ctypes.POINTER(_f)


class _Tier(ctypes.Structure):
    _fields_ = [("frame_size", ctypes.c_int), ("ratio", ctypes.c_int), ("n_in", ctypes.c_int),
                ("w_in", _f), ("b_in", _f), ("w_up", _f), ("b_up", _f),
                ("w_ih", _fp), ("b_ih", _fp), ("w_hh", _fp), ("b_hh", _fp),
                ("state", _fp), ("cond", _f), ("label", _f)]


class _Net(ctypes.Structure):
    _fields_ = [("n_tiers", ctypes.c_int), ("n_rnn", ctypes.c_int), ("lstm", ctypes.c_int),
                ("skip", ctypes.c_int), ("dim", ctypes.c_int), ("q_levels", ctypes.c_int),
                ("batch", ctypes.c_int), ("n_hidden", ctypes.c_int), ("first_relu", ctypes.c_int),
                ("tiers", ctypes.POINTER(_Tier)), ("lut", _f),
                ("w_hidden", _fp), ("b_hidden", _fp), ("w_out", _f), ("b_out", _f),
                ("frame_values", _f), ("acc", _f), ("label", _f)]


def cache_dir() -> Path:
    root = os.environ.get("SAMPLERNN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "samplernn")
    return Path(root)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def usable_cores() -> int:
    """The CPU cores this process may run on (a batch is split between them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@functools.cache
def load() -> ctypes.CDLL | None:
    """The kernel library, compiled if not cached yet; None (and one warning) if that fails."""
    cc = _compiler()
    if cc is None:
        warnings.warn("no C compiler found (set CC or install gcc): CPU generation falls back "
                      "to NumPy, a few times slower", stacklevel=2)
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, cc.encode(), repr(FLAGS + [COMMON]).encode(),
                                     platform.machine().encode(), _cpu().encode()]))
    path = cache_dir() / f"native-{key.hexdigest()[:16]}.so"
    if not path.exists():
        error = _build(cc, path)
        if error:
            warnings.warn(f"could not build the CPU sampling kernel with {cc}: {error}\n"
                          "CPU generation falls back to NumPy, a few times slower", stacklevel=2)
            return None
    lib = ctypes.CDLL(str(path))
    lib.srnn_generate.argtypes = [ctypes.POINTER(_Net), ctypes.c_void_p, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_void_p, ctypes.c_float, ctypes.c_int]
    lib.srnn_generate.restype = ctypes.c_int
    return lib


def _build(cc: str, path: Path) -> str | None:
    """Compile to a temporary file beside `path`, then rename: never a half-written library.
    Returns None, or what went wrong (the compiler's last line, or an unwritable cache)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        error = "no output"
        for flags in FLAGS:
            cmd = [cc, *flags, *COMMON, "-o", tmp, str(SOURCE), "-lm", "-lpthread"]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode == 0:
                os.replace(tmp, path)
                return None
            error = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return error
    except OSError as e:
        return str(e)
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def _ptr(a: np.ndarray):
    assert a.dtype == np.float32 and a.flags.c_contiguous, (a.dtype, a.flags)
    return a.ctypes.data_as(_f)


def _ptrs(arrays):
    return (_f * len(arrays))(*[_ptr(a) for a in arrays])


def pack(w: np.ndarray) -> np.ndarray:
    """[n_in, n_out] -> panels of 16 columns [ceil(n_out / 16), n_in, 16], zero-padded."""
    n_in, n_out = w.shape
    padded = np.zeros((n_in, -(-n_out // 16) * 16), np.float32)
    padded[:, :n_out] = w
    return np.ascontiguousarray(padded.reshape(n_in, -1, 16).transpose(1, 0, 2))


class Kernel:
    """Binds the sampler's float32 NumPy weights and state arrays (updated in place) to native.c."""

    def __init__(self, lib: ctypes.CDLL, w, state: list[list[np.ndarray]], acc: np.ndarray,
                 batch_size: int, threads: int, labels: list | None = None):
        """labels: per tier (bottom-up) and last for the sample level, what each stream's
        label adds there ([B, width] float32) or None (see SampleRNN.label_vectors)."""
        self.lib, self.threads = lib, max(1, threads)
        dim = acc.shape[-1]
        self.conds = [np.zeros((batch_size, t["ratio"] * dim), np.float32) for t in w.tiers]
        self._keep = []  # the ctypes pointer arrays must outlive the structures that hold them
        tiers = (_Tier * len(w.tiers))()
        for k, (tier, t, s, cond) in enumerate(zip(tiers, w.tiers, state, self.conds)):
            w_ih, b_ih, w_hh, b_hh = zip(*t["layers"])
            direct = t["w_in"] is None  # the top tier's frame goes straight into its RNN
            packed = [None if direct else pack(t["w_in"]), pack(t["w_up"])]
            arrays = [_ptrs(self._own([pack(x) for x in w_ih])), _ptrs(b_ih),
                      _ptrs(self._own([pack(x) for x in w_hh])), _ptrs(b_hh), _ptrs(s)]
            self._keep += arrays + packed + [b_ih, b_hh]
            tier.frame_size, tier.ratio, tier.n_in = t["frame_size"], t["ratio"], t["n_in"]
            if not direct:
                tier.w_in, tier.b_in = _ptr(packed[0]), _ptr(t["b_in"])
            tier.w_up, tier.b_up = _ptr(packed[1]), _ptr(t["b_up"])
            tier.w_ih, tier.b_ih, tier.w_hh, tier.b_hh, tier.state = arrays
            tier.cond = _ptr(cond)
            if labels and labels[k] is not None:
                tier.label = _ptr(labels[k])
        hidden_w = _ptrs(self._own([pack(h[0]) for h in w.hidden]))
        hidden_b = _ptrs([h[1] for h in w.hidden])
        w_out = pack(w.w_out)
        self._keep += [tiers, hidden_w, hidden_b, w_out, w, state, acc]
        self.net = _Net(len(w.tiers), w.n_rnn, int(w.lstm), int(w.skip), dim,
                        len(w.b_out), batch_size, len(w.hidden), int(w.first_relu), tiers,
                        _ptr(w.lut_rev), hidden_w, hidden_b, _ptr(w_out), _ptr(w.b_out),
                        _ptr(w.frame_values), _ptr(acc))
        if labels and labels[-1] is not None:
            self.net.label = _ptr(labels[-1])
        self._keep.append(labels)

    def _own(self, arrays: list) -> list:
        self._keep.append(arrays)
        return arrays

    def run(self, hist: np.ndarray, lookback: int, uniform: np.ndarray | None,
            temperature: float) -> None:
        """hist [lookback + n, B] int64 (first `lookback` rows given) -> codes in hist[lookback:].

        Each code is drawn from softmax(logits / temperature) by the inverse CDF at
        uniform [n, B] float64 in [0, 1); None is greedy (argmax).
        """
        n = hist.shape[0] - lookback
        assert hist.dtype == np.int64 and hist.flags.c_contiguous
        if uniform is not None:
            assert uniform.dtype == np.float64 and uniform.flags.c_contiguous and len(uniform) == n
        status = self.lib.srnn_generate(ctypes.byref(self.net), hist.ctypes.data, lookback, n,
                                        None if uniform is None else uniform.ctypes.data,
                                        temperature, self.threads)
        if status:
            raise MemoryError("the CPU sampling kernel could not allocate its scratch memory")



def describe() -> str:
    """Builds the kernel now if needed (make install calls this) and says where it is."""
    lib = load()
    return f"CPU sampling kernel: {lib._name}" if lib else \
        "CPU sampling kernel: not built; generation on the CPU uses NumPy"
