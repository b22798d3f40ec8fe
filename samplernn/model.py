"""The N-tier SampleRNN model (Mehri et al., ICLR 2017, arXiv 1612.07837).

Tiers, bottom-up: a sample-level MLP, then one frame-level RNN tier for each
entry of `frame_sizes` (samples per frame, each dividing the next). Every tier
reads its previous frame of samples as real values on the code scale,
codes / (q_levels / 2) - 1 scaled to [-2, 2), whatever the quantization. The top
tier feeds that frame straight into its GRU/LSTM stack; a lower tier adds a
linear projection of it to the conditioning upsampled from the tier above. Each
frame tier feeds the tier below through r learned linear projections (r = its
frame size over the one below). The sample-level MLP reads the embeddings of the
previous `frame_sizes[0]` codes: L1(embeddings) + conditioning -> L2 -> ReLU ->
L3 -> ReLU -> logits over q_levels. Weights start as in the authors' code
(lib/ops.py): He-uniform for the linear layers, LeCun-uniform for the RNN input
and gate matrices and the output layer, orthogonal for the GRU's candidate matrix.

This is the authors' model (models/two_tier, models/three_tier of
github.com/soroushmehr/sampleRNN_ICLR2017) with one standard change: PyTorch's
GRU applies the reset gate after the recurrent matrix, r * (W h + b), where
theirs takes W (r * h). `DEVIATIONS` lists the options that rebuild the model of
samplernn 0.1 (before this was fixed); docs/fidelity.md measures each.

This module knows nothing of files, Hydra or W&B.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from .modelconfig import DEVIATIONS, SampleRNNConfig  # noqa: F401  (DEVIATIONS: re-exported)
from .quantization import dequantize


def frame_values(config: SampleRNNConfig) -> torch.Tensor:
    """[q_levels] float: the value each code is fed to the frame tiers as (see frame_input)."""
    codes = torch.arange(config.q_levels)
    if config.frame_input == "audio":
        return dequantize(codes, config.q_type, config.q_levels)
    return (codes.double() / (config.q_levels / 2) - 1.0).mul(2.0).float()


# -- initialisation: the authors' lib/ops.py ------------------------------------------------

def _uniform_std(weight: torch.Tensor, std: float) -> None:
    """Uniform with the given standard deviation (bound std * sqrt(3))."""
    nn.init.uniform_(weight, -std * math.sqrt(3.0), std * math.sqrt(3.0))


def _he(linear: nn.Linear) -> None:
    _uniform_std(linear.weight, math.sqrt(2.0 / linear.in_features))
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def _lecun_or_orthogonal(linear: nn.Linear) -> None:
    """The authors' default: LeCun-uniform, or orthogonal for a square matrix."""
    if linear.in_features == linear.out_features:
        nn.init.orthogonal_(linear.weight)
    else:
        _uniform_std(linear.weight, math.sqrt(1.0 / linear.in_features))
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def _init_rnn(rnn: nn.GRU | nn.LSTM, lstm: bool) -> None:
    """LeCun-uniform input and gate matrices, zero biases (LSTM forget gate: 3); a GRU's
    candidate matrix (PyTorch gate order r, z, n: the last block of weight_hh) orthogonal."""
    d = rnn.hidden_size
    with torch.no_grad():
        _uniform_std(rnn.weight_ih_l0, math.sqrt(1.0 / rnn.input_size))
        _uniform_std(rnn.weight_hh_l0, math.sqrt(1.0 / d))
        if not lstm:
            nn.init.orthogonal_(rnn.weight_hh_l0[2 * d:])
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()


def _lstm_forget_bias(rnn: nn.LSTM) -> None:
    """Gates are (input, forget, cell, output): the forget bias starts at 3, as the authors'."""
    d = rnn.hidden_size
    with torch.no_grad():
        rnn.bias_ih_l0[d:2 * d].fill_(3.0)
        rnn.bias_hh_l0[d:2 * d].zero_()


def _weight_normed(module: nn.Module, *names: str) -> nn.Module:
    """Weight norm over each output unit, g starting at the initial weights' norms."""
    for name in names or ("weight",):
        _weight_norm(module, name)
    return module


