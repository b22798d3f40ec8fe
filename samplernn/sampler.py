"""Fast incremental sampling from a trained SampleRNN.

Each tier keeps its recurrent state and steps only when its frame is complete;
nothing of the past is recomputed. The model's weights are read once (weight
norm folded in), and the first layer of the sample-level MLP becomes one lookup
table per input position (embedding x weights) whose rows each new code adds
once into the next steps' inputs. Four backends run the same arithmetic:

- native (CPU, float32, the default there): the whole loop in C (native.c),
  built on first use; a batch's streams are split between the CPU cores. Each
  code is drawn by the inverse CDF of softmax(logits / T) from one uniform
  number per sample.
- numpy (CPU): the loop below, written once against a tiny array namespace `xp`
  that NumPy and PyTorch both satisfy. NumPy's per-call overhead is several
  times lower than PyTorch's for these vector-sized operations. Used for
  float64 models and where no C compiler works.
- triton (CUDA, float32 models, the default there): the frame tiers as torch
  operations, the sample-level MLP as four Triton kernels per sample or one per
  bottom frame (`persistent`) (kernels.py), in float32 or bfloat16 weights
  (`precision`); CUDA graphs replay many top frames at a time. Without a GPU the
  kernels run in Triton's interpreter (for the tests).
- torch (CUDA): the Python loop on torch tensors, all state in preallocated
  device tensors; one graph replay per top frame.

The Python loop samples with the Gumbel-max trick, noise drawn a chunk at a
time; the Triton kernels draw their Gumbel noise from Philox, keyed by the
absolute step. Each backend gives the same codes for the same seed every time, and on
each, greedy decoding (temperature 0) equals the teacher-forced model's argmax.
"""

import math
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch.nn.utils import parametrize

from . import native
from .errors import ConfigError, Unavailable
from .model import SampleRNN
from .quantize import silence_code

BACKENDS = ("native", "numpy", "torch", "triton")
PRECISIONS = ("fp32", "bf16")  # the triton backend's sample-level weights
PRIME_CHUNK = 1 << 16  # prime samples run through the frame tiers at a time
PERSISTENT_MAX_STREAMS = 8  # the triton backend's persistent kernel: one block of rows


def default_backend(device: torch.device, dtype: torch.dtype) -> str:
    """CUDA: the Triton kernels for float32 models, else torch. CPU: the C kernel for
    float32 models where it builds, else NumPy."""
    if device.type != "cpu":
        from . import kernels  # imports triton: only where it may be used
        why = kernels.available(device)
        if why is None and dtype == torch.float32:
            return "triton"
        if why is not None:
            warnings.warn(f"{why}: generation on {device} runs the slower torch backend",
                          stacklevel=3)
        return "torch"
    return "native" if dtype == torch.float32 and native.load() is not None else "numpy"


def _sigmoid(xp, x):
    return 0.5 * xp.tanh(0.5 * x) + 0.5


def _relu_numpy(x):
    return np.maximum(x, 0, out=x)


class _Weights:
    """The model's effective weights as `xp` arrays, laid out for x @ W."""

    def __init__(self, model: SampleRNN, to_array):
        cfg = model.config
        self.lstm = cfg.rnn_type == "lstm"
        self.skip = cfg.skip_connections
        self.n_rnn = cfg.n_rnn
        self.first_relu = cfg.mlp_first_relu
        with torch.no_grad(), parametrize.cached():
            t = lambda w: to_array(w.detach().t().contiguous())  # noqa: E731
            v = lambda b: to_array(b.detach().contiguous())  # noqa: E731
            self.tiers = []
            for tier in model.tiers:
                layers = [(t(r.weight_ih_l0), v(r.bias_ih_l0), t(r.weight_hh_l0), v(r.bias_hh_l0))
                          for r in tier.rnns]
                direct = tier.input is None  # the top tier's frame goes straight into its RNN
                self.tiers.append(dict(
                    frame_size=tier.frame_size, ratio=tier.ratio, n_in=tier.n_in,
                    w_in=None if direct else t(tier.input.weight),
                    b_in=None if direct else v(tier.input.bias), layers=layers,
                    w_up=t(tier.upsample.weight), b_up=v(tier.upsample.bias)))
            mlp = model.sample_mlp
            emb = mlp.embedding.weight                       # [q, emb]
            w1 = mlp.input.weight                            # [dim, fs0 * emb]
            e = emb.shape[1]
            luts = [emb @ w1[:, j * e:(j + 1) * e].t() for j in range(mlp.frame_size)]
            # lut_rev[c, k]: what code c adds to the first layer k + 1 steps after it
            self.lut_rev = to_array(torch.stack(luts[::-1], dim=1).contiguous())  # [q, fs0, dim]
            self.hidden = [(t(layer.weight), v(layer.bias)) for layer in mlp.hidden]
            self.w_out, self.b_out = t(mlp.output.weight), v(mlp.output.bias)
            # what each code is fed to the frame tiers as
            self.frame_values = to_array(model.frame_values.to(emb.dtype))


