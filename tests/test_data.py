"""samplernn.data: TBPTT training batches (contiguity, resets, determinism, resume, workers)
and evaluation coverage (every sample of a split predicted exactly once).

The dataset holds random 16-bit noise at 16 kHz and is read with linear 65536-level codes, so
code - 32768 is exactly the stored int16 sample and every window can be located in the source.
"""

import pickle

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from samplernn.data import (ORDERS, EvalStream, PreparedDataset, TrainStream, eval_loader, pieces,
                            train_loader)
from samplernn.prepare import prepare
from samplernn.quantization import silence_code

Q = ("linear", 65536)
SILENCE = silence_code(*Q)
B, T, L = 3, 40, 16
LENGTHS = [2000, 3000, 900, 4500, 1700, 2500, 60, 1234, 3333, 800, 2222, 1500]   # samples


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    src = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for i, n in enumerate(LENGTHS):
        pcm = rng.integers(-20000, 20000, n).astype(np.int16)
        sf.write(src / f"f{i:02d}.wav", pcm, 16000, subtype="PCM_16")
    out = tmp_path_factory.mktemp("prepared") / "noise"
    prepare(src, out, min_seconds=0.0, valid_fraction=0.25, test_fraction=0.2, num_workers=0)
    return PreparedDataset(out)


def _source(ds):
    return np.asarray(ds.samples, dtype=np.int64) + SILENCE


def _locate(source, window):
    """Start of `window` in `source` (unique for random noise), else -1."""
    hits = np.flatnonzero(source[:len(source) - len(window) + 1] == window[0])
    for h in hits:
        if np.array_equal(source[h:h + len(window)], window):
            return int(h)
    return -1


def test_prepared_dataset_basics(ds, tmp_path):
    assert ds.samples.dtype == np.int16 and isinstance(ds.samples, np.memmap)
    assert sum(ds.n_samples(s) for s in ("train", "valid", "test")) == sum(LENGTHS)
    assert {len(ds.files(s)) for s in ("train", "valid", "test")} == {7, 3, 2}
    clone = pickle.loads(pickle.dumps(ds))                     # workers: no array copy
    assert clone._samples is None and np.array_equal(clone.samples[:10], ds.samples[:10])
    with pytest.raises(FileNotFoundError, match="datasets/prepare.py source=<folder>"):
        PreparedDataset(tmp_path / "nothing")
    with pytest.raises(ValueError, match="split"):
        ds.files("dev")


def _runs(ds, order, piece):
    """(start, end) of what a segment must lie inside: a file, or one of its pieces."""
    return [(a, a + n)
            for a, n, _ in pieces(ds.files("train"), piece if order == "epoch" else None)]


@pytest.mark.parametrize("order", ORDERS)
def test_train_chunks_are_contiguous_with_correct_resets(ds, order):
    stream = TrainStream(ds, B, T, L, segment_samples=5 * T, q_type=Q[0], q_levels=Q[1], seed=7,
                         order=order)
    source = _source(ds)
    train = _runs(ds, order, 5 * T)
    it = iter(stream)
    batches = [next(it) for _ in range(60)]
    for b in batches:
        assert b.codes.shape == (B, L + T) and b.reset.shape == (B,) and b.mask.all()
    assert batches[0].reset.all()
    for row in range(B):
        segments, current = [], None
        for b in batches:
            codes = b.codes[row].numpy()
            if b.reset[row]:
                assert (codes[:L] == SILENCE).all()            # predicted from silence
                current = [codes[L:]]
                segments.append(current)
            else:
                assert np.array_equal(codes[:L], prev[-L:])    # overlap = previous tail
                current.append(codes[L:])
            prev = codes
        assert len(segments) >= 10
        for seg in segments[:-1]:                              # complete segments
            targets = np.concatenate(seg)
            assert len(targets) % T == 0 and len(targets) <= 5 * T
            start = _locate(source, targets)                   # contiguous in the source ...
            assert start >= 0
            assert any(a <= start and start + len(targets) <= b for a, b in train)  # ... one file
            assert len(targets) == min(5 * T, next(b - a for a, b in train if a <= start < b)) \
                // T * T


@pytest.mark.parametrize("order", ORDERS)
def test_train_rows_reset_independently_and_short_runs_are_never_used(ds, order):
    stream = TrainStream(ds, 8, T, L, 5 * T, *Q, seed=1, order=order)
    it = iter(stream)
    resets = torch.stack([next(it).reset for _ in range(40)])
    assert not (resets.all(dim=1)[1:]).all()                   # not all rows at once
    runs = _runs(ds, order, 400)
    with pytest.raises(ValueError, match="lower train.seq_len"):
        TrainStream(ds, B, 5000, L, 8000, *Q, order=order)
    long_only = TrainStream(ds, B, 100, L, 400, *Q, order=order)
    assert all(n >= 100 for n in long_only.lengths)
    assert len(long_only.lengths) == sum(b - a >= 100 for a, b in runs)


