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
PRECISIONS = ("fp32", "bf16", "int8")  # how the kernel can store its weights
_TYPE = {"fp32": 0, "bf16": 1, "int8": 2}  # native.c's F32, BF16, I8


class _Mat(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("bias", _f), ("scale", _f), ("n_in", ctypes.c_int),
                ("n_out", ctypes.c_int), ("type", ctypes.c_int)]


class _Tier(ctypes.Structure):
    _fields_ = [("frame_size", ctypes.c_int), ("ratio", ctypes.c_int), ("n_in", ctypes.c_int),
                ("in_", _Mat), ("up", _Mat), ("ih", ctypes.POINTER(_Mat)),
                ("hh", ctypes.POINTER(_Mat)), ("state", _fp), ("cond", _f), ("label", _f)]


class _Net(ctypes.Structure):
    _fields_ = [("n_tiers", ctypes.c_int), ("n_rnn", ctypes.c_int), ("lstm", ctypes.c_int),
                ("skip", ctypes.c_int), ("dim", ctypes.c_int), ("q_levels", ctypes.c_int),
                ("batch", ctypes.c_int), ("n_hidden", ctypes.c_int), ("first_relu", ctypes.c_int),
                ("tiers", ctypes.POINTER(_Tier)), ("lut", _f), ("hidden", ctypes.POINTER(_Mat)),
                ("out", _Mat), ("frame_values", _f), ("acc", _f), ("label", _f)]


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


def quantize(w: np.ndarray, precision: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A float32 matrix [n_in, n_out] (for x @ w) as the kernel stores it: float32 as it is;
    bf16 as the top 16 bits of each float32, rounded to nearest even (uint16); int8 with one
    scale per output column, max |w| / 127 (a torch Linear's weight row), rounded to
    nearest. -> (stored, scale [n_out] float32 or None)."""
    w = np.ascontiguousarray(w, np.float32)
    if precision == "fp32":
        return w, None
    if precision == "bf16":
        bits = w.view(np.uint32).astype(np.uint64)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16), None
    if precision == "int8":
        scale = np.abs(w).max(axis=0) / 127
        scale[scale == 0] = 1
        return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale.astype(np.float32)
    raise ValueError(f"precision={precision!r}; the CPU kernel stores {PRECISIONS}")


def stored(w: np.ndarray, precision: str) -> np.ndarray:
    """The float32 values the kernel multiplies by for weights w [n_in, n_out]."""
    q, scale = quantize(w, precision)
    if precision == "bf16":
        return (q.astype(np.uint32) << 16).view(np.float32)
    return q.astype(np.float32) * scale if scale is not None else q


def pack(w: np.ndarray) -> np.ndarray:
    """[n_in, n_out] -> panels of 16 columns [ceil(n_out / 16), n_in, 16], zero-padded
    (any dtype)."""
    n_in, n_out = w.shape
    padded = np.zeros((n_in, -(-n_out // 16) * 16), w.dtype)
    padded[:, :n_out] = w
    return np.ascontiguousarray(padded.reshape(n_in, -1, 16).transpose(1, 0, 2))


def _padded(v: np.ndarray) -> np.ndarray:
    out = np.zeros(-(-len(v) // 16) * 16, np.float32)
    out[:len(v)] = v
    return out


class Kernel:
    """Binds the sampler's float32 NumPy weights and state arrays (updated in place) to
    native.c, its matrices stored in `precision` ("fp32", "bf16" or "int8")."""

    def __init__(self, lib: ctypes.CDLL, w, state: list[list[np.ndarray]], acc: np.ndarray,
                 batch_size: int, threads: int, labels: list | None = None,
                 precision: str = "fp32"):
        """labels: per tier (bottom-up) and last for the sample level, what each stream's
        label adds there ([B, width] float32) or None (see SampleRNN.label_vectors)."""
        self.lib, self.threads, self.precision = lib, max(1, threads), precision
        self._keep = []  # what the C structures point to must outlive them
        dim = acc.shape[-1]
        self.conds = [np.zeros((batch_size, t["ratio"] * dim), np.float32) for t in w.tiers]
        tiers = (_Tier * len(w.tiers))()
        for k, (tier, t, s, cond) in enumerate(zip(tiers, w.tiers, state, self.conds)):
            w_ih, b_ih, w_hh, b_hh = zip(*t["layers"])
            tier.frame_size, tier.ratio, tier.n_in = t["frame_size"], t["ratio"], t["n_in"]
            if t["w_in"] is not None:  # else the top tier's frame goes straight into its RNN
                tier.in_ = self._mat(t["w_in"], t["b_in"])
            tier.up = self._mat(t["w_up"], t["b_up"])
            tier.ih, tier.hh = self._mats(w_ih, b_ih), self._mats(w_hh, b_hh)
            tier.state, tier.cond = self._own(_ptrs(s)), _ptr(cond)
            if labels and labels[k] is not None:
                tier.label = _ptr(labels[k])
        self._keep += [tiers, w, state, acc, labels]
        self.net = _Net(len(w.tiers), w.n_rnn, int(w.lstm), int(w.skip), dim,
                        len(w.b_out), batch_size, len(w.hidden), int(w.first_relu), tiers,
                        _ptr(w.lut_rev), self._mats(*zip(*w.hidden)) if w.hidden else None,
                        self._mat(w.w_out, w.b_out), _ptr(w.frame_values), _ptr(acc))
        if labels and labels[-1] is not None:
            self.net.label = _ptr(labels[-1])

    def _own(self, x):
        self._keep.append(x)
        return x

    def _mat(self, weight: np.ndarray, bias: np.ndarray | None) -> _Mat:
        """weight [n_in, n_out] stored in this kernel's precision, in panels."""
        q, scale = quantize(weight, self.precision)
        panels = self._own(pack(q))
        mat = _Mat(panels.ctypes.data, None, None, *weight.shape, _TYPE[self.precision])
        if bias is not None:
            mat.bias = _ptr(self._own(_padded(bias)))
        if scale is not None:
            mat.scale = _ptr(self._own(_padded(scale)))
        return mat

    def _mats(self, weights, biases):
        return self._own((_Mat * len(weights))(*map(self._mat, weights, biases)))

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
