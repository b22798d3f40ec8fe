"""The frame-level tiers, stepped incrementally in array arithmetic (NumPy or torch).

Each tier steps once per frame of its own, at the first sample of that frame: it reads
the frame's codes (as the model's frame values) plus the conditioning the tier above
gave for this sub-frame, and gives the tier below one vector per sub-frame of its own.
The numpy, torch and triton backends step their frame tiers here; native.c does the same.
"""

import numpy as np


def _sigmoid(xp, x):
    return 0.5 * xp.tanh(0.5 * x) + 0.5


class FrameTiers:
    """w: the backend's Weights; state: its recurrent state arrays (updated in place, as a
    CUDA graph needs); labels: what the streams' labels add per tier and, last, to the
    sample level ([B, width] or None; Backend.labels); matmul(x, w); cell(x, weights, h, c)
    -> h: a recurrent layer's step written into h (and c) in place (default: the arithmetic
    below in xp)."""

    def __init__(self, w, state: list, lookback: int, xp, matmul=None, cell=None, labels=None):
        self.w, self.state, self.lookback, self.xp = w, state, lookback, xp
        self.labels = labels or [None] * (len(w.tiers) + 1)
        self.matmul = matmul or (np.matmul if xp is np else xp.matmul)
        self.cell = cell or self._cell

    def step(self, hist, t: int, conds: list) -> None:
        """Step every tier whose frame starts at step t (counted from hist[lookback]):
        conds[k] becomes tier k's conditioning [B, ratio, dim] for the tier below (for the
        sample level, with its label's share added)."""
        tiers, pos = self.w.tiers, self.lookback + t
        for k in reversed(range(len(tiers))):
            f = tiers[k]["frame_size"]
            if t % f:
                continue
            above = None
            if k + 1 < len(tiers):
                above = conds[k + 1][:, (t % tiers[k + 1]["frame_size"]) // f]
            conds[k] = self._tier(k, self.w.frame_values[hist[pos - f:pos]].T, above)
            if k == 0 and self.labels[-1] is not None:
                conds[0] = conds[0] + self.labels[-1][:, None]

    def _tier(self, k: int, frame, cond):
        """frame [B, frame_size] float, cond [B, dim] or None -> conditioning [B, ratio, dim]."""
        xp, w, tier, mm = self.xp, self.w, self.w.tiers[k], self.matmul
        x0 = frame if tier["w_in"] is None else mm(frame, tier["w_in"]) + tier["b_in"]
        if cond is not None:
            x0 = x0 + cond
        if self.labels[k] is not None:
            x0 = x0 + self.labels[k]
        outputs, x = [], x0
        state = self.state[k]
        for layer, weights in enumerate(tier["layers"]):
            if layer and w.skip:  # later layers also read the stack's input
                x = xp.concatenate([x, x0], -1)
            c = state[w.n_rnn + layer] if w.lstm else None
            x = self.cell(x, weights, state[layer], c)
            outputs.append(x)
        top = xp.concatenate(outputs, -1) if w.skip else x
        out = mm(top, tier["w_up"]) + tier["b_up"]
        return out.reshape(out.shape[0], tier["ratio"], -1)

    def _cell(self, x, weights, h, c):
        """One GRU (c None) or LSTM layer's step from input x: the new h [B, d], written
        into h (and c) in place."""
        xp, mm, (w_ih, b_ih, w_hh, b_hh) = self.xp, self.matmul, weights
        d = h.shape[-1]
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
