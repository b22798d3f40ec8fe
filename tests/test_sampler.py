"""The incremental sampler agrees with the teacher-forced model."""

import pytest
import torch

from samplernn import SampleRNN, SampleRNNConfig, generate, silence_code

FRAME_SIZES = {2: [16], 3: [2, 8], 4: [2, 8, 32]}


def tiny(frame_sizes, rnn_type="gru", skip=False) -> SampleRNN:
    torch.manual_seed(0)
    cfg = SampleRNNConfig(frame_sizes=frame_sizes, dim=32, n_rnn=2, rnn_type=rnn_type,
                          skip_connections=skip, emb_dim=8, q_levels=64)
    model = SampleRNN(cfg).double().eval()
    with torch.no_grad():  # a non-zero learned h0, so the start state matters
        for tier in model.tiers:
            tier.h0.normal_(0, 0.5)
    return model


def teacher_forced_argmax(model, codes):
    with torch.no_grad():
        logits, _ = model(codes)
    return logits.argmax(-1)


@pytest.mark.parametrize("tiers", [2, 3, 4])
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_greedy_equals_teacher_forced_argmax(tiers, rnn_type, backend):
    model = tiny(FRAME_SIZES[tiers], rnn_type, skip=rnn_type == "lstm")
    lb = model.lookback
    out = generate(model, 2, 6 * lb, temperature=0, backend=backend)
    assert out.shape == (2, 6 * lb)
    silence = torch.full((2, lb), silence_code("linear", 64))
    expected = teacher_forced_argmax(model, torch.cat([silence, out], dim=1))
    assert torch.equal(out, expected)
    assert out.unique().numel() > 1  # not a trivially constant output


@pytest.mark.parametrize("tiers", [2, 3])
def test_greedy_after_prime_equals_forward_over_prime(tiers):
    model = tiny(FRAME_SIZES[tiers])
    lb = model.lookback
    torch.manual_seed(3)
    prime = torch.randint(0, 64, (1, 5 * lb + 3))  # not a whole number of frames
    out = generate(model, 1, 4 * lb, temperature=0, prime=prime)
    pad = (-prime.shape[1]) % lb
    silence = torch.full((1, lb + pad), silence_code("linear", 64))
    codes = torch.cat([silence, prime, out], dim=1)
    expected = teacher_forced_argmax(model, codes)[:, -out.shape[1]:]
    assert torch.equal(out, expected)


def test_prime_warms_state_beyond_last_frame():
    model = tiny([2, 8])
    torch.manual_seed(4)
    prime = torch.randint(0, 64, (1, 64))
    from samplernn.sampler import Sampler
    with torch.no_grad():
        _, hidden = model(torch.cat([torch.full((1, 8), 32), prime], dim=1))
        long = Sampler(model, 1, 1.0, seed=0, prime=prime)
        short = Sampler(model, 1, 1.0, seed=0, prime=prime[:, -8:])
    # the state the sampler starts from is the forward's state over the whole prime...
    for tier_state, h in zip(long.state, hidden):
        for layer_state, h_layer in zip(tier_state, h):
            assert torch.allclose(torch.as_tensor(layer_state), h_layer)
    # ...which is not what its last frame alone gives
    for tier_long, tier_short in zip(long.state, short.state):
        assert not torch.allclose(torch.as_tensor(tier_long[0]), torch.as_tensor(tier_short[0]))


def test_same_seed_same_codes():
    model = tiny([2, 8]).float()
    a = generate(model, 3, 40, temperature=1.0, seed=7)
    b = generate(model, 3, 40, temperature=1.0, seed=7)
    c = generate(model, 3, 40, temperature=1.0, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_first_sample_follows_the_model_distribution(temperature):
    """Gumbel-max sampling draws from softmax(logits / temperature)."""
    model = tiny([2, 8]).float()
    n = 4000
    out = generate(model, n, 8, temperature=temperature, seed=0)
    silence = torch.full((1, 8), silence_code("linear", 64))
    with torch.no_grad():
        logits, _ = model(torch.cat([silence, out[:1]], dim=1))
    probs = torch.softmax(logits[0, 0].double() / temperature, dim=-1)
    freq = torch.bincount(out[:, 0], minlength=64).double() / n
    assert 0.5 * (freq - probs).abs().sum().item() < 0.05


def test_streamed_blocks_equal_one_pass():
    from samplernn.sampler import Sampler
    model = tiny([2, 8]).float()
    with torch.inference_mode():
        blocks = list(Sampler(model, 2, 1.0, seed=1).stream(100, block_size=16))
        whole = list(Sampler(model, 2, 1.0, seed=1).stream(100, block_size=4096))
    assert [b.shape[1] for b in blocks] == [16] * 6 + [4]
    assert torch.equal(torch.cat(blocks, 1), whole[0])


def test_bad_arguments_are_clear():
    model = tiny([2, 8])
    with pytest.raises(ValueError, match="temperature"):
        generate(model, 1, 8, temperature=-1)
    with pytest.raises(ValueError, match="prime has 3 rows"):
        generate(model, 2, 8, prime=torch.zeros(3, 8, dtype=torch.long))


def test_the_generate_function_is_not_shadowed_by_a_module():
    import samplernn
    import samplernn.generation  # noqa: F401 - the command module
    assert callable(samplernn.generate) and samplernn.generate is generate