class Sampler:
    """Incremental generator of codes for `batch_size` parallel streams.

    sampler = Sampler(model, batch_size, temperature, seed, prime)
    for block in sampler.stream(length): ...   # LongTensor [B, n] blocks of new codes

    backend: "native", "numpy", "torch" or "triton" (default: native on the CPU,
        triton on CUDA).
    threads: CPU threads for the native backend, each taking a share of the streams
        (default: every core this process may use).
    cuda_graph: replay recorded top frames instead of launching each kernel (default: on
        CUDA): one frame per replay for torch, `graph_samples` for triton.
    precision: the triton backend's sample-level weights, "fp32" or "bf16" (float32
        accumulation and logits either way).
    persistent: the triton backend's sample level as one kernel per bottom frame, with a
        grid-wide barrier between layers, instead of four kernels per sample (up to 8
        streams).
    """

    def __init__(self, model: SampleRNN, batch_size: int, temperature: float = 1.0,
                 seed: int | None = None, prime: torch.Tensor | None = None,
                 backend: str | None = None, threads: int | None = None,
                 cuda_graph: bool | None = None, precision: str = "fp32",
                 graph_samples: int = 512, persistent: bool = False):
        if temperature < 0:
            raise ConfigError(f"temperature={temperature} must be >= 0 (0 means greedy)")
        device = next(model.parameters()).device
        self.device, self.dtype = device, next(model.parameters()).dtype
        self.backend = backend or default_backend(device, self.dtype)
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}; use one of {BACKENDS}")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r}; use one of {PRECISIONS}")
        if precision != "fp32" and self.backend != "triton":
            raise ConfigError(f"precision={precision!r} is for the triton backend (CUDA); "
                              f"backend={self.backend!r} computes in the model's {self.dtype}: "
                              "drop precision= or generate on a GPU")
        if persistent and self.backend != "triton":
            raise ConfigError(f"persistent=true is the triton backend's (CUDA); this is "
                              f"backend={self.backend!r}: drop persistent= or generate on a GPU")
        if persistent and batch_size > PERSISTENT_MAX_STREAMS:
            raise ConfigError(f"persistent=true runs up to {PERSISTENT_MAX_STREAMS} streams at "
                              f"once, not {batch_size}: give batch_size <= "
                              f"{PERSISTENT_MAX_STREAMS} or drop persistent=")
        lib = None
        if self.backend in ("native", "triton") and self.dtype != torch.float32:
            raise ConfigError(f"backend={self.backend!r} runs float32 models; this one is "
                              f"{self.dtype}")
        if self.backend == "native":
            lib = native.load()
            if lib is None:
                raise Unavailable("backend='native' needs a working C compiler (see the warning)")
        if self.backend == "triton":
            from . import kernels
            why = kernels.available(device)
            if why:
                raise Unavailable(f"backend='triton' cannot run here: {why}")
        self.xp = torch if self.backend in ("torch", "triton") else np
        if self.xp is np:
            def to_array(x): return x.detach().cpu().numpy()
        else:
            def to_array(x): return x.detach()
        self.model, self.batch_size = model, batch_size
        self.temperature, self.lookback = float(temperature), model.lookback
        self.q_levels = model.config.q_levels
        self.w = _Weights(model, to_array)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed if seed is not None else int(self.rng.integers(2**62)))
        history, hidden = self._start(prime)
        self.history = to_array(history.t().contiguous())    # [lookback, B] time-major
        # copies: the native kernel updates them in place, and h0 must never change
        self.state = [[to_array(h[i].clone(memory_format=torch.contiguous_format))
                       for i in range(h.shape[0])] for h in hidden]
        self.steps, self._noise, self._noise_at = 0, None, 0
        self.kernel, self.fused, self.acc, self._graphs = None, None, None, {}
        self._matmul = np.matmul if self.xp is np else torch.matmul
        # random numbers (Gumbel noise, or the native kernel's uniforms) are drawn in chunks
        # of whole top frames, so how the output is blocked never changes them
        chunk = max(64, min(4096, (1 << 22) // (batch_size * self.q_levels)))
        self._noise_chunk_steps = max(self.lookback, chunk // self.lookback * self.lookback)
        on_cuda = self.xp is torch and device.type == "cuda"
        if cuda_graph and not on_cuda:
            raise ConfigError("cuda_graph=True needs backend='torch' or 'triton' on a CUDA device")
        self.cuda_graph = on_cuda if cuda_graph is None else cuda_graph
        lb = self.lookback
        self.graph_samples = max(lb, graph_samples // lb * lb)  # whole top frames per replay
        self.precision, self.persistent = precision, persistent
        if self.backend == "triton":
            self._use_triton(precision, fallback=backend is None)
        else:
            self._use_lookup_sums()
        if lib is not None:
            self.kernel = native.Kernel(lib, self.w, self.state, self.acc, batch_size,
                                        threads or native.usable_cores())
        if self.cuda_graph:  # recorded now, not in the first block
            for m in {self.graph_samples, lb}:
                self._capture(m)

    def _use_lookup_sums(self) -> None:
        """The Python and C loops' sample-level input: running sums of lookup-table rows.

        acc[:, r]: the first layer's input from past codes for step r of the current bottom
        frame and the next one (rows 0 .. 2 * fs0 - 1)."""
        fs0, lut = self.w.tiers[0]["frame_size"], self.w.lut_rev
        shape = (self.batch_size, 2 * fs0, lut.shape[-1])
        self.acc = np.zeros(shape, lut.dtype) if self.xp is np else \
            torch.zeros(shape, dtype=lut.dtype, device=lut.device)
        for i in range(fs0):  # the last fs0 codes before the start feed its first steps
            self.acc[:, :i + 1] += lut[self.history[self.lookback - fs0 + i]][:, fs0 - 1 - i:]
        self.graph_samples = self.lookback  # the graph's noise buffer holds one top frame

    def _use_triton(self, precision: str, fallback: bool) -> None:
        """The Triton kernels for the sample level (they read the window of codes from the
        history), in bf16 also the frame tiers' weights. Where they are compiled (a GPU),
        one top frame is tried at once (its effects undone); where it fails, the torch loop
        takes over with a warning if the backend was the default choice."""
        from . import kernels
        self.fused = kernels.SampleLevel(self.w, self.batch_size, self.device, precision,
                                         int(self.rng.integers(2**62)), self.temperature,
                                         self.persistent)
        self._gates = lambda x, w: torch.matmul(x.to(w.dtype), w)  # noqa: E731
        self._recurrent_cell = kernels.recurrent_cell
        if precision == "bf16":
            half = lambda x: None if x is None else x.to(torch.bfloat16)  # noqa: E731
            for tier in self.w.tiers:
                tier.update(w_in=half(tier["w_in"]), w_up=half(tier["w_up"]),
                            layers=[(half(a), b, half(c), d) for a, b, c, d in tier["layers"]])
            self._matmul = lambda x, w: torch.matmul(x.to(w.dtype), w).float()  # noqa: E731
        if kernels.interpreted():  # nothing to compile
            return
        lb = self.lookback
        hist = self.history.repeat(2, 1)
        try:
            self._undone(lambda: self._run_triton(hist, lb))
            self.fused.check()
        except Exception as e:  # a GPU or driver Triton cannot compile for, no C compiler, ...
            if not fallback:
                raise
            last_line = (str(e).strip().splitlines() or [""])[-1]
            warnings.warn(f"the Triton generation kernels do not run here "
                          f"({type(e).__name__}: {last_line}); "
                          "generating with the slower torch backend in float32", stacklevel=3)
            self.backend, self.fused, self.precision, self.persistent = "torch", None, "fp32", False
            self.w, self._matmul = _Weights(self.model, lambda x: x.detach()), torch.matmul
            self._use_lookup_sums()

    def _start(self, prime):
        """Silence (and the prime, run through the frame tiers to warm them) -> (codes, hidden)."""
        cfg, b, lb = self.model.config, self.batch_size, self.lookback
        silence = silence_code(cfg.q_type, cfg.q_levels)
        if prime is None or prime.shape[-1] == 0:
            codes = torch.full((b, lb), silence, dtype=torch.long, device=self.device)
            return codes, [h.to(self.dtype) for h in self.model.initial_hidden(b)]
        prime = prime.to(self.device).long()
        if prime.dim() == 1:
            prime = prime[None]
        if prime.shape[0] not in (1, b):
            raise ConfigError(f"prime has {prime.shape[0]} rows; give 1 or num_samples={b}")
        pad = (-prime.shape[1]) % lb
        start = torch.full((prime.shape[0], lb + pad), silence, dtype=torch.long, device=self.device)
        codes = torch.cat([start, prime], dim=1)  # [1 or B, lb + whole frames]
        hidden, n = None, codes.shape[1] - lb
        step = max(lb, PRIME_CHUNK // lb * lb)  # in chunks: constant memory for any prime
        with torch.no_grad():  # one row for a shared prime, whose state every stream starts from
            for a in range(0, n, step):
                hidden = self.model.advance(codes[:, a:a + lb + min(step, n - a)], hidden)
        return codes[:, -lb:].expand(b, -1), [h.expand(-1, b, -1) for h in hidden]

    # -- one tier step and one sample step, in xp arithmetic -------------------------------

    def _tier_step(self, k: int, frame, cond):
        """frame [B, frame_size] float, cond [B, dim] or None -> conditioning [B, ratio, dim]."""
        xp, w, tier = self.xp, self.w, self.w.tiers[k]
        mm = self._matmul
        x0 = frame if tier["w_in"] is None else mm(frame, tier["w_in"]) + tier["b_in"]
        if cond is not None:
            x0 = x0 + cond
        outputs, x = [], x0
        for layer, weights in enumerate(tier["layers"]):
            if layer and w.skip:  # later layers also read the stack's input
                x = xp.concatenate([x, x0], -1)
            x = self._cell(x, weights, self.state[k], layer)
            outputs.append(x)
        top = xp.concatenate(outputs, -1) if w.skip else x
        out = mm(top, tier["w_up"]) + tier["b_up"]
        return out.reshape(out.shape[0], tier["ratio"], -1)

    def _cell(self, x, weights, state: list, layer: int):
        """One recurrent layer's step from input x: its new h [B, d], also written into
        state (h per layer, then c per layer for LSTMs) in place, as a CUDA graph needs."""
        xp, w_ih, b_ih, w_hh, b_hh = self.xp, *weights
        h, c = state[layer], state[self.w.n_rnn + layer] if self.w.lstm else None
        if self.fused is not None:  # the gates' arithmetic in one kernel
            gi, gh = self._gates(x, w_ih), self._gates(h, w_hh)
            return self._recurrent_cell(gi, b_ih, gh, b_hh, h, c)
        mm, d = self._matmul, h.shape[-1]
        gi, gh = mm(x, w_ih) + b_ih, mm(h, w_hh) + b_hh
        if c is not None:
            g = gi + gh
            gates = _sigmoid(xp, g)  # i, f, (g), o: the cell input takes tanh instead
            c[...] = gates[:, d:2 * d] * c + gates[:, :d] * xp.tanh(g[:, 2 * d:3 * d])
            new = gates[:, 3 * d:] * xp.tanh(c)
        else:
            rz = _sigmoid(xp, gi[:, :2 * d] + gh[:, :2 * d])
            r, z = rz[:, :d], rz[:, d:]
            new = xp.tanh(gi[:, 2 * d:] + r * gh[:, 2 * d:])
            new = new + z * (h - new)
        h[...] = new
        return h

    def _noise_chunk(self, n_steps: int):
        """Gumbel noise [n_steps, B, q] scaled by the temperature.

        Drawn in float64: NumPy's float32 exponential is exactly 0 about once in 2^23
        draws, and each such draw picks a uniformly random code: at T=1 the quick-start
        model then fell into noise in about half of its streams instead of a quarter.
        """
        shape = (n_steps, self.batch_size, self.q_levels)
        if self.xp is np:
            e = self.rng.standard_exponential(shape)
            g = -np.log(np.maximum(e, np.finfo(np.float64).tiny, out=e), out=e)
            return (g * self.temperature).astype(self.w.w_out.dtype)
        g = torch.empty(shape, device=self.device, dtype=torch.float64)
        g.exponential_(generator=self.gen).clamp_(min=torch.finfo(g.dtype).tiny).log_().neg_()
        return (g * self.temperature).to(self.dtype)

    def _random(self, step: int, n: int):
        """The random numbers of the n steps from absolute step `step`, which must lie in one
        chunk: for the native kernel one uniform per stream [n, B] float64; for the Python
        loop the output bias plus Gumbel noise [n, B, q] (the bias alone when greedy).

        They are drawn in fixed chunks (a multiple of the top frame size, so a frame never
        straddles two), so how the output is blocked never changes them.
        """
        if self.temperature == 0:
            b = self.w.b_out
            return np.broadcast_to(b, (n, len(b))) if self.xp is np else b.expand(n, -1)
        chunk = self._noise_chunk_steps
        if self._noise is None or not self._noise_at <= step < self._noise_at + chunk:
            self._noise_at = step - step % chunk
            if self.kernel is not None:
                self._noise = self.rng.random((chunk, self.batch_size))
            else:
                self._noise = self._noise_chunk(chunk)
                self._noise += self.w.b_out
        return self._noise[step - self._noise_at:step - self._noise_at + n]

    def _run_python(self, hist, n: int, noise=None) -> None:
        """The first n steps of this block (whole top frames), one xp call at a time.

        noise [n, B, q]: output bias plus scaled Gumbel noise for these steps (default:
        drawn from the seed here). Every buffer it writes is updated in place, so on CUDA
        these calls can be captured once in a graph and replayed.
        """
        w, lb = self.w, self.lookback
        fs0 = w.tiers[0]["frame_size"]
        relu = _relu_numpy if self.xp is np else torch.relu_
        conds = [None] * len(w.tiers)
        for t in range(0, n, fs0):
            pos = lb + t
            self._step_tiers(hist, t, conds)
            acc = self.acc
            acc[:, :fs0] += conds[0]                  # [B, fs0, dim]: this frame's inputs
            frame_noise = self._random(self.steps + t, fs0) if noise is None \
                else noise[t:t + fs0]
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

    def _step_tiers(self, hist, t: int, conds: list) -> None:
        """Step every frame tier whose frame starts at step t (of the top frames in hist):
        conds[k] becomes tier k's conditioning [B, ratio, dim] for the tier below."""
        tiers, pos = self.w.tiers, self.lookback + t
        for k in reversed(range(len(tiers))):
            f = tiers[k]["frame_size"]
            if t % f:
                continue
            above = None
            if k + 1 < len(tiers):
                above = conds[k + 1][:, (t % tiers[k + 1]["frame_size"]) // f]
            conds[k] = self._tier_step(k, self.w.frame_values[hist[pos - f:pos]].T, above)

    def _run_triton(self, hist: torch.Tensor, n: int) -> None:
        """The first n steps of this block (whole top frames): the frame tiers as in
        `_run_python`, each sample as the Triton kernels of kernels.py. The random numbers
        are keyed by self.fused.step0[0] + t, which the caller sets to the block's first step."""
        lb, fs0 = self.lookback, self.w.tiers[0]["frame_size"]
        conds = [None] * len(self.w.tiers)
        for t in range(0, n, fs0):
            self._step_tiers(hist, t, conds)
            self.fused.frame(hist, lb + t, conds[0].contiguous(), t)

    def _run_native(self, hist: np.ndarray, n: int) -> None:
        """The same steps in native.c, which draws each code by the inverse CDF from one
        uniform number; the uniforms come from the seed in chunks of whole top frames."""
        lb, t, chunk = self.lookback, 0, self._noise_chunk_steps
        while t < n:
            step = self.steps + t
            m = min(n - t, chunk - step % chunk)
            uniform = None if self.temperature == 0 else self._random(step, m)
            self.kernel.run(hist[t:t + lb + m], lb, uniform, self.temperature)
            t += m

    def _run_graphed(self, hist: torch.Tensor, n: int) -> None:
        """The same steps on CUDA, `graph_samples` per graph replay (a few hundred to
        thousands of kernels launched at once) between copies in and out of fixed buffers;
        a block's last top frames, if fewer, replay a one-frame graph."""
        lb, span, t = self.lookback, self.graph_samples, 0
        while t < n:
            m = span if n - t >= span else lb
            graph = self._graphs.get(m) or self._capture(m)
            self._g_hist[:lb].copy_(hist[t:t + lb])
            if self.fused is not None:
                self.fused.step0.fill_(self.steps + t)
            elif self.temperature > 0:
                self._g_noise.copy_(self._random(self.steps + t, lb))
            graph.replay()
            hist[lb + t:lb + t + m].copy_(self._g_hist[lb:lb + m])
            t += m

    def _capture(self, m: int):
        """Record m steps (whole top frames) of the block loop on fixed buffers."""
        lb, b, q = self.lookback, self.batch_size, self.q_levels
        if not self._graphs:
            self._g_hist = torch.zeros((lb + self.graph_samples, b), dtype=torch.long,
                                       device=self.device)
        hist = self._g_hist[:lb + m]
        if self.fused is not None:
            body = lambda: self._run_triton(hist, m)  # noqa: E731
        else:
            if not self._graphs:
                self._g_noise = self.w.b_out.expand(lb, b, q).contiguous()
            noise = self._g_noise if self.temperature > 0 else None
            body = lambda: self._run_python(hist, m, noise)  # noqa: E731
        self._graphs[m] = self._record(body)
        return self._graphs[m]

    def _undone(self, body) -> None:
        """body(), then every state buffer as it was before (also where body() fails)."""
        buffers = [x for x in [self.acc] if x is not None] + [s for tier in self.state for s in tier]
        saved = [x.copy() if self.xp is np else x.clone() for x in buffers]
        try:
            body()
        finally:
            for x, y in zip(buffers, saved):
                x[...] = y

    def _record(self, body) -> torch.cuda.CUDAGraph:
        """A CUDA graph of body(), recorded after a warm-up whose effects are undone."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up runs (cuBLAS handles, workspaces) off the record
            self._undone(body)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        return graph

    def stream(self, length: int, block_size: int = 8192) -> Iterator[torch.Tensor]:
        """Yield LongTensor blocks [B, n] of new codes until `length` codes per stream.

        Blocks are multiples of the top frame size, so memory stays constant
        however long the output; the codes do not depend on `block_size`.
        """
        lb = self.lookback
        block_size = max(lb, block_size // lb * lb)
        done = 0
        while done < length:
            n = min(block_size, length - done)
            n_frames = math.ceil(n / lb) * lb
            if self.xp is np:
                hist = np.empty((lb + n_frames, self.batch_size), dtype=np.int64)
            else:
                hist = torch.empty((lb + n_frames, self.batch_size), dtype=torch.long, device=self.device)
            hist[:lb] = self.history
            if self.kernel is not None:
                self._run_native(hist, n_frames)
            elif self.cuda_graph:
                self._run_graphed(hist, n_frames)
            elif self.fused is not None:
                self.fused.step0.fill_(self.steps)
                self._run_triton(hist, n_frames)
            else:
                self._run_python(hist, n_frames)
            if self.fused is not None:
                self.fused.check()
            self.history = hist[n_frames:].copy() if self.xp is np else hist[n_frames:].clone()
            self.steps += n_frames
            done += n
            new = hist[lb:lb + n]
            out = torch.from_numpy(np.ascontiguousarray(new.T)) if self.xp is np else new.t()
            yield out.contiguous()
            if n_frames != n:  # the state ran past the last whole frame: the stream ends here
                break


def generate(model: SampleRNN, num_samples: int, length: int, temperature: float = 1.0,
             prime: torch.Tensor | None = None, seed: int | None = None,
             backend: str | None = None, threads: int | None = None,
             precision: str = "fp32", persistent: bool = False) -> torch.Tensor:
    """Sample `num_samples` streams of `length` new codes -> LongTensor [num_samples, length].

    Starts from the model's initial state and `lookback` samples of silence, or
    after `prime` (codes [1 or num_samples, P]) run through the whole model.
    temperature=0 is greedy (argmax). The same seed gives the same codes.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            sampler = Sampler(model, num_samples, temperature, seed, prime, backend, threads,
                              precision=precision, persistent=persistent)
            blocks = list(sampler.stream(length))
    finally:
        model.train(was_training)
    return torch.cat(blocks, dim=1).to(next(model.parameters()).device)