def test_epoch_order_plays_every_piece_once_before_any_repeats(ds):
    stream = TrainStream(ds, B, T, L, 5 * T, *Q, seed=5, order="epoch")
    n_pieces = len(stream.lengths)
    assert n_pieces > len(ds.files("train"))                   # files cut into 5T pieces
    m = np.arange(3 * n_pieces)                                # three epochs, dealt to rows
    starts, _ = stream.segment(m % B, m // B)
    played = np.searchsorted(stream.offsets, starts, side="right") - 1
    epochs = played.reshape(3, n_pieces)
    for epoch in epochs:
        assert sorted(epoch) == list(range(n_pieces))          # each piece once per epoch
    assert not np.array_equal(epochs[0], epochs[1])            # reshuffled every epoch
    assert (starts - stream.offsets[played] + np.minimum(5 * T, stream.lengths[played]) // T * T
            <= stream.lengths[played]).all()                   # inside its piece


@pytest.mark.parametrize("order", ORDERS)
def test_train_stream_is_deterministic_and_resumes_exactly(ds, order):
    first = iter(TrainStream(ds, B, T, L, 5 * T, *Q, seed=3, order=order))
    ref = [next(first) for _ in range(25)]
    again = iter(TrainStream(ds, B, T, L, 5 * T, *Q, seed=3, order=order))
    assert all(torch.equal(a.codes, next(again).codes) for a in ref)
    resumed = iter(TrainStream(ds, B, T, L, 5 * T, *Q, seed=3, start_step=17, order=order))
    for k in range(17, 25):
        got = next(resumed)
        assert torch.equal(got.codes, ref[k].codes) and torch.equal(got.reset, ref[k].reset)
    other = iter(TrainStream(ds, B, T, L, 5 * T, *Q, seed=4, order=order))
    assert not all(torch.equal(a.codes, next(other).codes) for a in ref[:5])


def test_dataloader_workers_keep_the_order(ds):
    ref = iter(TrainStream(ds, B, T, L, 5 * T, *Q, seed=3, start_step=5))
    ref = [next(ref) for _ in range(7)]
    loader = train_loader(ds, B, T, L, 5 * T, *Q, seed=3, start_step=5, num_workers=2)
    got = []
    for batch in loader:
        got.append(batch)
        if len(got) == 7:
            break
    assert all(torch.equal(a.codes, b.codes) and torch.equal(a.reset, b.reset)
               for a, b in zip(ref, got))


@pytest.mark.parametrize("batch_size", [1, 2, 5])
@pytest.mark.parametrize("piece", [None, 700])
def test_eval_predicts_every_sample_of_the_split_exactly_once(ds, batch_size, piece):
    """Whole files with state carried through, or (the paper's protocol) each piece of
    `piece` samples from a file's start, from the initial state."""
    for split in ("train", "valid", "test"):
        stream = EvalStream(ds, split, batch_size, T, L, *Q, piece_samples=piece)
        batches = list(stream)
        assert len(batches) == len(stream) > 0
        assert sum(int(b.mask.sum()) for b in batches) == ds.n_samples(split) == stream.n_targets
        source = _source(ds)
        walked = []                                            # per row: files in order
        for row in range(batch_size):
            current, prev = None, None
            for b in batches:
                codes, mask = b.codes[row].numpy(), b.mask[row].numpy()
                if not mask.any():
                    assert b.reset[row] and (codes == SILENCE).all()
                    continue
                if b.reset[row]:
                    assert (codes[:L] == SILENCE).all()
                    current = []
                    walked.append(current)
                else:
                    assert np.array_equal(codes[:L], prev[-L:])
                assert (codes[L:][~mask] == SILENCE).all()     # padding is silence
                assert mask[:mask.sum()].all()                 # and only at the end
                current.append(codes[L:][mask])
                prev = codes
        got = sorted((f := np.concatenate(w))[0:1].tolist() + [len(f), _locate(source, f)]
                     for w in walked)
        runs = pieces(ds.files(split), piece)
        assert len(runs) > len(ds.files(split)) if piece else True
        want = sorted([int(source[a]), n, a] for a, n, _ in runs)
        assert got == want                                     # each run whole, exactly once


def test_eval_is_deterministic_and_works_in_a_loader(ds):
    a = list(EvalStream(ds, "valid", 2, T, L, *Q))
    loader = eval_loader(ds, "valid", 2, T, L, *Q, num_workers=2)
    assert len(loader) == len(a)
    b = list(loader)
    assert len(b) == len(a)
    assert all(torch.equal(x.codes, y.codes) and torch.equal(x.mask, y.mask)
               and torch.equal(x.reset, y.reset) for x, y in zip(a, b))


def test_bad_sizes_are_rejected(ds):
    with pytest.raises(ValueError, match="at least 1"):
        EvalStream(ds, "valid", 2, 0, L, *Q)
    with pytest.raises(ValueError, match="q_type"):
        TrainStream(ds, B, T, L, 5 * T, q_type="alaw", q_levels=256)
    with pytest.raises(ValueError, match="segment_samples"):
        TrainStream(ds, B, T, L, T - 1, *Q)
    assert isinstance(train_loader(ds, B, T, L, 5 * T, *Q, num_workers=0), DataLoader)
