"""Local conditioning: SampleRNN as a vocoder, from prepare to generation.

Log-mel frames are aligned to the samples they describe, prepare stores them beside the
codes, every chunk's rows get the frames of their own targets (across chunk boundaries too),
the stack's look-ahead reaches the features only, every sampler backend takes each stream's
features, and generation makes audio of an audio file's features or of an array's, with one
line for each bad input.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from samplernn import silence_code
from samplernn.data import EvalStream, PreparedDataset, TrainStream
from samplernn.errors import AlreadyExists, BadFile, ConfigError
from samplernn.features import FeatureSpec, Normaliser, for_model, logmel, save, silence, window
from samplernn.prepare import as_stored, prepare
from samplernn.sampler import generate
from samplernn.train import run

from conftest import compose_train
from test_reliability import ENV, ROOT, _steps
from test_sampler import CPU_BACKENDS, DEVICE, TRITON, tiny

SPEC = FeatureSpec(sample_rate=16000, n_mels=20, hop=32, win=128, n_fft=256)
FRAME_SIZES = {2: [16], 3: [2, 8], 4: [2, 8, 32]}


def _tones(root: Path, n: int = 6, seconds: float = 0.7) -> Path:
    """Files whose pitch glides: their frames differ from each other and over time."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = np.arange(int(seconds * 16000) + 37 * i) / 16000
        f = 200 + 300 * t / seconds + 40 * i
        wav = 0.4 * np.sin(2 * np.pi * np.cumsum(f) / 16000) * (0.6 + 0.4 * np.sin(9 * t + i))
        sf.write(root / f"{i}.wav", wav, 16000)
    return root


