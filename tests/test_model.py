"""The model's contract: shapes, causality, chunked == full, quantization, config errors."""

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from samplernn import SampleRNN, SampleRNNConfig, dequantize, nll_bits, quantize, silence_code
from samplernn.model import DEVIATIONS

FRAME_SIZES = {2: [16], 3: [2, 8], 4: [2, 8, 32], 5: [2, 4, 8, 16]}


def tiny(frame_sizes, rnn_type="gru", skip=False, n_rnn=2, **kw) -> SampleRNN:
    torch.manual_seed(0)
    cfg = SampleRNNConfig(frame_sizes=frame_sizes, dim=24, n_rnn=n_rnn, rnn_type=rnn_type,
                          skip_connections=skip, emb_dim=8, q_levels=32, **kw)
    return SampleRNN(cfg).eval()


@pytest.mark.parametrize("tiers", sorted(FRAME_SIZES))
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("skip", [False, True])
def test_shapes(tiers, rnn_type, skip):
    model = tiny(FRAME_SIZES[tiers], rnn_type, skip)
    assert model.config.n_tiers == tiers
    assert model.lookback == FRAME_SIZES[tiers][-1]
    t = 2 * model.lookback
    codes = torch.randint(0, 32, (3, model.lookback + t))
    logits, hidden = model(codes)
    assert logits.shape == (3, t, 32)
    assert len(hidden) == tiers - 1
    n_state = 2 * (2 if rnn_type == "lstm" else 1)
    assert all(h.shape == (n_state, 3, 24) for h in hidden)


