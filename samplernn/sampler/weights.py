"""The model's effective weights as a backend's arrays (weight norm folded in), laid out
for x @ W, and the sample-level MLP's first layer as lookup tables; which of them a
backend stores in lower precision, and the model as it then computes (`as_stored`)."""

import dataclasses
from operator import attrgetter

import numpy as np
import torch
from torch.nn.utils import parametrize

from .. import native
from ..errors import ConfigError
from ..model import SampleRNN


class Weights:
    """Per tier its input, recurrent and upsampling weights; the sample-level MLP's first
    layer as one table per window position (embedding x weights: what code c adds to the
    layer's input k + 1 steps after it, `lut_rev` [q, fs0, dim]), its hidden and output
    layers; and what each code is fed to the frame tiers as (`frame_values` [q])."""

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
            self.lut_rev = to_array(torch.stack(luts[::-1], dim=1).contiguous())  # [q, fs0, dim]
            self.hidden = [(t(layer.weight), v(layer.bias)) for layer in mlp.hidden]
            self.w_out, self.b_out = t(mlp.output.weight), v(mlp.output.bias)
            self.frame_values = to_array(model.frame_values.to(emb.dtype))


def lookup_sums(w: Weights, history, lookback: int):
    """The sample-level MLP's first-layer input from past codes, as running sums of lookup
    rows (the Python and C loops add each new code's rows once):
    acc [B, 2 * fs0, dim], row r for step r of the current bottom frame and the next, from
    the last fs0 codes of history [lookback, B]."""
    fs0, lut = w.tiers[0]["frame_size"], w.lut_rev
    shape = (history.shape[1], 2 * fs0, lut.shape[-1])
    acc = np.zeros(shape, lut.dtype) if isinstance(lut, np.ndarray) else \
        torch.zeros(shape, dtype=lut.dtype, device=lut.device)
    for i in range(fs0):  # the last fs0 codes before the start feed its first steps
        acc[:, :i + 1] += lut[history[lookback - fs0 + i]][:, fs0 - 1 - i:]
    return acc


def stored_matrices(model: SampleRNN) -> list[str]:
    """The matrices a backend stores in its `precision`, by parameter name: each tier's
    input, recurrent and upsampling weights, the sample-level MLP's hidden and output
    layers. The lookup tables (the MLP's first layer), biases, h0 and what labels and
    features add stay float32."""
    names = []
    for k, tier in enumerate(model.tiers):
        names += [f"tiers.{k}.input.weight"] if tier.input is not None else []
        for r in range(len(tier.rnns)):
            names += [f"tiers.{k}.rnns.{r}.weight_ih_l0", f"tiers.{k}.rnns.{r}.weight_hh_l0"]
        names.append(f"tiers.{k}.upsample.weight")
    hidden = [f"sample_mlp.hidden.{j}.weight" for j in range(len(model.sample_mlp.hidden))]
    return names + hidden + ["sample_mlp.output.weight"]


def as_stored(model: SampleRNN, precision: str) -> SampleRNN:
    """The model as the native kernel computes with its matrices stored in `precision`
    ("fp32": the model itself; "bf16", or "int8" with a scale per output column: a model
    without weight norm holding the effective weights, those matrices rounded as
    native.stored rounds them). Its teacher-forced NLL is what the precision costs."""
    if precision not in native.PRECISIONS:
        raise ConfigError(f"weights={precision!r}: the matrices are rounded as the native "
                          f"(CPU) kernel stores them: {', '.join(native.PRECISIONS)}")
    if precision == "fp32":
        return model
    plain = SampleRNN(dataclasses.replace(model.config, weight_norm=False))
    parameter = next(model.parameters())
    plain.to(parameter.device, parameter.dtype).train(model.training)
    rounded = set(stored_matrices(model))
    with torch.no_grad():
        state = {}
        for name in plain.state_dict():
            w = attrgetter(name)(model).detach()  # through the weight norm, if any
            if name in rounded:  # native.stored takes x @ w's layout [n_in, n_out]
                w = torch.from_numpy(native.stored(w.float().t().cpu().numpy(), precision)).t()
            state[name] = w.to(parameter.device, parameter.dtype)
        plain.load_state_dict(state)
    return plain
