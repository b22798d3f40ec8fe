"""The N-tier SampleRNN model (Mehri et al., ICLR 2017, arXiv 1612.07837).

Tiers, bottom-up: a sample-level MLP, then one frame-level RNN tier for each
entry of `frame_sizes` (samples per frame, each dividing the next). A frame
tier reads its previous frame of real-valued samples plus the conditioning
upsampled from the tier above, runs a GRU/LSTM stack, and feeds the tier below
through r learned linear projections (r = its frame size over the one below).
The sample-level MLP reads the embeddings of the previous `frame_sizes[0]`
codes plus its conditioning and ends in logits over `q_levels`.

This module knows nothing of files, Hydra or W&B.
"""

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from .quantize import Q_TYPES, dequantize

RNN_TYPES = ("gru", "lstm")


@dataclass
class SampleRNNConfig:
    """Everything that rebuilds a model; stored in every checkpoint.

    frame_sizes: samples per frame of each frame-level tier, listed bottom-up,
        each dividing the next. [16] is 2-tier, [2, 8] 3-tier, [2, 8, 32] 4-tier.
    """

    frame_sizes: list[int] = field(default_factory=lambda: [2, 8])
    dim: int = 1024
    n_rnn: int = 1
    rnn_type: str = "gru"
    skip_connections: bool = False
    emb_dim: int = 256
    q_levels: int = 256
    q_type: str = "linear"
    learn_h0: bool = True
    weight_norm: bool = True

    def __post_init__(self):
        self.frame_sizes = [int(f) for f in self.frame_sizes]
        if not self.frame_sizes:
            raise ValueError("model.frame_sizes is empty; give at least one frame size, e.g. [16]")
        if any(f < 1 for f in self.frame_sizes):
            raise ValueError(f"model.frame_sizes={self.frame_sizes} must be positive integers")
        for below, above in zip(self.frame_sizes, self.frame_sizes[1:]):
            if above % below or above == below:
                raise ValueError(
                    f"model.frame_sizes={self.frame_sizes}: {above} is not a multiple of {below} "
                    "greater than it; list frame sizes bottom-up, each dividing the next "
                    "(e.g. [2, 8] or [2, 8, 32])")
        if self.rnn_type not in RNN_TYPES:
            raise ValueError(f"model.rnn_type={self.rnn_type!r} is unknown; use one of {RNN_TYPES}")
        if self.q_type not in Q_TYPES:
            raise ValueError(f"model.q_type={self.q_type!r} is unknown; use one of {Q_TYPES}")
        if self.q_levels < 2:
            raise ValueError(f"model.q_levels={self.q_levels} must be at least 2")
        for name in ("dim", "n_rnn", "emb_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}={getattr(self, name)} must be at least 1")

    @property
    def n_tiers(self) -> int:
        return len(self.frame_sizes) + 1

    def to_dict(self) -> dict:
        return asdict(self)


def _maybe_wn(module: nn.Module, enabled: bool, *names: str) -> nn.Module:
    for name in names or ("weight",):
        if enabled:
            _weight_norm(module, name)
    return module


class FrameTier(nn.Module):
    """One frame-level tier: frames [B, N, frame_size] -> conditioning [B, N * ratio, dim]."""

    def __init__(self, config: SampleRNNConfig, frame_size: int, ratio: int):
        super().__init__()
        self.frame_size, self.ratio = frame_size, ratio
        self.lstm = config.rnn_type == "lstm"
        dim, wn = config.dim, config.weight_norm
        self.input = _maybe_wn(nn.Linear(frame_size, dim), wn)
        rnn_class = nn.LSTM if self.lstm else nn.GRU
        self.rnns = nn.ModuleList()
        for _ in range(config.n_rnn):
            rnn = rnn_class(dim, dim, batch_first=True)
            if self.lstm:  # gates are (input, forget, cell, output): forget bias starts at 3
                with torch.no_grad():
                    rnn.bias_ih_l0[dim:2 * dim].fill_(3.0)
                    rnn.bias_hh_l0[dim:2 * dim].zero_()
            self.rnns.append(_maybe_wn(rnn, wn, "weight_ih_l0", "weight_hh_l0"))
        n_out = config.n_rnn if config.skip_connections else 1
        self.skip_connections = config.skip_connections
        # r separate projections dim -> dim, stored as one [r * dim, n_out * dim] linear.
        self.upsample = _maybe_wn(nn.Linear(n_out * dim, ratio * dim), wn)
        n_state = config.n_rnn * (2 if self.lstm else 1)
        h0 = torch.zeros(n_state, 1, dim)
        if config.learn_h0:
            self.h0 = nn.Parameter(h0)
        else:
            self.register_buffer("h0", h0)

    def initial_hidden(self, batch_size: int) -> torch.Tensor:
        """[n_rnn * (2 if lstm else 1), B, dim]: GRU h per layer; LSTM h per layer then c per layer."""
        return self.h0.expand(-1, batch_size, -1)

    def forward(self, frames: torch.Tensor, cond: torch.Tensor | None, hidden: torch.Tensor):
        """frames [B, N, frame_size] float, cond [B, N, dim] or None, hidden as initial_hidden.

        Returns (out [B, N * ratio, dim], hidden).
        """
        x = self.input(frames)
        if cond is not None:
            x = x + cond
        n = len(self.rnns)
        outputs, states = [], []
        for layer, rnn in enumerate(self.rnns):
            if self.lstm:
                state = (hidden[layer:layer + 1].contiguous(), hidden[n + layer:n + layer + 1].contiguous())
                x, (h, c) = rnn(x, state)
                states.append((h, c))
            else:
                x, h = rnn(x, hidden[layer:layer + 1].contiguous())
                states.append((h,))
            outputs.append(x)
        hidden = torch.cat([s[0] for s in states] + ([s[1] for s in states] if self.lstm else []))
        top = torch.cat(outputs, dim=-1) if self.skip_connections else x
        out = self.upsample(top)  # [B, N, ratio * dim]
        b, n_frames, _ = out.shape
        return out.reshape(b, n_frames * self.ratio, -1), hidden


