"""Triton kernels of the fast generation path on CUDA (the sampler's triton backend).

The sample-level MLP takes four kernels per generated sample (plus one per bottom frame),
for any batch, recorded in CUDA graphs:

1. `_first_layer`: picks the code of the step before (argmax of its noisy logits),
   writes it to the history, and forms the first layer's input for this step from
   the conditioning plus one lookup-table row per code in the window
   (lut_rev[c, k]: what code c adds k + 1 steps after it).
2. `_linear` for each hidden layer: relu(x @ W + b).
3. `_linear` for the output layer: x @ W + b plus temperature-scaled Gumbel noise from
   Philox, keyed by (seed, absolute step, stream, code): the same seed gives the
   same codes however the output is blocked or graphed.

Each frame tier's recurrent step is its two gate products (torch) and `_recurrent_cell`,
the GRU or LSTM arithmetic in one kernel.

`_sample_frame` (persistent=True, up to 8 streams) does the same arithmetic for a whole
bottom frame in one launch: at most one program per SM, each owning a slice of every
layer's columns, with a grid-wide barrier (`_grid_sync`) after each layer.

Weights are float32, bfloat16 or float16 (`precision`); every product accumulates in float32
and the logits stay float32. With TRITON_INTERPRET=1 the same kernels run on CPU
tensors in Triton's interpreter (slowly: the tests do so on machines without a GPU).
"""

import torch

from .errors import Unavailable

try:
    import triton
    import triton.language as tl
except ImportError:  # torch's CUDA wheels bring triton; elsewhere the sampler falls back
    triton = None

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = tuple(DTYPES)


def interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter (TRITON_INTERPRET=1 before triton is
    first imported): on the CPU, slowly; the test suite sets it on machines without a GPU."""
    return triton is not None and bool(triton.knobs.runtime.interpret)


def available(device: torch.device) -> str | None:
    """None where these kernels can run on `device`, else why not."""
    if triton is None:
        return "triton is not installed"
    if device.type == "cuda" and not interpreted():
        return None
    if device.type == "cpu" and interpreted():
        return None
    return f"the kernels run on CUDA devices, or on the CPU in Triton's interpreter " \
           f"(TRITON_INTERPRET=1); this is {device} with the interpreter " \
           f"{'on' if interpreted() else 'off'}"


if triton is not None:

    @triton.jit
    def _pick(logits, rows, row_ok, Q: tl.constexpr, BLOCK_Q: tl.constexpr,
              CACHE: tl.constexpr = ""):
        """argmax over the q noisy logits of each row (the first of equal ones) -> [BLOCK_M].
        CACHE ".cg": read past the SM's L1 cache (logits written by other programs of a
        running kernel)."""
        qs = tl.arange(0, BLOCK_Q)
        values = tl.load(logits + rows[:, None] * Q + qs[None, :],
                         mask=row_ok[:, None] & (qs[None, :] < Q), other=-float("inf"),
                         cache_modifier=CACHE)
        return tl.argmax(values, axis=1).to(tl.int64)

    @triton.jit
    def _window_sum(hist, p, n_rows, rows, row_ok, code, cond, j, lut, cols, ok,
                    FS0: tl.constexpr, DIM: tl.constexpr, CACHE: tl.constexpr):
        """The first layer's input [BLOCK_M, len(cols)] float32 for the step at hist[p]:
        cond [B, FS0, dim] at row j + sum_k lut [q, FS0, dim] at (hist[p-1-k], k), where
        `code` is hist[p-1] (given: it may still be in the logits)."""
        acc = tl.load(cond + rows[:, None] * (FS0 * DIM) + j * DIM + cols[None, :], mask=ok,
                      other=0.0).to(tl.float32)
        acc += tl.load(lut + code[:, None] * (FS0 * DIM) + cols[None, :], mask=ok,
                       other=0.0).to(tl.float32)
        for k in tl.static_range(1, FS0):
            code = tl.load(hist + (p - 1 - k) * n_rows + rows, mask=row_ok, other=0,
                           cache_modifier=CACHE)
            acc += tl.load(lut + code[:, None] * (FS0 * DIM) + k * DIM + cols[None, :], mask=ok,
                           other=0.0).to(tl.float32)
        return acc

    @triton.jit
    def _gumbel(seed, step, t, n_rows, rows, cols, N: tl.constexpr):
        """Gumbel noise [BLOCK_M, BLOCK_N] of absolute step step[0] + t, keyed by (seed, step,
        stream, code): the same for a seed however the steps are blocked or launched."""
        index = ((tl.load(step) + t) * n_rows + rows[:, None]).to(tl.int64) * N + cols[None, :]
        u = tl.rand(seed, index)  # [0, 1): u = 0 gives -inf, a code never picked
        return -tl.log(-tl.log(u))

    @triton.jit(do_not_specialize=["p"])  # one compiled kernel for every step
    def _pick_kernel(hist, p, n_rows, logits, Q: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_Q: tl.constexpr):
        """hist[p - 1] = the code picked from the logits (the last step of a frame)."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        tl.store(hist + (p - 1) * n_rows + rows, _pick(logits, rows, row_ok, Q, BLOCK_Q),
                 mask=row_ok)

    @triton.jit(do_not_specialize=["p", "j"])
    def _first_layer(hist, p, n_rows, cond, j, lut, x, logits,
                     FS0: tl.constexpr, DIM: tl.constexpr, Q: tl.constexpr,
                     PICK: tl.constexpr, RELU: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_Q: tl.constexpr):
        """x [B, dim] = cond [B, FS0, dim] at row j + sum_k lut [q, FS0, dim] at (hist[p-1-k], k).

        PICK: the code at p - 1 is still in the logits: pick it (and store it once)."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        row_ok = rows < n_rows
        ok = row_ok[:, None] & (cols[None, :] < DIM)
        if PICK:
            code = _pick(logits, rows, row_ok, Q, BLOCK_Q)
            if tl.program_id(1) == 0:
                tl.store(hist + (p - 1) * n_rows + rows, code, mask=row_ok)
        else:
            code = tl.load(hist + (p - 1) * n_rows + rows, mask=row_ok, other=0)
        acc = _window_sum(hist, p, n_rows, rows, row_ok, code, cond, j, lut, cols, ok, FS0, DIM,
                          "")
        if RELU:
            acc = tl.maximum(acc, 0.0)
        tl.store(x + rows[:, None] * DIM + cols[None, :], acc.to(x.dtype.element_ty), mask=ok)

    # _linear's tiles, timed on the GPU at hand the first time each (batch, shape) runs
    # (before any CUDA graph is recorded) and remembered in Triton's cache; columns x depth
    # x warps x pipeline stages: narrow tiles spread one stream over many SMs, wide ones
    # suit large batches
    LINEAR_CONFIGS = [triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
                      for n, k, w, s in [(8, 512, 4, 2), (16, 256, 4, 3), (16, 128, 4, 3),
                                         (32, 128, 4, 3), (64, 64, 4, 3), (64, 128, 4, 3),
                                         (128, 64, 8, 3)]]

    def linear_configs(configs, named_args, **kwargs):
        """The configurations that fit the row block: tl.dot's tiles need 16 columns; the
        few-row path's [rows, depth, columns] products must fit in registers."""
        if kwargs["BLOCK_M"] >= 16:
            return [c for c in configs if c.kwargs["BLOCK_N"] >= 16]
        return [c for c in configs
                if kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"] <= 8192]

    @triton.autotune(LINEAR_CONFIGS, key=["n_rows", "K", "N"], cache_results=True,
                     prune_configs_by={"early_config_prune": linear_configs})
    @triton.jit(do_not_specialize=["t"])
    def _linear(x, w, b, y, n_rows, seed, step, t, temperature,
                K: tl.constexpr, N: tl.constexpr, RELU: tl.constexpr, NOISE: tl.constexpr,
                UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """y [B, N] = x [B, K] @ w [K, N] + b, then relu (hidden layers) or plus
        temperature * Gumbel noise of absolute step step[0] + t (the output layer)."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok, col_ok = rows < n_rows, cols < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < K
            a = tl.load(x + rows[:, None] * K + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                        other=0.0)
            v = tl.load(w + ks[:, None] * N + cols[None, :], mask=k_ok[:, None] & col_ok[None, :],
                        other=0.0)
            if BLOCK_M < 16:  # a few rows (one stream): products summed in registers
                acc += tl.sum(a.to(tl.float32)[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
            elif UPCAST:  # the interpreter's half dots (NumPy's) are not float32 sums;
                # bf16 and fp16 products are exact in fp32
                acc = tl.dot(a.to(tl.float32), v.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(a.to(v.dtype), v, acc, input_precision="ieee")
        acc += tl.load(b + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if RELU:
            acc = tl.maximum(acc, 0.0)
        if NOISE:
            acc += temperature * _gumbel(seed, step, t, n_rows, rows, cols, N)
        ok = row_ok[:, None] & col_ok[None, :]
        tl.store(y + rows[:, None] * N + cols[None, :], acc.to(y.dtype.element_ty), mask=ok)

    @triton.jit
    def _part(g, bias, at, cols, ok, col_ok, offset):
        """Gate block [BLOCK_M, BLOCK_D] at column `offset` of a gate product, plus its bias."""
        return (tl.load(g + at + offset, mask=ok, other=0.0).to(tl.float32)
                + tl.load(bias + offset + cols, mask=col_ok, other=0.0)[None, :])

    @triton.jit
    def _recurrent_cell(gi, b_ih, gh, b_hh, h, c, n_rows, D: tl.constexpr, LSTM: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
        """One recurrent step from the two gate products gi = x @ W_ih, gh = h @ W_hh
        [B, G * D] (any float type) and their biases: h [B, D] (and c, LSTM) in place,
        float32, as torch's GRU / LSTM (tanh(x) = 2 sigmoid(2x) - 1)."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        col_ok = cols < D
        ok = (rows < n_rows)[:, None] & col_ok[None, :]
        G: tl.constexpr = 4 if LSTM else 3
        at = rows[:, None] * (G * D) + cols[None, :]
        state = rows[:, None] * D + cols[None, :]
        if LSTM:  # gates i, f, g, o
            i = _part(gi, b_ih, at, cols, ok, col_ok, 0) + _part(gh, b_hh, at, cols, ok, col_ok, 0)
            f = _part(gi, b_ih, at, cols, ok, col_ok, D) + _part(gh, b_hh, at, cols, ok, col_ok, D)
            g = (_part(gi, b_ih, at, cols, ok, col_ok, 2 * D)
                 + _part(gh, b_hh, at, cols, ok, col_ok, 2 * D))
            o = (_part(gi, b_ih, at, cols, ok, col_ok, 3 * D)
                 + _part(gh, b_hh, at, cols, ok, col_ok, 3 * D))
            cell = (tl.sigmoid(f) * tl.load(c + state, mask=ok, other=0.0)
                    + tl.sigmoid(i) * (2 * tl.sigmoid(2 * g) - 1))
            tl.store(c + state, cell, mask=ok)
            new = tl.sigmoid(o) * (2 * tl.sigmoid(2 * cell) - 1)
        else:  # gates r, z, n
            r = tl.sigmoid(_part(gi, b_ih, at, cols, ok, col_ok, 0)
                           + _part(gh, b_hh, at, cols, ok, col_ok, 0))
            z = tl.sigmoid(_part(gi, b_ih, at, cols, ok, col_ok, D)
                           + _part(gh, b_hh, at, cols, ok, col_ok, D))
            n = (_part(gi, b_ih, at, cols, ok, col_ok, 2 * D)
                 + r * _part(gh, b_hh, at, cols, ok, col_ok, 2 * D))
            n = 2 * tl.sigmoid(2 * n) - 1
            old = tl.load(h + state, mask=ok, other=0.0)
            new = n + z * (old - n)
        tl.store(h + state, new, mask=ok)


    # -- the persistent sample level: one kernel per bottom frame ---------------------------

    @triton.jit
    def _grid_sync(sync, target, spin_limit, failed):
        """Wait until every program of the grid has arrived here: each adds 1 to the counter
        at `sync`, which counts every arrival ever (int64), until it reaches `target`. Gives
        up after spin_limit polls and sets `failed` (programs that were not all resident on
        the GPU at once would otherwise wait forever)."""
        tl.debug_barrier()  # every thread's stores are made before this program arrives
        tl.atomic_add(sync, 1, sem="release")
        spins = 0
        while (tl.load(sync, volatile=True) < target) & (spins < spin_limit):
            spins += 1
        if spins >= spin_limit:
            tl.atomic_max(failed, 1)
        tl.atomic_add(sync, 0, sem="acquire")  # the others' stores are seen from here on
        tl.debug_barrier()

    @triton.jit
    def _columns(x, w, b, rows, row_ok, cols, col_ok, K: tl.constexpr, N: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """x [B, K] @ w [K, N] + b at the BLOCK_N columns `cols`, float32; x is read past
        L1 (other programs of the running kernel wrote it)."""
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in tl.static_range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < K
            a = tl.load(x + rows[:, None] * K + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                        other=0.0, cache_modifier=".cg")
            v = tl.load(w + ks[:, None] * N + cols[None, :], mask=k_ok[:, None] & col_ok[None, :],
                        other=0.0)
            acc += tl.sum(a.to(tl.float32)[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
        return acc + tl.load(b + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]

    @triton.jit(do_not_specialize=["p0", "t0"])
    def _sample_frame(hist, p0, n_rows, cond, lut, w1, b1, w2, b2, w_out, b_out, xa, xb,
                      logits, seed, step, t0, temperature, sync, spin_limit, failed,
                      FS0: tl.constexpr, DIM: tl.constexpr, Q: tl.constexpr,
                      RELU: tl.constexpr, NOISE: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      BLOCK_Q: tl.constexpr):
        """The FS0 steps of a bottom frame (codes at hist[p0 .. p0 + FS0 - 1]) in one launch:
        per step, the first layer (_window_sum, as _first_layer), the two hidden layers and
        the output layer (as _linear, with its _gumbel noise), each program computing its own columns of every layer (BLOCK_D
        of dim, BLOCK_N of q) for all rows, with a grid-wide barrier after each layer. The
        grid must fit on the GPU at once (at most one program per SM). The last code is
        picked at the end, so a frame tier can read the whole frame at once."""
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        rows = tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        cols = pid * BLOCK_D + tl.arange(0, BLOCK_D)
        col_ok = cols < DIM
        ok = row_ok[:, None] & col_ok[None, :]
        qs = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        q_ok = qs < Q
        arrived = tl.load(sync, volatile=True)  # < one barrier's arrivals past the last launch
        target = arrived - arrived % programs
        for j in range(FS0):
            p = p0 + j
            if j == 0:  # picked at the end of the frame before
                code = tl.load(hist + (p - 1) * n_rows + rows, mask=row_ok, other=0,
                               cache_modifier=".cg")
            else:  # every program picks it from the logits; the first stores it
                code = _pick(logits, rows, row_ok, Q, BLOCK_Q, ".cg")
                if pid == 0:
                    tl.store(hist + (p - 1) * n_rows + rows, code, mask=row_ok)
            acc = _window_sum(hist, p, n_rows, rows, row_ok, code, cond, j, lut, cols, ok, FS0,
                              DIM, ".cg")
            if RELU:
                acc = tl.maximum(acc, 0.0)
            tl.store(xa + rows[:, None] * DIM + cols[None, :], acc.to(xa.dtype.element_ty), mask=ok)
            target += programs
            _grid_sync(sync, target, spin_limit, failed)
            h = tl.maximum(_columns(xa, w1, b1, rows, row_ok, cols, col_ok, DIM, DIM, BLOCK_M,
                                    BLOCK_D, BLOCK_K), 0.0)
            tl.store(xb + rows[:, None] * DIM + cols[None, :], h.to(xb.dtype.element_ty), mask=ok)
            target += programs
            _grid_sync(sync, target, spin_limit, failed)
            h = tl.maximum(_columns(xb, w2, b2, rows, row_ok, cols, col_ok, DIM, DIM, BLOCK_M,
                                    BLOCK_D, BLOCK_K), 0.0)
            tl.store(xa + rows[:, None] * DIM + cols[None, :], h.to(xa.dtype.element_ty), mask=ok)
            target += programs
            _grid_sync(sync, target, spin_limit, failed)
            out = _columns(xa, w_out, b_out, rows, row_ok, qs, q_ok, DIM, Q, BLOCK_M, BLOCK_N,
                           BLOCK_K)
            if NOISE:  # _linear's: the same seed gives the same codes on either path
                out += temperature * _gumbel(seed, step, t0 + j, n_rows, rows, qs, Q)
            tl.store(logits + rows[:, None] * Q + qs[None, :], out,
                     mask=row_ok[:, None] & q_ok[None, :])
            target += programs
            _grid_sync(sync, target, spin_limit, failed)
        if pid == 0:
            tl.store(hist + (p0 + FS0 - 1) * n_rows + rows,
                     _pick(logits, rows, row_ok, Q, BLOCK_Q, ".cg"), mask=row_ok)


def recurrent_cell(gi: torch.Tensor, b_ih: torch.Tensor, gh: torch.Tensor, b_hh: torch.Tensor,
                   h: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """One GRU (c None) or LSTM step in one kernel: gi, gh [B, G * dim] gate products
    without their biases, b_ih, b_hh [G * dim] float32; updates h [B, dim] (and c) float32
    in place and returns h."""
    b, d = h.shape
    if interpreted():  # as few programs as triton's numel cap allows
        block_d = _pow2(d)
        block_m = max(1, min(_pow2(b), (1 << 20) // block_d))
    else:
        block_m, block_d = min(16, _pow2(b)), min(256, _pow2(d))
    grid = (triton.cdiv(b, block_m), triton.cdiv(d, block_d))
    _recurrent_cell[grid](gi, b_ih, gh, b_hh, h, h if c is None else c, b, D=d,
                          LSTM=c is not None, BLOCK_M=block_m, BLOCK_D=block_d)
    return h


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class SampleLevel:
    """The sample-level MLP of a Sampler's weights (`w`, x @ W layout) for `batch` streams.

    step(hist, p, j, cond0, t): the code at hist[p] for frame row j, cond0 [B, fs0, dim]
    float32; hist [lookback + n, B] int64 time-major; t the step's absolute index
    minus self.step0[0] (a device counter, so one recorded graph serves every frame).
    finish(hist, p): the last step's code into hist[p - 1].
    frame(hist, p0, cond0, t0): a bottom frame's fs0 steps and its finish: per step with
    the kernels above, or in one launch of _sample_frame (persistent, up to 8 streams).
    """

    def __init__(self, w, batch: int, device: torch.device, precision: str, seed: int,
                 temperature: float, persistent: bool = False):
        dtype = DTYPES[precision]
        as_w = lambda a: a.to(device=device, dtype=dtype).contiguous()  # noqa: E731
        self.lut = as_w(w.lut_rev)                                   # [q, fs0, dim]
        self.hidden = [(as_w(h), b.to(device, torch.float32)) for h, b in w.hidden]
        self.w_out = as_w(w.w_out)
        self.b_out = w.b_out.to(device, torch.float32)
        self.first_relu = w.first_relu
        q, fs0, dim = self.lut.shape
        self.q, self.fs0, self.dim, self.batch = q, fs0, dim, batch
        self.seed, self.temperature = seed, float(temperature)
        self.step0 = torch.zeros(1, dtype=torch.int64, device=device)
        self.x = [torch.empty(batch, dim, dtype=dtype, device=device) for _ in range(2)]
        self.logits = torch.empty(batch, q, dtype=torch.float32, device=device)
        # rows per program: up to 8 rows take _linear's few-row path, which spreads one
        # stream's weights over many programs; then tl.dot tiles of 16 to 64 rows
        self.block_m = _pow2(batch) if batch <= 8 else 16 if batch <= 16 else 64
        self.block_d = min(128, _pow2(dim))
        self.block_q = max(16, _pow2(q))
        if interpreted():  # one program per launch: the interpreter's cost is per program
            widest = _pow2(max(dim, q, 16))
            if batch > 8 or _pow2(batch) * widest * widest > 1 << 20:  # triton's numel cap
                self.block_m = max(16, min(_pow2(batch), (1 << 20) // widest))
            self.block_d = widest
        self.persistent = persistent
        if persistent:
            assert batch <= 8 and len(self.hidden) == 2, "one row block, two hidden layers"
            self.sync = torch.zeros(1, dtype=torch.int64, device=device)
            self.failed = torch.zeros(1, dtype=torch.int32, device=device)
            self.spin_limit = 1 << 22  # polls of a grid barrier: seconds, then give up
            # one program per SM at most, so that all are resident at once; the
            # interpreter runs programs one after another, so there only one
            self.size_persistent(1 if interpreted() else
                                 torch.cuda.get_device_properties(device).multi_processor_count)

    def size_persistent(self, programs: int) -> None:
        """The persistent kernel's grid (self.programs, at most `programs`) and tiles
        (self.frame_blocks): each program takes BLOCK_D of the dim columns of every hidden
        layer and BLOCK_N of the q output ones."""
        m, widest = _pow2(self.batch), 1 << 20  # triton's numel cap
        block_d = max(2, _pow2(triton.cdiv(self.dim, programs)))
        self.programs = triton.cdiv(self.dim, block_d)
        block_n = max(2, _pow2(triton.cdiv(self.q, self.programs)))
        if interpreted():  # as _linear's whole-tile interpreter path: the same sums
            block_d, block_n = max(16, block_d), max(16, block_n)
        else:
            widest = 4096  # a few registers per thread for the [rows, depth, columns] products
        block_k = max(1, min(max(16, _pow2(self.dim)), widest // (m * max(block_d, block_n))))
        self.frame_blocks = dict(BLOCK_M=m, BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_K=block_k)
        self.sync.zero_()  # the barriers' arrivals count in whole grids of this size

    def frame(self, hist: torch.Tensor, p0: int, cond0: torch.Tensor, t0: int) -> None:
        """The codes of one bottom frame, hist[p0 .. p0 + fs0 - 1], from its conditioning
        cond0 [B, fs0, dim] float32; t0 as step's t for its first code."""
        if not self.persistent:
            for j in range(self.fs0):
                self.step(hist, p0 + j, j, cond0, t0 + j)
            self.finish(hist, p0 + self.fs0)
            return
        (w1, b1), (w2, b2) = self.hidden
        _sample_frame[(self.programs,)](
            hist, p0, self.batch, cond0, self.lut, w1, b1, w2, b2, self.w_out, self.b_out,
            self.x[0], self.x[1], self.logits, self.seed, self.step0, t0, self.temperature,
            self.sync, self.spin_limit, self.failed, FS0=self.fs0, DIM=self.dim, Q=self.q,
            RELU=self.first_relu, NOISE=self.temperature > 0, BLOCK_Q=self.block_q,
            **self.frame_blocks)

    def check(self) -> None:
        """Raise if a grid barrier of the persistent kernel gave up since the start (its
        programs were not all running at once, e.g. another process held SMs); waits
        for the GPU."""
        if self.persistent and self.failed.item():
            raise Unavailable("the persistent generation kernel's programs did not all run at "
                               "once on the GPU (another process holding SMs?); generate with "
                               "persistent=false")

    def step(self, hist: torch.Tensor, p: int, j: int, cond0: torch.Tensor, t: int) -> None:
        b, m, block_d = self.batch, self.block_m, self.block_d
        grid = (triton.cdiv(b, m), triton.cdiv(self.dim, block_d))
        _first_layer[grid](hist, p, b, cond0, j, self.lut, self.x[0], self.logits,
                           FS0=self.fs0, DIM=self.dim, Q=self.q, PICK=j > 0,
                           RELU=self.first_relu, BLOCK_M=m, BLOCK_D=block_d,
                           BLOCK_Q=self.block_q)
        x = 0
        for w, bias in self.hidden:
            self._linear(self.x[x], w, bias, self.x[1 - x], t, relu=True)
            x = 1 - x
        self._linear(self.x[x], self.w_out, self.b_out, self.logits, t, relu=False)

    def finish(self, hist: torch.Tensor, p: int) -> None:
        grid = (triton.cdiv(self.batch, self.block_m),)
        _pick_kernel[grid](hist, p, self.batch, self.logits, Q=self.q, BLOCK_M=self.block_m,
                           BLOCK_Q=self.block_q)

    def _linear(self, x, w, bias, y, t: int, relu: bool) -> None:
        k, n = w.shape
        args = (x, w, bias, y, self.batch, self.seed, self.step0, t, self.temperature)
        options = dict(K=k, N=n, RELU=relu, NOISE=not relu and self.temperature > 0,
                       UPCAST=interpreted() and w.dtype != torch.float32, BLOCK_M=self.block_m)
        if interpreted():  # the kernel itself, whole rows and depth in one program
            grid = (triton.cdiv(self.batch, self.block_m), 1)
            _linear.fn[grid](*args, **options, BLOCK_N=max(16, _pow2(n)),
                             BLOCK_K=max(16, _pow2(k)))
            return
        grid = lambda meta: (triton.cdiv(self.batch, self.block_m),  # noqa: E731
                             triton.cdiv(n, meta["BLOCK_N"]))
        _linear[grid](*args, **options)