class FrameTier(nn.Module):
    """One frame-level tier: frames [B, N, frame_size] -> conditioning [B, N * ratio, dim].

    The top tier (`top=True`) feeds its frames straight into the RNN when
    config.top_input is "direct"; every other tier adds Linear(frame_size, dim)(frames)
    to the conditioning from above first.
    """

    def __init__(self, config: SampleRNNConfig, frame_size: int, ratio: int, top: bool):
        super().__init__()
        self.frame_size, self.ratio = frame_size, ratio
        self.lstm = config.rnn_type == "lstm"
        dim, authors = config.dim, config.init == "authors"
        self.input = None
        if not (top and config.top_input == "direct"):
            self.input = nn.Linear(frame_size, dim)
            if authors:
                _he(self.input)
        self.n_in = dim if self.input is not None else frame_size  # the stack's input size
        self.skip_connections = config.skip_connections
        rnn_class = nn.LSTM if self.lstm else nn.GRU
        self.rnns = nn.ModuleList()
        for layer in range(config.n_rnn):
            n_in = self.n_in if layer == 0 else dim + (self.n_in if self.skip_connections else 0)
            rnn = rnn_class(n_in, dim, batch_first=True)
            if authors:
                _init_rnn(rnn, self.lstm)
            if self.lstm:
                _lstm_forget_bias(rnn)
            self.rnns.append(rnn)
        n_out = config.n_rnn if config.skip_connections else 1
        # r separate projections dim -> dim, stored as one [r * dim, n_out * dim] linear.
        self.upsample = nn.Linear(n_out * dim, ratio * dim)
        if authors:
            _he(self.upsample)
        if config.weight_norm:
            for module in [self.input, self.upsample]:
                if module is not None:
                    _weight_normed(module)
            for rnn in self.rnns:
                _weight_normed(rnn, "weight_ih_l0", "weight_hh_l0")
        n_state = config.n_rnn * (2 if self.lstm else 1)
        h0 = torch.zeros(n_state, 1, dim)
        if config.learn_h0:
            self.h0 = nn.Parameter(h0)
        else:
            self.register_buffer("h0", h0)

    def initial_hidden(self, batch_size: int) -> torch.Tensor:
        """[n_rnn * (2 if lstm else 1), B, dim]: GRU h per layer; LSTM h per layer then c per layer."""
        return self.h0.expand(-1, batch_size, -1)

    def forward(self, frames: torch.Tensor, cond: torch.Tensor | None, hidden: torch.Tensor,
                label: torch.Tensor | None = None):
        """frames [B, N, frame_size] float, cond [B, N, dim] or None (top tier), hidden as
        initial_hidden, label [B, n_in] (the same every frame: a label) or [B, N, n_in] (per
        frame: label and features) or None: what the conditioning adds to the RNN input.
        Returns (out [B, N * ratio, dim], hidden)."""
        x0 = frames if self.input is None else self.input(frames)
        if cond is not None:
            x0 = x0 + cond
        if label is not None:
            x0 = x0 + (label if label.dim() == 3 else label[:, None])
        n = len(self.rnns)
        x, outputs, states = x0, [], []
        for layer, rnn in enumerate(self.rnns):
            if layer and self.skip_connections:
                x = torch.cat([x, x0], dim=-1)
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
        dim = config.dim
        self.frame_size = config.frame_sizes[0]
        self.first_relu = config.mlp_first_relu
        self.embedding = nn.Embedding(config.q_levels, config.emb_dim)  # N(0, 1), as the authors'
        self.input = nn.Linear(self.frame_size * config.emb_dim, dim, bias=False)
        self.hidden = nn.ModuleList([nn.Linear(dim, dim) for _ in range(2)])
        self.output = nn.Linear(dim, config.q_levels)
        if config.init == "authors":
            for layer in [self.input, *self.hidden]:
                _he(layer)
            _lecun_or_orthogonal(self.output)
        if config.weight_norm:
            for layer in [self.input, *self.hidden, self.output]:
                _weight_normed(layer)

    def forward(self, prev_codes: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """prev_codes [B, T, frame_size] long, cond [B, T, dim] -> logits [B, T, q_levels].

        The first layer, input(embedding of the window flattened), is computed as a sum of
        one table row per window position: table[j * q + c] = what code c at position j
        adds (embedding x that position's weights). Same function, without the
        [B, T, frame_size * emb_dim] activation or its matrix product (most of the
        2-tier model's training FLOPs).
        """
        b, t, f = prev_codes.shape
        emb = self.embedding.weight                                  # [q, e]
        q, e = emb.shape
        w = self.input.weight.view(-1, f, e)                         # [dim, f, e]
        table = torch.einsum("qe,dfe->fqd", emb, w).reshape(f * q, -1)
        index = prev_codes + torch.arange(0, f * q, q, device=prev_codes.device)
        x = F.embedding_bag(index.reshape(-1, f), table, mode="sum").view(b, t, -1) + cond
        if self.first_relu:
            x = torch.relu(x)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.output(x)


class LabelEmbedding(nn.Module):
    """Global conditioning: a learned vector per label (N(0, 1), as the code embedding),
    projected by one linear map to each place it enters; the projections are added there,
    the same at every time step. The projections start at zero (with weight norm: its gain
    g, the direction LeCun-uniform), so a conditioned model starts as the unconditioned one
    and learns what the labels add; random unit-variance offsets at the start cost more than
    the labels gave in 400 steps (docs/conditioning.md)."""

    def __init__(self, config: SampleRNNConfig, widths: list[int]):
        super().__init__()
        self.table = nn.Embedding(config.n_labels, config.label_dim)
        self.into = nn.ModuleList(nn.Linear(config.label_dim, w, bias=False) for w in widths)
        for linear in self.into:
            _uniform_std(linear.weight, math.sqrt(1.0 / config.label_dim))
            if config.weight_norm:
                _weight_normed(linear)
                nn.init.zeros_(linear.parametrizations.weight.original0)
            else:
                nn.init.zeros_(linear.weight)

    def vectors(self, label: torch.Tensor) -> list[torch.Tensor]:
        """label: LongTensor [B] (label indices), or float [B, n_labels] (weights of a mix
        of embeddings) -> per place, [B, width]."""
        if label.dtype.is_floating_point:
            embedding = label.to(self.table.weight.dtype) @ self.table.weight
        else:
            embedding = self.table(label)
        return [linear(embedding) for linear in self.into]


class FeatureStack(nn.Module):
    """Local conditioning: feature frames [B, F + 2 * radius, n_features] -> per place it
    enters, [B, F, width], one vector per feature frame (the frame's centre and `radius`
    frames on each side: valid convolutions, so the caller gives the context). The
    projections start at zero, as the labels' (a conditioned model starts as the
    unconditioned one)."""

    def __init__(self, config: SampleRNNConfig, widths: list[int]):
        super().__init__()
        d, k = config.feature_dim, config.feature_kernel
        self.radius = config.feature_radius
        self.convs = nn.ModuleList(nn.Conv1d(config.n_features if i == 0 else d, d, k)
                                   for i in range(config.feature_layers))
        self.into = nn.ModuleList(nn.Linear(d if self.convs else config.n_features, w)
                                  for w in widths)
        for conv in self.convs:
            _uniform_std(conv.weight, math.sqrt(2.0 / (conv.in_channels * k)))  # He
            nn.init.zeros_(conv.bias)
        for linear in self.into:
            _uniform_std(linear.weight, math.sqrt(1.0 / linear.in_features))
            nn.init.zeros_(linear.bias)
            if config.weight_norm:
                _weight_normed(linear)
                nn.init.zeros_(linear.parametrizations.weight.original0)
            else:
                nn.init.zeros_(linear.weight)

    def forward(self, feats: torch.Tensor) -> list[torch.Tensor]:
        x = feats.transpose(1, 2)
        for conv in self.convs:
            x = torch.relu(conv(x))
        x = x.transpose(1, 2)
        return [linear(x) for linear in self.into]


class SampleRNN(nn.Module):
    """logits, hidden = model(codes, hidden).

    codes [B, lookback + T] long with T a multiple of lookback (= frame_sizes[-1]);
    logits [B, T, q_levels], where logits[:, t] predicts codes[:, lookback + t]
    from codes[:, :lookback + t] only. hidden is a list with one tensor per frame
    tier (bottom-up), each [n_state, B, dim]; None starts from the initial state. A
    conditioned model (config.conditioned) also takes `label`, LongTensor [B] or the
    weights [B, n_labels] of a mix of label embeddings. A model with features
    (config.has_features) takes `feats` [B, W + 2 * radius, n_features], the normalised
    feature frames from `radius` before the one that holds the first target to `radius`
    after the last (W frames), and `phase` LongTensor [B]: where the first target lies in
    its frame (samples, a multiple of the top frame size; data.py makes both).
    """

    def __init__(self, config: SampleRNNConfig):
        super().__init__()
        self.config = config
        fs = config.frame_sizes
        ratios = [fs[0]] + [above // below for below, above in zip(fs, fs[1:])]
        self.tiers = nn.ModuleList(FrameTier(config, f, r, top=k == len(fs) - 1)
                                   for k, (f, r) in enumerate(zip(fs, ratios)))
        self.sample_mlp = SampleMLP(config)
        self.register_buffer("frame_values", frame_values(config), persistent=False)
        self.labels = None
        if config.conditioned:
            self.labels = LabelEmbedding(config, self._widths(config.label_into))
        self.features = None
        if config.has_features:
            self.features = FeatureStack(config, self._widths(config.features_into))

    def _widths(self, into) -> list[int]:
        """The widths of the places conditioning enters: every tier's RNN input and the
        sample level's (into="all"), or the top tier's alone."""
        if into == "all":
            return [t.n_in for t in self.tiers] + [self.config.dim]
        return [self.tiers[-1].n_in]

    def _places(self, vectors: list) -> list:
        """One entry per place (tiers bottom-up, then the sample level), from the vectors
        of the places a conditioning enters."""
        n = len(self.tiers) + 1
        return vectors if len(vectors) == n else [None] * (n - 2) + vectors + [None]

    def label_vectors(self, label: torch.Tensor | None) -> list:
        """What the label adds at each place: per tier (bottom-up) to its RNN input [B, n_in]
        or None, and last to the sample-level MLP's input [B, dim] or None."""
        n = len(self.tiers) + 1
        if self.labels is None:
            if label is not None:
                raise ValueError("this model was trained without labels; give label=None")
            return [None] * n
        if label is None:
            raise ValueError(f"this model is conditioned on {self.config.n_labels} labels; "
                             "give each row's label")
        return self._places(self.labels.vectors(label))

    def feature_vectors(self, feats: torch.Tensor | None) -> list:
        """What the features add at each place, per feature frame: [B, F, width] or None,
        from feats [B, F + 2 * radius, n_features] (generation precomputes them once)."""
        n = len(self.tiers) + 1
        if self.features is None:
            if feats is not None:
                raise ValueError("this model was trained without features; give feats=None")
            return [None] * n
        if feats is None:
            raise ValueError(f"this model is conditioned on {self.config.n_features} feature "
                             "bands; give the feature frames")
        return self._places(self.features(feats))

    def _conditioning(self, label, feats, phase, n_top: int) -> list:
        """Per place what the label and the features add: [B, width] (a label alone, the
        same every frame), [B, n_top, width] (per top frame) or None."""
        labels = self.label_vectors(label)
        if self.features is None and feats is None:
            return labels
        per_frame = self.feature_vectors(feats)
        if phase is None:
            raise ValueError("give phase with feats: where the first target lies in its frame")
        hop, lb = self.config.feature_hop, self.lookback
        phase = phase.to(feats.device).view(-1, 1)
        index = (phase + torch.arange(n_top, device=feats.device) * lb) // hop  # [B, n_top]
        out = []
        for lab, vec in zip(labels, per_frame):
            if vec is not None:
                vec = torch.gather(vec, 1, index[:, :, None].expand(-1, -1, vec.shape[-1]))
                if lab is not None:
                    vec = vec + lab[:, None]
            out.append(vec if vec is not None else lab)
        return out

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

    def forward(self, codes: torch.Tensor, hidden: list[torch.Tensor] | None = None,
                label: torch.Tensor | None = None, feats: torch.Tensor | None = None,
                phase: torch.Tensor | None = None):
        vectors = self._conditioning(label, feats, phase, codes.shape[1] // self.lookback - 1)
        cond, new_hidden = self._frame_tiers(codes, hidden, vectors)
        if vectors[-1] is not None:
            v = vectors[-1]
            cond = cond + (v[:, None] if v.dim() == 2 else v.repeat_interleave(self.lookback, 1))
        f = self.sample_mlp.frame_size
        lookback = self.lookback
        prev = codes[:, lookback - f:codes.shape[1] - 1].unfold(1, f, 1)  # [B, T, f]
        return self.sample_mlp(prev, cond), new_hidden

    def advance(self, codes: torch.Tensor, hidden: list[torch.Tensor] | None = None,
                label: torch.Tensor | None = None, feats: torch.Tensor | None = None,
                phase: torch.Tensor | None = None):
        """The state after `codes` (as for forward) without predicting them: the frame tiers
        alone, a fraction of the cost. Warms the state on a prime."""
        vectors = self._conditioning(label, feats, phase, codes.shape[1] // self.lookback - 1)
        return self._frame_tiers(codes, hidden, vectors)[1]

    def _frame_tiers(self, codes: torch.Tensor, hidden: list[torch.Tensor] | None,
                     vectors: list):
        """-> (the sample-level conditioning [B, T, dim], the new hidden)."""
        lookback = self.lookback
        b, length = codes.shape
        t = length - lookback
        if t <= 0 or t % lookback:
            raise ValueError(f"codes of length {length} give T={t} predicted samples; T must be a "
                             f"positive multiple of the top frame size {lookback}")
        if hidden is None:
            hidden = self.initial_hidden(b)
        dtype = self.sample_mlp.embedding.weight.dtype
        values = self.frame_values.to(dtype)[codes]  # [B, lookback + T]
        cond, new_hidden = None, [None] * len(self.tiers)
        for k in reversed(range(len(self.tiers))):
            tier = self.tiers[k]
            f = tier.frame_size
            frames = values[:, lookback - f:lookback - f + t].reshape(b, t // f, f)
            v = vectors[k]
            if v is not None and v.dim() == 3 and f != lookback:  # per top frame -> per frame
                v = v.repeat_interleave(lookback // f, 1)
            cond, new_hidden[k] = tier(frames, cond, hidden[k], v)
        return cond, new_hidden

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