class SampleMLP(nn.Module):
    """Sample-level MLP: previous frame_size codes + conditioning -> logits over q_levels."""

    def __init__(self, config: SampleRNNConfig):
        super().__init__()
        dim, wn = config.dim, config.weight_norm
        self.frame_size = config.frame_sizes[0]
        self.embedding = nn.Embedding(config.q_levels, config.emb_dim)
        self.input = _maybe_wn(nn.Linear(self.frame_size * config.emb_dim, dim, bias=False), wn)
        self.hidden = nn.ModuleList([_maybe_wn(nn.Linear(dim, dim), wn) for _ in range(2)])
        self.output = _maybe_wn(nn.Linear(dim, config.q_levels), wn)

    def forward(self, prev_codes: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """prev_codes [B, T, frame_size] long, cond [B, T, dim] -> logits [B, T, q_levels]."""
        b, t, f = prev_codes.shape
        x = self.input(self.embedding(prev_codes).reshape(b, t, -1)) + cond
        x = torch.relu(x)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.output(x)


class SampleRNN(nn.Module):
    """logits, hidden = model(codes, hidden).

    codes [B, lookback + T] long with T a multiple of lookback (= frame_sizes[-1]);
    logits [B, T, q_levels], where logits[:, t] predicts codes[:, lookback + t]
    from codes[:, :lookback + t] only. hidden is a list with one tensor per frame
    tier (bottom-up), each [n_state, B, dim]; None starts from the initial state.
    """

    def __init__(self, config: SampleRNNConfig):
        super().__init__()
        self.config = config
        fs = config.frame_sizes
        ratios = [fs[0]] + [above // below for below, above in zip(fs, fs[1:])]
        self.tiers = nn.ModuleList(FrameTier(config, f, r) for f, r in zip(fs, ratios))
        self.sample_mlp = SampleMLP(config)

    @property
    def lookback(self) -> int:
        return self.config.frame_sizes[-1]

    def initial_hidden(self, batch_size: int) -> list[torch.Tensor]:
        return [tier.initial_hidden(batch_size) for tier in self.tiers]

    def reset_hidden(self, hidden: list[torch.Tensor] | None, reset: torch.Tensor) -> list[torch.Tensor]:
        """Rows where reset [B] is True go back to the initial state; others keep theirs."""
        initial = self.initial_hidden(reset.shape[0])
        if hidden is None:
            return initial
        mask = reset.view(1, -1, 1).to(hidden[0].device)
        return [torch.where(mask, h0, h) for h0, h in zip(initial, hidden)]

    def forward(self, codes: torch.Tensor, hidden: list[torch.Tensor] | None = None):
        lookback = self.lookback
        b, length = codes.shape
        t = length - lookback
        if t <= 0 or t % lookback:
            raise ValueError(f"codes of length {length} give T={t} predicted samples; T must be a "
                             f"positive multiple of the top frame size {lookback}")
        if hidden is None:
            hidden = self.initial_hidden(b)
        dtype = self.sample_mlp.embedding.weight.dtype
        wav = dequantize(codes, self.config.q_type, self.config.q_levels).to(dtype)
        cond, new_hidden = None, [None] * len(self.tiers)
        for k in reversed(range(len(self.tiers))):
            tier = self.tiers[k]
            f = tier.frame_size
            frames = wav[:, lookback - f:lookback - f + t].reshape(b, t // f, f)
            cond, new_hidden[k] = tier(frames, cond, hidden[k])
        f = self.sample_mlp.frame_size
        prev = codes[:, lookback - f:length - 1].unfold(1, f, 1)  # [B, T, f]
        return self.sample_mlp(prev, cond), new_hidden

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