@pytest.mark.parametrize("tiers", [2, 3, 4])
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_causality(tiers, rnn_type):
    """Changing the code at position p changes no logits that predict positions <= p."""
    model = tiny(FRAME_SIZES[tiers], rnn_type, skip=True)
    lb = model.lookback
    t = 3 * lb
    torch.manual_seed(1)
    codes = torch.randint(0, 32, (1, lb + t))
    with torch.no_grad():
        base, _ = model(codes)
        for p in [0, lb - 1, lb, lb + 1, lb + t // 2, lb + t - 1]:
            changed = codes.clone()
            changed[0, p] = (changed[0, p] + 7) % 32
            out, _ = model(changed)
            diff = (out - base).abs().amax(dim=-1)[0]  # [T]; logits[t] predicts position lb + t
            n_before = max(p - lb + 1, 0)  # predictions of positions <= p
            assert diff[:n_before].max().item() == 0.0 if n_before else True
            if n_before < t:  # the prediction of position p + 1 must see the change
                assert diff[n_before].item() > 0


@pytest.mark.parametrize("tiers", [2, 3, 4])
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_chunked_equals_full(tiers, rnn_type):
    model = tiny(FRAME_SIZES[tiers], rnn_type, skip=tiers == 3)
    lb = model.lookback
    k, chunk = 4, 2 * lb
    codes = torch.randint(0, 32, (2, lb + k * chunk))
    with torch.no_grad():
        full, _ = model(codes)
        hidden, parts = None, []
        for i in range(k):
            piece = codes[:, i * chunk:i * chunk + lb + chunk]
            logits, hidden = model(piece, hidden)
            parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("first_relu", [False, True])
def test_the_first_layer_as_table_sums_is_the_linear_layer_over_the_window(first_relu):
    """SampleMLP sums one row per window position of a table built from the embedding and
    the input layer's weights: values and every gradient equal Linear(embedding flattened),
    the layer as written in the paper (float64, so the two orders of summation agree)."""
    model = tiny([16], mlp_first_relu=first_relu).double().train()
    mlp = model.sample_mlp
    codes = torch.randint(0, 32, (3, 7, 16), generator=torch.Generator().manual_seed(1))
    cond = torch.randn(3, 7, 24, dtype=torch.float64)

    def as_written(prev_codes, cond):
        x = mlp.input(mlp.embedding(prev_codes).flatten(2)) + cond
        x = torch.relu(x) if first_relu else x
        for layer in mlp.hidden:
            x = torch.relu(layer(x))
        return mlp.output(x)

    params = list(mlp.parameters())
    ours, theirs = mlp(codes, cond), as_written(codes, cond)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(ours.square().sum(), params),
                    torch.autograd.grad(theirs.square().sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_reset_hidden_restores_initial_state_per_row():
    model = tiny([2, 8], learn_h0=True)
    with torch.no_grad():
        for tier in model.tiers:
            tier.h0.normal_()
    codes = torch.randint(0, 32, (2, 8 + 16))
    with torch.no_grad():
        _, hidden = model(codes)
        reset = model.reset_hidden(hidden, torch.tensor([True, False]))
        initial = model.initial_hidden(2)
        for r, h, h0 in zip(reset, hidden, initial):
            torch.testing.assert_close(r[:, 0], h0[:, 0])
            torch.testing.assert_close(r[:, 1], h[:, 1])


@pytest.mark.parametrize("q_type", ["linear", "mu-law"])
@pytest.mark.parametrize("q_levels", [256, 1024])
def test_quantize_round_trip(q_type, q_levels):
    wav = torch.linspace(-1, 1, 10001)
    codes = quantize(wav, q_type, q_levels)
    assert codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < q_levels
    back = dequantize(codes, q_type, q_levels)
    err = (back - wav).abs()
    if q_type == "linear":
        assert err.max() <= 2.0 / q_levels + 1e-6  # one bin
    else:
        # mu-law bins are finest near 0: small values round-trip tightly
        small = wav.abs() < 0.01
        assert err[small].max() < 2e-3 * 256 / q_levels
        assert err.max() < 0.05 * 256 / q_levels
    # linear: exactly 0.0; mu-law (mu = q_levels - 1 is odd): the nearest bin centre, within 1e-4
    assert abs(dequantize(torch.tensor(q_levels // 2), q_type, q_levels).item()) < 1e-4
    assert silence_code(q_type, q_levels) == q_levels // 2
    assert quantize(torch.tensor(0.0), q_type, q_levels).item() == q_levels // 2


def test_quantize_clips_out_of_range():
    codes = quantize(torch.tensor([-3.0, -1.0, 1.0, 5.0]), "linear", 256)
    assert codes.tolist() == [0, 0, 255, 255]


def test_nll_bits_uniform_is_log2_levels():
    logits = torch.zeros(2, 5, 256)
    codes = torch.randint(0, 256, (2, 5))
    assert nll_bits(logits, codes).item() == pytest.approx(8.0)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, :2] = True
    assert nll_bits(logits, codes, mask, reduction="sum").item() == pytest.approx(16.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(frame_sizes=[3, 8]), "not a multiple"),
    (dict(frame_sizes=[8, 2]), "bottom-up"),
    (dict(frame_sizes=[]), "empty"),
    (dict(q_levels=1), "q_levels"),
    (dict(rnn_type="transformer"), "rnn_type"),
    (dict(q_type="alaw"), "q_type"),
    (dict(frame_input="float"), "frame_input"),
    (dict(top_input="none"), "top_input"),
    (dict(init="xavier"), "init"),
])
def test_config_errors_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SampleRNNConfig(**kwargs)


def test_lstm_forget_bias_starts_at_three():
    model = tiny([2, 8], "lstm", weight_norm=False)
    rnn = model.tiers[0].rnns[0]
    d = 24
    total = rnn.bias_ih_l0 + rnn.bias_hh_l0
    assert torch.allclose(total[d:2 * d], torch.full((d,), 3.0))


def test_weight_norm_covers_recurrent_weights():
    model = tiny([2, 8], "gru", weight_norm=True)
    names = {n for n, _ in model.named_parameters()}
    assert any("weight_hh_l0.original0" in n for n in names)
    assert any("upsample.parametrizations.weight" in n for n in names)


def test_tiny_model_overfits_half_a_second():
    torch.manual_seed(0)
    sr = 16000
    t = torch.arange(sr // 2) / sr
    wav = 0.5 * torch.sin(2 * torch.pi * 220 * t) * (1 + 0.3 * torch.sin(2 * torch.pi * 3 * t))
    cfg = SampleRNNConfig(frame_sizes=[2, 8], dim=64, n_rnn=1, emb_dim=16, q_levels=64)
    model = SampleRNN(cfg)
    codes = quantize(wav, "linear", 64)
    lb, seq = model.lookback, 256
    n = (codes.numel() - lb) // seq * seq
    batch = codes[: lb + n].view(1, -1)
    # cut into rows of 512 samples (plus lookback) for a batch
    rows = torch.stack([batch[0, i:i + lb + 512] for i in range(0, n - 512, 512)])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.time()
    losses = []
    while time.time() - start < 20 and len(losses) < 150:
        logits, _ = model(rows)
        loss = nll_bits(logits, rows[:, lb:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 5.0  # about log2(64) = 6 bits at the start
    assert min(losses[-5:]) < 0.5 * losses[0], losses[::10]


# -- the authors' model (models/*_tier, lib/ops.py of soroushmehr/sampleRNN_ICLR2017) -------

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "model"
# The authors' counts with PyTorch's GRU, which has a second bias vector (3 x dim per layer):
# 39,243,264 and 18,744,832 with one, as in their Theano code.
PARAMETERS = {"two_tier": 39_252_480, "three_tier": 18_750_976, "four_tier": 29_342_208,
              "quickstart": 353_664, "tiny": 33_504}
PARAMETERS_BEFORE = {"two_tier": 42_367_488, "three_tier": 21_882_368}


def preset(name: str, **changes) -> SampleRNNConfig:
    return SampleRNNConfig(**{**OmegaConf.to_container(OmegaConf.load(PRESETS / f"{name}.yaml")),
                              **changes})


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_preset_parameter_counts(name):
    assert SampleRNN(preset(name)).n_parameters() == PARAMETERS[name]
    if name in PARAMETERS_BEFORE:
        assert SampleRNN(preset(name, **DEVIATIONS)).n_parameters() == PARAMETERS_BEFORE[name]


@pytest.mark.parametrize("q_type", ["linear", "mu-law"])
def test_frame_tiers_read_codes_on_the_authors_scale(q_type):
    """Every frame tier reads codes / (q/2) - 1, times 2, in [-2, 2), whatever the
    quantization; the top tier's RNN reads that frame itself, the others project it."""
    model = tiny([2, 8], "gru", n_rnn=1, q_type=q_type)
    q = model.config.q_levels
    codes = torch.randint(0, q, (2, 8 + 16))
    expected = (codes.double() / (q / 2) - 1) * 2
    seen = {}
    model.tiers[1].rnns[0].register_forward_hook(lambda m, args, out: seen.update(top=args[0]))
    model.tiers[0].input.register_forward_hook(lambda m, args, out: seen.update(low=args[0]))
    with torch.no_grad():
        model(codes)
    assert model.tiers[1].input is None and model.tiers[1].rnns[0].input_size == 8
    torch.testing.assert_close(seen["top"].double(), expected[:, :16].reshape(2, 2, 8))
    torch.testing.assert_close(seen["low"].double(), expected[:, 6:22].reshape(2, 8, 2))
    assert -2 <= expected.min() and expected.max() < 2
    # the earlier option: the dequantized amplitude (for mu-law, the decoded waveform)
    old = SampleRNN(SampleRNNConfig(**{**model.config.to_dict(), "frame_input": "audio"}))
    torch.testing.assert_close(old.frame_values, dequantize(torch.arange(q), q_type, q))


def test_skip_connections_feed_the_stack_input_to_later_layers():
    model = tiny([2, 8], "gru", skip=True, n_rnn=3)
    top, low = model.tiers[1], model.tiers[0]
    assert [r.input_size for r in top.rnns] == [8, 24 + 8, 24 + 8]       # raw frame of 8
    assert [r.input_size for r in low.rnns] == [24, 24 + 24, 24 + 24]    # projected frame
    assert top.upsample.in_features == 3 * 24                            # every layer's output


def test_init_is_the_authors():
    """He-uniform linear layers, LeCun-uniform RNN input and gate matrices, an orthogonal GRU
    candidate matrix, zero biases; the paper 3-tier's logits then have a std near the
    authors' (about 1, measured 1.6 here) where PyTorch's defaults give 0.04."""
    torch.manual_seed(0)
    model = SampleRNN(preset("three_tier")).eval()
    d = 1024
    with torch.no_grad():
        low = model.tiers[0]
        assert low.upsample.weight.std().item() == pytest.approx((2 / d) ** 0.5, rel=0.02)
        assert low.input.weight.std().item() == pytest.approx((2 / 2) ** 0.5, rel=0.1)
        rnn = model.tiers[1].rnns[0]
        assert rnn.weight_ih_l0.std().item() == pytest.approx((1 / 8) ** 0.5, rel=0.02)
        gates, candidate = rnn.weight_hh_l0[:2 * d], rnn.weight_hh_l0[2 * d:]
        assert gates.std().item() == pytest.approx((1 / d) ** 0.5, rel=0.02)
        torch.testing.assert_close(candidate @ candidate.T, torch.eye(d), atol=1e-4, rtol=0)
        assert not rnn.bias_ih_l0.any() and not rnn.bias_hh_l0.any()
        out = model.sample_mlp.output.weight
        assert out.std().item() == pytest.approx((1 / d) ** 0.5, rel=0.02)
        t = torch.arange(8 + 4096) / 16000
        codes = quantize(0.3 * torch.sin(2 * torch.pi * 220 * t))[None].repeat(2, 1)
        std = model(codes)[0].std().item()
        torch.manual_seed(0)
        before = SampleRNN(preset("three_tier", **DEVIATIONS)).eval()
        std_before = before(codes)[0].std().item()
    assert 0.5 < std < 2.0, std          # within a factor 2 of the authors' ~1.0
    assert std_before < 0.1, std_before


def test_stored_configs_without_the_new_options_rebuild_the_earlier_model():
    stored = {k: v for k, v in tiny([2, 8]).config.to_dict().items() if k not in DEVIATIONS}
    config = SampleRNNConfig.from_dict(stored)
    assert all(getattr(config, k) == v for k, v in DEVIATIONS.items())
    assert SampleRNNConfig.from_dict(tiny([2, 8]).config.to_dict()) == tiny([2, 8]).config
    with pytest.raises(ValueError, match="unknown to this version"):
        SampleRNNConfig.from_dict({**stored, "wavelet": True})