@pytest.fixture(scope="module")
def featured(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("featured")
    prepare(_tones(root / "source"), root / "prepared", features="logmel",
            mel={"n_mels": 20, "hop": 32, "win": 128, "n_fft": 256}, valid_fraction=0.2,
            test_fraction=0.2, num_workers=0, chunk_seconds=0.25)
    return root / "prepared"


# ---------------------------------------------------------------- features and prepare

def test_a_frame_describes_the_samples_it_is_named_for():
    """An impulse at sample s is loudest in frame s // hop (its window is centred on that
    frame's samples), and n samples give ceil(n / hop) frames."""
    for n in (1000, 1024, 1025):
        assert logmel(np.zeros(n, np.float32), SPEC).shape == (-(-n // 32), 20)
    for s in (0, 31, 32, 300, 511, 999):
        wav = np.zeros(1000, np.float32)
        wav[s] = 1.0
        energy = np.exp(logmel(wav, SPEC)).sum(1)
        assert int(energy.argmax()) == s // 32, s
    quiet = logmel(np.zeros(100, np.float32), SPEC)
    assert np.allclose(quiet, silence(SPEC))  # digital silence is the floor


def test_prepare_stores_the_frames_of_the_stored_samples(featured, capsys):
    dataset = PreparedDataset(featured)
    info = dataset.feature_info
    assert (info["kind"], info["n_mels"], info["hop"], info["win"]) == ("logmel", 20, 32, 128)
    assert dataset.features.shape == (info["n_frames"], 20)
    train = []
    for f in dataset.manifest["files"]:
        assert f["n_frames"] == -(-f["n_samples"] // 32)
        wav = np.asarray(dataset.samples[f["offset"]:f["offset"] + f["n_samples"]]) / 32768.0
        assert np.allclose(dataset.file_features(f), logmel(wav, SPEC), atol=1e-5)
        if f["split"] == "train":
            train.append(np.asarray(dataset.file_features(f)))
    train = np.concatenate(train)
    assert np.allclose(info["mean"], train.mean(0), atol=1e-4)
    assert np.allclose(info["std"], train.std(0), atol=1e-4)
    # the same inputs and options: up to date; other mel options need overwrite=true
    again = prepare(featured.parent / "source", featured, features="logmel",
                    mel={"n_mels": 20, "hop": 32, "win": 128, "n_fft": 256}, valid_fraction=0.2,
                    test_fraction=0.2, num_workers=0, chunk_seconds=0.25)
    assert again == dataset.manifest
    with pytest.raises(AlreadyExists, match="overwrite=true"):
        prepare(featured.parent / "source", featured, features="logmel",
                mel={"n_mels": 20, "hop": 64, "win": 128, "n_fft": 256}, valid_fraction=0.2,
                test_fraction=0.2, num_workers=0, chunk_seconds=0.25)


def test_a_dataset_without_features_is_prepared_as_before(tiny_dataset):
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert "features" not in manifest and "features" not in manifest["options"]
    assert not (tiny_dataset / "features.npy").exists()
    assert all("feature_offset" not in f for f in manifest["files"])


@pytest.mark.parametrize("bad, message", [
    (dict(features="mfcc"), "features='mfcc' is unknown"),
    (dict(features="logmel", mel={"win": 512, "n_fft": 256}), "mel_win=512 is longer"),
    (dict(features="logmel", mel={"hop": 300, "win": 256}), "mel_hop=300 is longer"),
])
def test_bad_feature_options_are_one_line_and_write_nothing(tmp_path, bad, message):
    with pytest.raises(ConfigError, match=message):
        prepare(_tones(tmp_path / "source", n=2), tmp_path / "out", num_workers=0, **bad)
    assert not (tmp_path / "out").exists()


def test_a_damaged_features_file_is_one_line(featured, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(featured, copy)
    np.save(copy / "features.npy", np.zeros((3, 20), np.float32))
    with pytest.raises(BadFile, match="features.npy does not hold the features"):
        PreparedDataset(copy)


# ---------------------------------------------------------------- alignment in batches

def _coded(dataset: PreparedDataset) -> PreparedDataset:
    """Frames that say which file and frame they are (value = 1000 * file + frame), and
    statistics that leave them as they are: a batch's frames can be read back as indices."""
    entries = dataset.manifest["files"]
    index = {id(f): i for i, f in enumerate(entries)}
    dataset.file_features = lambda f: (1000.0 * index[id(f)] + np.arange(f["n_frames"]))[
        :, None].repeat(20, 1).astype(np.float32)
    dataset.feature_info = {**dataset.feature_info, "mean": [0.0] * 20, "std": [1.0] * 20,
                            "floor": float(np.exp(-1.0))}  # outside a file: -1
    return dataset


def _frame_of_each_top_frame(batch, row: int, radius: int, lookback: int, hop: int):
    """What the model reads for each top frame of a row (its gather), as frame indices."""
    n_top = (batch.codes.shape[1] - lookback) // lookback
    index = (int(batch.phase[row]) + np.arange(n_top) * lookback) // hop
    return batch.feats[row, radius + index, 0].numpy()


@pytest.mark.parametrize("seq_len", [64, 96, 40])
def test_each_top_frame_reads_the_frame_of_its_own_samples_across_chunks(featured, seq_len):
    """Evaluation walks each file from its start: top frame j of the file, in whichever
    chunk it falls, reads frame (j * lookback) // hop; chunk boundaries inside a frame
    (seq_len 40 or 96 with a hop of 32) leave no gap and no repeat."""
    dataset = _coded(PreparedDataset(featured))
    lookback, radius = 8, 2
    stream = EvalStream(dataset, "train", 2, seq_len, lookback, features=radius)
    files = dataset.files("train")
    index = {id(f): i for i, f in enumerate(dataset.manifest["files"])}
    seen: dict = {}
    for batch in stream:
        for row in range(2):
            k = int(batch.file[row])
            if k < 0:
                continue
            n = int(batch.mask[row].sum())
            got = _frame_of_each_top_frame(batch, row, radius, lookback, 32)[:-(-n // lookback)]
            seen.setdefault(k, []).extend(got)
            # the context before it: the frames before, silence's (-1) before the file
            coded = int(batch.feats[row, radius, 0])
            frame = coded - 1000 * index[id(files[k])]
            before = batch.feats[row, :radius, 0].numpy()
            want = [coded - radius + i if frame - radius + i >= 0 else -1 for i in range(radius)]
            assert np.array_equal(before, want)
    for k, f in enumerate(files):
        top = np.arange(-(-f["n_samples"] // lookback))
        assert np.array_equal(seen[k], 1000 * index[id(f)] + top * lookback // 32), k


def test_training_segments_start_on_top_frames_and_read_their_frames(featured):
    dataset = _coded(PreparedDataset(featured))
    lookback, radius, seq_len = 8, 1, 48
    stream = TrainStream(dataset, 4, seq_len, lookback, segment_samples=4000, seed=5,
                         features=radius)
    files = dataset.files("train")
    index = {id(f): i for i, f in enumerate(dataset.manifest["files"])}
    for k in range(0, 40, 3):
        batch = stream.batch_at(k)
        for row, (_, first, start, _, piece) in enumerate(stream._locate(k)):
            f = files[stream.files[piece]]
            target = start - f["offset"] + (k - first) * seq_len  # file-relative first target
            assert target % lookback == 0
            assert int(batch.phase[row]) == target % 32
            got = _frame_of_each_top_frame(batch, row, radius, lookback, 32)
            want = 1000 * index[id(f)] + (target + np.arange(seq_len // lookback) * lookback) // 32
            assert np.array_equal(got, want)


def test_each_process_reads_its_rows_features_of_the_global_batch(featured):
    """Data-parallel training with features: each process's rows (codes, their feature
    frames and phases) are the global batch's rows, past segment ends."""
    dataset = PreparedDataset(featured)
    whole = TrainStream(dataset, 4, 48, 8, 4000, seed=5, features=1)
    parts = [iter(TrainStream(dataset, 4, 48, 8, 4000, seed=5, features=1, rows=rows,
                              start_step=10)) for rows in [(0, 1), (1, 4)]]
    for k in range(10, 60):
        full, halves = whole.batch_at(k), [next(p) for p in parts]
        for field in ("codes", "reset", "mask", "feats", "phase"):
            joined = torch.cat([getattr(h, field) for h in halves])
            assert torch.equal(joined, getattr(full, field)), (k, field)


def test_without_features_training_segments_are_as_before(tiny_dataset):
    """Alignment to top frames is only for a model with features: the plan is unchanged."""
    dataset = PreparedDataset(tiny_dataset)
    stream = TrainStream(dataset, 4, 64, 8, segment_samples=7000, seed=5)
    starts = stream.segment(np.arange(4)[:, None], np.arange(16)[None])[0]
    assert (starts % 8).any()  # not rounded to top frames
    assert stream.batch_at(3).feats is None and stream.batch_at(3).phase is None


# ---------------------------------------------------------------- the model

def _vocoder(frame_sizes=(2, 8), into="all", **options):
    model = tiny(list(frame_sizes), "gru", skip=True, n_features=6, feature_hop=32,
                 feature_dim=8, feature_layers=2, feature_kernel=3, features_into=into,
                 **options)
    return heard(model)


def heard(model):
    """The features (and labels) made to matter: their projections start at zero."""
    with torch.no_grad():
        for linear in [*model.features.into,
                       *(model.labels.into if model.labels is not None else [])]:
            linear.parametrizations.weight.original0.fill_(1.0)
    return model


def test_a_model_with_features_starts_as_the_unconditioned_one():
    plain = tiny([2, 8], "gru", skip=True)
    model = tiny([2, 8], "gru", skip=True, n_features=6, feature_hop=32, feature_dim=8)
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("features.") for k in missing)  # the stack alone
    codes = torch.randint(0, 64, (2, 8 + 64), generator=torch.Generator().manual_seed(1))
    feats = torch.randn(2, 64 // 32 + 2 + 2 * model.config.feature_radius, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model(codes, feats=feats, phase=torch.zeros(2, dtype=torch.long))[0],
                           plain(codes)[0])
    with pytest.raises(ValueError, match="trained without features"):
        plain(codes, feats=feats, phase=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="conditioned on 6 feature bands"):
        model(codes)
    with pytest.raises(ConfigError, match="not a multiple of the top frame size 8"):
        tiny([2, 8], n_features=6, feature_hop=36)


def test_a_checkpoint_from_before_features_loads_without_them():
    from samplernn import SampleRNNConfig
    stored = {k: v for k, v in tiny([2, 8]).config.to_dict().items()
              if not (k.startswith("feature") or k == "n_features")}
    config = SampleRNNConfig.from_dict(stored)
    assert config.n_features == 0 and not config.has_features and config.feature_radius == 0


@pytest.mark.parametrize("into", ["top", "all"])
def test_the_look_ahead_reaches_the_features_and_never_the_future_samples(into):
    """Features fixed: a code changes no logit before it (causality). Codes fixed: a
    feature frame changes logits only from `radius` frames before it on (its look-ahead)
    and changes some."""
    model = _vocoder(into=into)
    radius, n = model.config.feature_radius, 8 * 32
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 64, (1, 8 + n), generator=gen)
    feats = torch.randn(1, n // 32 + 2 + 2 * radius, 6, generator=gen, dtype=torch.float64)
    phase = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        base = model(codes, feats=feats, phase=phase)[0]
        later = codes.clone()
        later[0, 8 + 100] = (later[0, 8 + 100] + 7) % 64
        moved = model(later, feats=feats, phase=phase)[0]
        assert torch.equal(moved[0, :101], base[0, :101])
        frame = 5
        other = feats.clone()
        other[0, radius + frame] += 3.0
        changed = model(codes, feats=other, phase=phase)[0]
    first = (frame - radius) * 32
    assert torch.equal(changed[0, :first], base[0, :first])
    assert not torch.allclose(changed[0, first:(frame + 1) * 32], base[0, first:(frame + 1) * 32])


# ---------------------------------------------------------------- the sampler

def _features(model, n_frames: int, batch: int, seed: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    r = model.config.feature_radius
    return (2 * torch.randn(batch, n_frames + 2 * r, 6, generator=gen)).to(DEVICE)


def _teacher_forced(model, codes, feats, label=None):
    silence = torch.full((codes.shape[0], model.lookback), silence_code("linear", 64),
                         device=codes.device)
    phase = torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device)
    feats = feats.to(next(model.parameters()).dtype)
    with torch.no_grad():
        return model(torch.cat([silence, codes], 1), label=label, feats=feats, phase=phase)[0]


@pytest.mark.parametrize("tiers", [2, 3, 4])
@pytest.mark.parametrize("into", ["top", "all"])
@pytest.mark.parametrize("backend", CPU_BACKENDS + ["torch"] + TRITON)
def test_every_backend_generates_from_each_streams_features(tiers, into, backend):
    """Greedy decoding equals the teacher-forced argmax given each stream's features (and
    label), over several feature frames; streams of the same features agree, others not."""
    hop = 32 if tiers < 4 else 64
    model = tiny(FRAME_SIZES[tiers], "gru", skip=True, n_features=6, feature_hop=hop,
                 feature_dim=8, feature_layers=2, feature_kernel=3, features_into=into,
                 n_labels=2, label_dim=4)
    model = heard(model)
    model = model.float() if backend in ("native", "triton") else model
    feats = _features(model, 5, 3)
    feats[2] = feats[0]
    label = torch.tensor([1, 0, 1], device=DEVICE)
    length = 5 * hop - model.lookback  # not a whole number of feature frames
    out = generate(model, 3, length, temperature=0, backend=backend, label=label, features=feats)
    assert out.shape == (3, length)
    assert torch.equal(out, _teacher_forced(model, out, feats, label).argmax(-1))
    assert torch.equal(out[0], out[2]) and not torch.equal(out[0], out[1])


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["torch"] + TRITON)
def test_sampled_codes_follow_the_model_given_the_features(backend):
    """The randomised PIT of every sampled code under the teacher-forced softmax(logits / T)
    given the stream's own features is uniform; under other streams' features it is not."""
    model = _vocoder().float()
    with torch.no_grad():
        for conv in model.features.convs:
            conv.weight.mul_(3)
    feats = _features(model, 2, 600)
    codes = generate(model, 600, 64, temperature=0.8, seed=3, backend=backend, features=feats)

    def chi2(f):
        probs = torch.softmax(_teacher_forced(model, codes, f).double().cpu() / 0.8, -1)
        c = codes.cpu()[..., None]
        upper = probs.cumsum(-1).gather(-1, c)[..., 0]
        lower = upper - probs.gather(-1, c)[..., 0]
        u = lower + (upper - lower) * torch.rand(upper.shape, dtype=torch.float64,
                                                 generator=torch.Generator().manual_seed(0))
        counts = torch.histc(u, bins=20, min=0.0, max=1.0)
        return float(((counts - u.numel() / 20) ** 2 / (u.numel() / 20)).sum())
    assert chi2(feats) < 60
    assert chi2(feats.roll(1, 0)) > 300


def test_the_sampler_refuses_what_the_features_do_not_cover():
    model = _vocoder().float().cpu()
    feats = _features(model, 3, 2).cpu()
    with pytest.raises(ConfigError, match="describe 96 more"):
        generate(model, 2, 97, temperature=0, features=feats)
    with pytest.raises(ConfigError, match="conditioned on 6-band features"):
        generate(model, 2, 32, temperature=0)
    with pytest.raises(ConfigError, match="frames \\+ 4, 6 bands"):
        generate(model, 2, 32, temperature=0, features=feats[:, :, :5])
    with pytest.raises(ConfigError, match="prime= with features="):
        generate(model, 2, 32, temperature=0, features=feats, prime=torch.zeros(1, 8).long())
    plain = tiny([2, 8]).float().cpu()
    with pytest.raises(ConfigError, match="trained without features"):
        generate(plain, 2, 32, temperature=0, features=feats)


def test_for_model_pads_with_silence_and_normalises():
    spec = FeatureSpec(sample_rate=16000, n_mels=3, hop=32, win=64, n_fft=64)
    norm = Normaliser({**spec.to_dict(), "mean": [1.0, 2.0, 3.0], "std": [2.0, 2.0, 2.0]})
    frames = [np.ones((2, 3), np.float32), np.full((4, 3), 5.0, np.float32)]
    out = for_model(frames, norm, radius=1)
    assert out.shape == (2, 4 + 2, 3)
    quiet = norm(silence(spec)[None])[0]
    assert np.allclose(out[0, 0], quiet) and np.allclose(out[0, 3:], quiet)
    assert np.allclose(out[0, 1], (1.0 - np.array([1, 2, 3])) / 2)
    assert np.allclose(out[1, 1:5], (5.0 - np.array([1, 2, 3])) / 2)
    assert np.array_equal(window(np.arange(3.0)[:, None], -1, 5, np.array([9.0]))[:, 0],
                          [9, 0, 1, 2, 9])


# ---------------------------------------------------------------- training and generation

def _featured_train(featured, *overrides):
    return compose_train("debug=tiny", "logger=none", f"dataset.path={featured}",
                         "dataset.builtin=false", "dataset.num_workers=0",
                         "model.feature_dim=8", "model.feature_layers=2", *overrides)


@pytest.mark.slow  # real processes
def test_two_processes_with_features_follow_the_single_process_run(featured, tmp_path):
    """torchrun with 2 processes: each reads its rows' feature frames, and the losses are
    the one-process run's (within test_distributed's tolerance)."""
    from test_distributed import TOL, torchrun
    from test_reliability import tiny_train
    args = ("dataset.num_workers=0", "model.feature_dim=8", "model.feature_layers=2",
            "train.max_steps=12", "train.batch_size=4", "eval.every=6", "train.log_every=2",
            "eval.n_samples=0")
    runs = {}
    for n in (1, 2):
        runs[n] = tmp_path / f"run{n}"
        done = subprocess.run(torchrun(n, *tiny_train(featured, runs[n], *args), tmp=tmp_path),
                              cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for key in ("train/nll_bits", "valid/nll_bits"):
        one, two = _steps(runs[1], key), _steps(runs[2], key)
        assert [s for s, _ in one] == [s for s, _ in two] and one
        assert np.allclose([v for _, v in one], [v for _, v in two], rtol=0, atol=TOL)
    assert json.loads((runs[2] / "summary.json").read_text())["processes"] == 2


def test_training_with_features_resumes_on_its_trajectory(featured, tmp_path):
    overrides = ("train.max_steps=6", "eval.every=3", "train.log_every=1", "eval.n_samples=2",
                 "eval.sample_seconds=0.2")
    whole = tmp_path / "whole"
    run(_featured_train(featured, *overrides), run_dir=whole)
    config = (whole / "config.yaml").read_text()
    assert "n_features: 20" in config and "feature_hop: 32" in config
    sidecars = sorted((whole / "samples" / "step_6").glob("*.json"))
    valid = [f["source"] for f in PreparedDataset(featured).files("valid")][:2]
    assert [json.loads(p.read_text())["features"] for p in sidecars] == valid
    parts = tmp_path / "parts"
    run(_featured_train(featured, *overrides[1:], "train.max_steps=3"), run_dir=parts)
    run(_featured_train(featured, *overrides, "resume=auto"), run_dir=parts)
    for key in ("train/nll_bits", "valid/nll_bits"):
        assert _steps(parts, key) == _steps(whole, key), key
    assert _steps(parts, "test/nll_bits")[-1] == _steps(whole, "test/nll_bits")[-1]


def test_feature_dim_0_trains_without_the_features_and_says_so(featured, tmp_path, caplog):
    run(_featured_train(featured, "model.feature_dim=0", "eval.n_samples=0",
                        "train.max_steps=2", "eval.every=2"), run_dir=tmp_path)
    assert "model.feature_dim=0 trains without them" in caplog.text
    assert "n_features: 0" in (tmp_path / "config.yaml").read_text()


@pytest.fixture(scope="module")
def vocoder_run(featured, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("vocoder_run")
    run(_featured_train(featured, "train.max_steps=2", "eval.every=2", "eval.n_samples=0"),
        run_dir=run_dir)
    return run_dir


def _generate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), *args],
                          cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def test_generate_resynthesises_audio_files_and_arrays(vocoder_run, featured, tmp_path):
    """features=<audio>: copy synthesis of that file's length; .npy and .npz frames made
    elsewhere: their frames times the hop; a batch of different files at once."""
    source = featured.parent / "source"
    dataset = PreparedDataset(featured)
    spec = FeatureSpec.from_dict({**dataset.feature_info, "sample_rate": 16000})
    wav, _ = sf.read(source / "1.wav", dtype="float32")
    frames = logmel(as_stored(wav, {"sample_rate": 16000}), spec)
    np.save(tmp_path / "array.npy", frames[:10])
    save(tmp_path / "saved.npz", frames[:7], spec)
    out = tmp_path / "out"
    done = _generate(f"checkpoint={vocoder_run / 'checkpoints' / 'best.pt'}", f"out_dir={out}",
                     f"features=[{source / '0.wav'},{source / '1.wav'},{tmp_path / 'array.npy'},"
                     f"{tmp_path / 'saved.npz'}]", "num_samples=1", "threads=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lengths = {p.stem: sf.info(p).frames for p in out.glob("*.wav")}
    assert lengths == {"0_t1_000": sf.info(source / "0.wav").frames, "1_t1_000": len(wav),
                       "array_t1_000": 10 * 32, "saved_t1_000": 7 * 32}
    sidecar = json.loads((out / "1_t1_000.json").read_text())
    assert sidecar["features"] == str(source / "1.wav")


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("bands", "shape (5, 7); this model reads [frames, 20]"),
    ("rate", "are at 22050 Hz with a hop of 32 samples"),
    ("none", "is conditioned on features (a vocoder); give features="),
])
def test_bad_features_are_one_line(vocoder_run, tmp_path, case, message):
    np.save(tmp_path / "bands.npy", np.zeros((5, 7), np.float32))
    np.savez(tmp_path / "rate.npz", logmel=np.zeros((5, 20), np.float32), sample_rate=22050,
             hop=32)
    given = {"missing": ["features=nowhere.wav"], "bands": ["features=bands.npy"],
             "rate": ["features=rate.npz"], "none": []}[case]
    done = _generate(f"checkpoint={vocoder_run / 'checkpoints' / 'best.pt'}",
                     f"out_dir={tmp_path / 'out'}", *given, cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not list((tmp_path / "out").glob("*.wav")) if (tmp_path / "out").exists() else True


def test_features_on_a_model_without_them_is_one_line(tiny_dataset, tmp_path):
    run_dir = tmp_path / "plain"
    run(compose_train("debug=tiny", "logger=none", f"dataset.path={tiny_dataset}",
                      "dataset.builtin=false", "dataset.num_workers=0", "train.max_steps=1",
                      "eval.every=1", "eval.n_samples=0", "eval.test=false"), run_dir=run_dir)
    np.save(tmp_path / "f.npy", np.zeros((5, 20), np.float32))
    done = _generate(f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}", "features=f.npy",
                     f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1
    assert "was trained without features; drop features=" in lines[0]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"),
                           f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}", "features=mean"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1
    assert "features=mean: " in lines[0] and "was trained without features" in lines[0]


def test_copy_synthesis_measures_every_file_against_the_baseline_and_the_floor(
        vocoder_run, featured, tmp_path):
    from samplernn.copy_synthesis import lmd_db
    from samplernn.copy_synthesis import run as copy_synthesis
    wav = 0.2 * np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    assert lmd_db(wav, wav, SPEC) == 0.0 and lmd_db(wav, 0.5 * wav, SPEC) == pytest.approx(
        20 * np.log10(2), abs=0.01)  # half the amplitude: 6 dB in every band (noise: all)
    baseline = tmp_path / "plain"
    run(_featured_train(featured, "model.feature_dim=0", "train.max_steps=2", "eval.every=2",
                        "eval.n_samples=0", "eval.test=false"), run_dir=baseline)
    report = copy_synthesis(vocoder_run / "checkpoints" / "best.pt",
                            baseline / "checkpoints" / "best.pt", out=tmp_path / "cs.json")
    files = PreparedDataset(featured).files("test")
    assert [r["source"] for r in report["files"]] == [f["source"] for f in files]
    for row, f in zip(report["files"], files):
        assert row["requantized"] < row["resynthesis"] and row["requantized"] < \
            row["unconditioned"]
        stem = Path(f["source"]).stem
        for kind in ("resynthesis", "unconditioned"):
            written = list((tmp_path / "cs").glob(f"*_{stem}_{kind}.wav"))
            assert len(written) == 1 and sf.info(written[0]).frames == f["n_samples"]
    assert set(report["mean"]) == {"resynthesis", "unconditioned", "requantized"}
    assert Path(report["spectrograms"]).stat().st_size > 10_000
    assert json.loads((tmp_path / "cs.json").read_text())["mean"] == report["mean"]
    with pytest.raises(ConfigError, match="give an unconditioned model"):
        copy_synthesis(vocoder_run / "checkpoints" / "best.pt",
                       vocoder_run / "checkpoints" / "best.pt", out=tmp_path / "again.json")


def test_evaluate_reads_features_made_as_the_models_or_says_why_not(vocoder_run, featured,
                                                                     tiny_dataset, tmp_path):
    other = tmp_path / "other"
    prepare(featured.parent / "source", other, features="logmel", num_workers=0,
            mel={"n_mels": 20, "hop": 64, "win": 128, "n_fft": 256})
    checkpoint = f"checkpoint={vocoder_run / 'checkpoints' / 'best.pt'}"
    script = str(ROOT / "scripts" / "evaluate.py")
    for data, message in ((tiny_dataset, "has no features and the model is conditioned on them"),
                          (other, "features made otherwise than the model's (n_mels=20, hop=32")):
        done = subprocess.run([sys.executable, script, checkpoint, f"dataset.path={data}"],
                              cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and message in lines[0], done.stderr
    done = subprocess.run([sys.executable, script, checkpoint], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((vocoder_run / "checkpoints" / "eval_test_best_files.json").read_text())
    final = _steps(vocoder_run, "test/nll_bits")[-1][1]
    assert result["nll_bits"] == pytest.approx(final, abs=1e-4)  # the run's own test NLL
    # the same files with every frame the train mean: its own file, and another NLL
    done = subprocess.run([sys.executable, script, checkpoint, "features=mean"], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    blank = json.loads((vocoder_run / "checkpoints" / "eval_test_best_files_features_mean.json")
                       .read_text())
    assert blank["features"] == "mean" and blank["n_samples"] == result["n_samples"]
    assert abs(blank["nll_bits"] - result["nll_bits"]) > 1e-4
