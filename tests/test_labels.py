"""Global conditioning: labels from prepare to generation.

Labels come from folders or a path,label file, the split is stratified by label, a label
changes the model's logits (an unlabelled model is bit for bit the one before labels), every
sampler backend takes each stream's label, training reports the NLL per label and resumes,
evaluation scores files under any label, generate makes files per label or of a mix, and the
label check's classifier tells made voices apart.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from samplernn import SampleRNN, SampleRNNConfig, generate, silence_code
from samplernn.data import EvalStream, PreparedDataset, TrainStream
from samplernn.errors import AlreadyExists, BadFile, NotFound
from samplernn.evaluate import evaluate_nll
from samplernn.modelconfig import DEVIATIONS
from samplernn.prepare import prepare
from samplernn.train import run

from conftest import compose_train
from test_distributed import _close, torchrun
from test_reliability import ENV, ROOT, _steps, command, preempted_and_resumed, tiny_train
from test_sampler import CPU_BACKENDS, DEVICE, TRITON, pit_chi2, tiny

FRAME_SIZES = {2: [16], 3: [2, 8], 4: [2, 8, 32]}
VOICES = {"alto": 330.0, "bass": 110.0, "tenor": 220.0}


def _voice(path: Path, freq: float, seconds: float, seed: int) -> None:
    """A voiced tone with a little noise: three of them a classifier can tell apart."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f = freq * (1 + 0.02 * np.sin(2 * np.pi * 3 * t + seed))
    wav = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / 16000) + 0.01 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, 16000)


def voices(root: Path, per_voice: int = 6, seconds: float = 0.6) -> Path:
    """<root>/<voice>/<i>.wav for each of VOICES."""
    for v, (name, freq) in enumerate(sorted(VOICES.items())):
        for i in range(per_voice):
            _voice(root / name / f"{i}.wav", freq, seconds, seed=10 * v + i)
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Three voices of 6 files of 1.5 s each, prepared with labels=folders (the paper's
    protocol's pieces: 0.5 s)."""
    root = tmp_path_factory.mktemp("labelled")
    prepare(voices(root / "source", seconds=1.5), root / "prepared", labels="folders",
            valid_fraction=0.2, test_fraction=0.2, num_workers=0, chunk_seconds=0.5)
    return root / "prepared"


# ---------------------------------------------------------------- prepare

def test_labels_from_folders_give_a_stratified_split(labelled, capsys):
    manifest = json.loads((labelled / "manifest.json").read_text())
    assert manifest["labels"] == sorted(VOICES) and manifest["split_mode"] == "by_file"
    for f in manifest["files"]:
        assert f["label"] == f["source"].split("/")[0]
    for name in VOICES:  # every label in every split, in proportion
        splits = [f["split"] for f in manifest["files"] if f["label"] == name]
        assert sorted(splits) == ["test"] + ["train"] * 4 + ["valid"]
        assert manifest["label_splits"][name]["train"]["n_files"] == 4
    dataset = PreparedDataset(labelled)
    assert dataset.labels == sorted(VOICES)
    assert [dataset.label_index(f) for f in dataset.files("test")] == [0, 1, 2]


def test_labels_from_a_csv_or_tsv_file(tmp_path, capsys):
    source = tmp_path / "flat"
    for i in range(6):
        _voice(source / f"take{i}.wav", 110 if i % 2 else 330, 0.6, i)
    (tmp_path / "labels.csv").write_text(
        "path,label\n" + "".join(f"take{i}.wav,{'low' if i % 2 else 'high'}\n" for i in range(6)))
    (tmp_path / "labels.tsv").write_text(
        "".join(f"take{i}.wav\t{'low' if i % 2 else 'high'}\n" for i in range(6)))
    for i, name in enumerate(["labels.csv", "labels.tsv"]):
        manifest = prepare(source, tmp_path / f"out{i}", labels=tmp_path / name,
                           valid_fraction=0.2, test_fraction=0.2, num_workers=0)
        assert manifest["labels"] == ["high", "low"]
        assert {f["source"]: f["label"] for f in manifest["files"]} == {
            f"take{i}.wav": "low" if i % 2 else "high" for i in range(6)}
    assert "label low: train 1 " in capsys.readouterr().out
    # a changed label file is another dataset: it needs overwrite=true
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(
        f"take{i}.wav,x\n" for i in range(6)))
    with pytest.raises(AlreadyExists, match="other inputs or options"):
        prepare(source, tmp_path / "out0", labels=tmp_path / "labels.csv", num_workers=0)


def test_a_label_with_too_few_files_is_cut_into_time_blocks(tmp_path, capsys):
    source = tmp_path / "source"
    for i in range(5):
        _voice(source / "many" / f"{i}.wav", 330, 0.6, i)
    _voice(source / "one" / "long.wav", 110, 6.0, 9)
    manifest = prepare(source, tmp_path / "out", labels="folders", valid_fraction=0.2,
                       test_fraction=0.2, num_workers=0)
    assert manifest["split_mode"] == "mixed"
    one = [f for f in manifest["files"] if f["label"] == "one"]
    assert {f["split"] for f in one} == {"train", "valid", "test"}
    assert all("block" in f for f in one)
    assert not any("block" in f for f in manifest["files"] if f["label"] == "many")
    assert "label one: " in (out := capsys.readouterr().out) and "cut into time blocks" in out


@pytest.mark.parametrize("case", ["loose file", "no row", "empty label", "three fields",
                                  "no label file"])
def test_a_file_without_a_label_is_one_line_and_writes_nothing(tmp_path, case):
    source = voices(tmp_path / "source", per_voice=2)
    rows = [f"{name}/{i}.wav,{name}" for name in VOICES for i in range(2)]
    spec = tmp_path / "labels.csv"
    if case == "loose file":
        _voice(source / "stray.wav", 440, 0.6, 0)
        spec, error, said = "folders", BadFile, "stray.wav lies directly in the source folder"
    elif case == "no label file":
        spec, error, said = tmp_path / "nope.csv", NotFound, "nope.csv: no such file"
    else:
        rows[1] = {"no row": "", "empty label": "alto/1.wav,",
                   "three fields": "alto/1.wav,a,b"}[case]
        error = BadFile
        said = {"no row": "alto/1.wav under .* has no row", "empty label": "alto/1.wav has an "
                "empty label", "three fields": "row 2: 3 fields"}[case]
        spec.write_text("\n".join(rows) + "\n")
    with pytest.raises(error, match=said):
        prepare(source, tmp_path / "out", labels=spec, num_workers=0)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_an_unlabelled_dataset_is_prepared_as_before(tiny_dataset):
    """No label keys in the manifest, and the loaders give label 0 everywhere."""
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert "labels" not in manifest and not any("label" in f for f in manifest["files"])
    assert "labels" not in manifest["options"]
    batch = next(iter(EvalStream(PreparedDataset(tiny_dataset), "valid", 2, 64, 8)))
    assert batch.label.tolist() == [0, 0]


def test_the_loaders_give_each_row_its_files_label(labelled):
    dataset = PreparedDataset(labelled)
    label_of = {f["offset"]: dataset.label_index(f) for f in dataset.files("train")}
    stream = TrainStream(dataset, 6, 64, 8, segment_samples=4000, seed=1)
    for k in range(0, 40, 7):
        batch = stream.batch_at(k)
        for row in range(6):
            start = int(stream._locate(k)[row][2])
            file = max(f for f in label_of if f <= start)
            assert batch.label[row] == label_of[file]
    files = dataset.files("test")
    batch = next(iter(EvalStream(dataset, "test", 3, 64, 8)))
    assert batch.file.tolist() == [0, 1, 2]
    assert batch.label.tolist() == [dataset.label_index(f) for f in files]


# ---------------------------------------------------------------- the model

# The initial weights of three seeded unconditioned models as the code before labels made
# them (b531d64~1, the parent of the commit that added them): per model, a hash of its
# state's names, shapes and dtypes, and five projections of all its values (sum, sum of
# squares, three cosine-weighted sums). Not a hash of the values: orthogonal init (LAPACK's
# QR) and weight norm round differently on other CPUs and torch builds, by about 1e-7; any
# change of the code's init moves the projections by far more than the tolerance.
UNCONDITIONED_INIT = [
    ("1ad9d113ed8ee757", [1062.99813716, 3378.633978076, 9.329819159, -7.126436237, -101.481523286]),
    ("90198dad8e9c4a80", [1225.203997273, 3550.824654498, -4.547437513, 29.010263506, 291.736961871]),
    ("a1e531b69f8aeb1d", [1375.306307163, 3686.766352589, 25.348559122, -17.385605253, 51.664240808])]


def init_fingerprint(model) -> tuple[str, list[float]]:
    state = model.state_dict()
    layout = repr([(k, tuple(v.shape), str(v.dtype)) for k, v in state.items()])
    values = torch.cat([v.detach().double().flatten() for v in state.values()])
    i = torch.arange(values.numel(), dtype=torch.float64)
    projections = [values.sum(), (values * values).sum()] + [
        (values * torch.cos(i * f)).sum() for f in (0.7, 1.9, 0.013)]
    return hashlib.sha256(layout.encode()).hexdigest()[:16], [float(p) for p in projections]


def _small(n_labels=0, **options):
    torch.manual_seed(0)
    return SampleRNN(SampleRNNConfig(frame_sizes=[2, 8], dim=32, emb_dim=8, q_levels=64,
                                     n_labels=n_labels, label_dim=6, **options))


def heard(model):
    """The labels made to matter: the projections' gains, zero at the start (a conditioned
    model starts as the unconditioned one), set to 1."""
    with torch.no_grad():
        for linear in model.labels.into:
            linear.parametrizations.weight.original0.fill_(1.0)
    return model


def test_an_unconditioned_model_is_unchanged_bit_for_bit():
    for (frame_sizes, rnn_type), (layout, expected) in zip(
            (([16], "gru"), ([2, 8], "lstm"), ([2, 8, 32], "gru")), UNCONDITIONED_INIT):
        torch.manual_seed(0)
        model = SampleRNN(SampleRNNConfig(frame_sizes=frame_sizes, dim=32, emb_dim=8,
                                          q_levels=64, rnn_type=rnn_type))
        assert model.labels is None
        names, projections = init_fingerprint(model)
        assert names == layout, (frame_sizes, rnn_type)
        assert projections == pytest.approx(expected, rel=1e-6, abs=1e-4), (frame_sizes, rnn_type)
    # a conditioned model starts as the unconditioned one: the same logits, bit for bit
    plain, conditioned = _small(), _small(n_labels=3)
    codes = torch.randint(0, 64, (2, 8 + 32), generator=torch.Generator().manual_seed(1))
    expected = plain(codes)[0]
    assert torch.equal(conditioned(codes, label=torch.tensor([0, 2]))[0], expected)
    with pytest.raises(ValueError, match="trained without labels"):
        plain(codes, label=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="conditioned on 3 labels"):
        conditioned(codes)


@pytest.mark.parametrize("into", ["top", "all"])
def test_a_label_changes_its_rows_logits_only(into):
    model = heard(_small(n_labels=3, label_into=into))
    codes = torch.randint(0, 64, (2, 8 + 32), generator=torch.Generator().manual_seed(1))
    codes = codes.repeat(2, 1)
    logits = model(codes, label=torch.tensor([0, 1, 2, 1]))[0]
    assert not torch.allclose(logits[0], logits[2])     # the same codes, another label
    assert torch.equal(logits[1], logits[3])            # the same codes and label
    mixed = model(codes, label=torch.eye(3)[[0, 1, 2, 1]])[0]
    assert torch.allclose(mixed, logits, atol=1e-6)      # a one-hot mix is that label
    n_into = len(model.labels.into)
    assert n_into == (1 if into == "top" else 3)


def test_a_checkpoint_from_before_labels_loads_unconditioned():
    stored = {k: v for k, v in _small().config.to_dict().items()
              if k not in ("n_labels", "label_dim", "label_into")}
    config = SampleRNNConfig.from_dict({**DEVIATIONS, **stored})
    assert config.n_labels == 0 and not config.conditioned


# ---------------------------------------------------------------- the sampler

LABELS = torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("tiers", [2, 3, 4])
@pytest.mark.parametrize("into", ["top", "all"])
@pytest.mark.parametrize("backend", CPU_BACKENDS + ["torch"] + TRITON)
def test_every_backend_generates_each_streams_label(tiers, into, backend):
    """Greedy decoding equals the teacher-forced model's argmax under each stream's label,
    with different labels on the streams of one batch."""
    model = heard(tiny(FRAME_SIZES[tiers], "gru", skip=True, n_labels=3, label_dim=6,
                       label_into=into))
    with torch.no_grad():  # labels far apart: greedy streams of different labels differ
        model.labels.table.weight.mul_(4)
    model = model.float() if backend in ("native", "triton") else model
    lb = model.lookback
    label = LABELS.to(DEVICE)
    out = generate(model, 4, 4 * lb, temperature=0, backend=backend, label=label)
    silence = torch.full((4, lb), silence_code("linear", 64), device=DEVICE)
    with torch.no_grad():
        expected = model(torch.cat([silence, out], 1), label=label)[0].argmax(-1)
    assert torch.equal(out, expected)
    assert torch.equal(out[1], out[3]) and not torch.equal(out[0], out[1])


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["torch"] + TRITON)
def test_sampled_codes_follow_the_model_under_each_label(backend):
    model = heard(tiny([2, 8], "gru", True, n_labels=3, label_dim=6, label_into="all"))
    with torch.no_grad():  # labels far apart: the wrong ones are told apart (below)
        model.labels.table.weight.mul_(4)
    model = model.float()
    label = (torch.arange(1200) % 3).to(DEVICE)
    codes = generate(model, 1200, 4 * model.lookback, temperature=0.8, seed=3, backend=backend,
                     label=label)
    assert pit_chi2(model, codes, 0.8, backend, label=label) < 60
    assert pit_chi2(model, codes, 0.8, backend, label=label.roll(1)) > 300  # the wrong labels


def test_a_shared_prime_is_heard_under_each_streams_label():
    model = heard(tiny([2, 8], "gru", n_labels=3, label_dim=6)).cpu()
    lb = model.lookback
    prime = torch.randint(0, 64, (1, 3 * lb), generator=torch.Generator().manual_seed(2))
    out = generate(model, 4, 2 * lb, temperature=0, prime=prime, label=LABELS, backend="numpy")
    silence = torch.full((4, lb), silence_code("linear", 64))
    whole = torch.cat([silence, prime.expand(4, -1), out], 1)
    with torch.no_grad():
        expected = model(whole, label=LABELS)[0].argmax(-1)[:, -2 * lb:]
    assert torch.equal(out, expected)
    assert torch.equal(out[1], out[3]) and not torch.equal(out[0], out[1])


# ---------------------------------------------------------------- training and evaluation

def _labelled_train(labelled, *overrides):
    return compose_train("debug=tiny", "logger=none", f"dataset.path={labelled}",
                         "dataset.builtin=false", "dataset.num_workers=0", *overrides)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_reports_the_nll_per_label_and_resumes_on_its_trajectory(labelled, tmp_path):
    overrides = ("train.max_steps=8", "eval.every=4", "train.log_every=1", "eval.n_samples=3")
    whole = tmp_path / "whole"
    final = run(_labelled_train(labelled, *overrides), run_dir=whole)
    for split in ("valid", "test"):
        per_label = {k: v for m in _metrics(whole) for k, v in m.items()
                     if k.startswith(f"{split}/nll_bits/")}
        assert sorted(per_label) == [f"{split}/nll_bits/{v}" for v in sorted(VOICES)]
    for name in VOICES:
        assert final[f"test/nll_bits/{name}"] > 0
    config = (whole / "config.yaml").read_text()
    assert "n_labels: 3" in config
    sidecars = sorted((whole / "samples" / "step_8").glob("*.json"))
    assert [json.loads(p.read_text())["label"] for p in sidecars] == sorted(VOICES)

    parts = tmp_path / "parts"  # 4 steps, then resumed to 8
    run(_labelled_train(labelled, *overrides[1:], "train.max_steps=4"), run_dir=parts)
    run(_labelled_train(labelled, *overrides, "resume=auto"), run_dir=parts)
    for key in ("train/nll_bits", "valid/nll_bits", "valid/nll_bits/bass"):
        assert _steps(parts, key) == _steps(whole, key), key
    for key in ("test/nll_bits", "test/nll_bits/alto"):
        assert _steps(parts, key)[-1] == _steps(whole, key)[-1], key


def test_label_dim_0_trains_without_the_labels_and_says_so(labelled, tmp_path, caplog):
    run(_labelled_train(labelled, "model.label_dim=0", "eval.n_samples=0"), run_dir=tmp_path)
    assert "model.label_dim=0 trains without them" in caplog.text
    assert "n_labels: 0" in (tmp_path / "config.yaml").read_text()


def test_evaluation_gives_each_files_nll_and_scores_under_any_label(labelled):
    model = heard(tiny([2, 8], "gru", n_labels=3, label_dim=6)).float().cpu()
    dataset = PreparedDataset(labelled)
    own = evaluate_nll(model, dataset, "test", 2, 64, torch.device("cpu"))
    files = own["files"]
    assert [f["label"] for f in files] == sorted(VOICES)
    assert sum(f["n_samples"] for f in files) == own["n_samples"]
    weighted = sum(f["nll_bits"] * f["n_samples"] for f in files) / own["n_samples"]
    assert weighted == pytest.approx(own["nll_bits"], rel=1e-6)  # float32 sums
    assert own["by_label"]["alto"]["nll_bits"] == pytest.approx(files[0]["nll_bits"])
    as_alto = evaluate_nll(model, dataset, "test", 3, 64, torch.device("cpu"), as_label=0)
    assert as_alto["files"][0]["nll_bits"] == pytest.approx(files[0]["nll_bits"], rel=1e-6)
    assert as_alto["files"][1]["nll_bits"] != pytest.approx(files[1]["nll_bits"], rel=1e-6)


@pytest.fixture(scope="module")
def conditioned_run(labelled, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("conditioned")
    run(_labelled_train(labelled, "eval.n_samples=0"), run_dir=run_dir)
    return run_dir


def _command(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=300)


def test_generate_makes_files_per_label_or_of_a_mix(conditioned_run, tmp_path):
    ckpt = conditioned_run / "checkpoints" / "best.pt"
    common = (f"checkpoint={ckpt}", "seconds=0.05", "num_samples=2")
    cases = {"every": ((), ["alto_t1_000", "alto_t1_001", "bass_t1_000", "bass_t1_001",
                            "tenor_t1_000", "tenor_t1_001"]),
             "one": (("label=bass",), ["bass_t1_000", "bass_t1_001"]),
             "list": (("label=[tenor,alto]", "num_samples=1"), ["alto_t1_000", "tenor_t1_000"]),
             "mix": (("label_mix=[alto:0.25,bass:0.75]",), ["mix_t1_000", "mix_t1_001"])}
    for name, (args, stems) in cases.items():
        out = tmp_path / name
        done = _command("generate.py", *common, *args, f"out_dir={out}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert sorted(p.stem for p in out.glob("*.wav")) == stems
        sidecar = json.loads((out / f"{stems[0]}.json").read_text())
        if name == "mix":
            assert sidecar["label_mix"] == {"alto": 0.25, "bass": 0.75}
        else:
            assert sidecar["label"] == stems[0].split("_")[0]
    for args, said in ((("label=soprano",), "label='soprano' is unknown; the labels are alto, "
                        "bass, tenor"),
                       (("label_mix=[alto]",), "write it as [label:weight,label:weight]"),
                       (("label=alto", "label_mix=[bass:1]"), "give label= or label_mix=")):
        done = _command("generate.py", *common, *args, f"out_dir={tmp_path / 'bad'}", cwd=tmp_path)
        assert done.returncode == 2 and said in done.stderr, done.stderr[-2000:]
        assert not (tmp_path / "bad").exists()


def test_evaluate_scores_under_a_label_and_refuses_a_model_without_labels(
        conditioned_run, tiny_dataset, tmp_path):
    ckpt = conditioned_run / "checkpoints" / "best.pt"
    done = _command("evaluate.py", f"checkpoint={ckpt}", "label=tenor", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(ckpt.with_name("eval_test_best_files_as_tenor.json").read_text())
    assert result["scored_as"] == "tenor" and len(result["files"]) == 3
    # unlabelled data: a conditioned model needs label= to score it
    done = _command("evaluate.py", f"checkpoint={ckpt}", f"dataset.path={tiny_dataset}",
                    cwd=tmp_path)
    assert done.returncode == 2 and "give label=<one of the model's>" in done.stderr
    done = _command("evaluate.py", f"checkpoint={ckpt}", f"dataset.path={tiny_dataset}",
                    "label=alto", f"out={tmp_path / 'x.json'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_label_check_tells_made_voices_apart(conditioned_run, tmp_path):
    """On three tones a classifier of the real audio is right on every held-out file, both
    the one of the audio as the model codes it and the one of the 16-bit audio; the report
    has the confusion matrices and the generated samples, each heard by both."""
    ckpt = conditioned_run / "checkpoints" / "best.pt"
    done = _command("label_check.py", str(ckpt), "--per-label", "2", "--seconds", "0.5",
                    "--out", str(tmp_path / "check.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["labels"] == sorted(VOICES)
    real = report["classifier"]["real"]
    assert real["accuracy"] == 1.0 and set(real["accuracy_at_gain"]) == {"0.5", "2"}
    assert set(real["rms"]) == set(VOICES) and all(0 < r < 1 for r in real["rms"].values())
    assert sum(map(sum, report["likelihood"]["confusion"])) == 3
    generated = report["classifier"]["generated"]
    assert sum(map(sum, generated["confusion"])) == 6 and len(generated["samples"]) == 6
    assert all(Path(s["wav"]).is_file() for s in generated["samples"])
    assert set(generated["rms"]) == set(VOICES)
    assert "by likelihood, test files" in done.stdout and "RMS level, real / generated" in done.stdout
    coded, original = report["classifier"], report["classifier_16bit"]
    assert coded["audio"].startswith("as the model codes it") and original["audio"].startswith("16-bit")
    assert original["real"]["accuracy"] == 1.0 and 0 <= original["real"]["accuracy_as_coded"] <= 1
    assert sum(map(sum, original["generated"]["confusion"])) == 6
    assert {s["picked_16bit"] for s in generated["samples"]} <= set(VOICES)
    assert "the classifier of the 16-bit recordings" in done.stdout
    done = _command("label_check.py", str(ckpt), "--per-label", "0", cwd=tmp_path)
    assert done.returncode == 2 and "error: --per-label=0" in done.stderr


def test_the_classifier_separates_voices_on_its_own():
    from samplernn.label_check import LogisticRegression, VoiceFeatures
    features = VoiceFeatures(16000)
    rng = np.random.default_rng(0)
    x, y = [], []
    for j, freq in enumerate(VOICES.values()):
        for i in range(8):
            t = np.arange(8000) / 16000
            wav = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
            x.append(features(wav))
            y.append(j)
    x, y = np.stack(x), np.array(y)
    train = np.arange(len(y)) % 4 != 0
    classifier = LogisticRegression().fit(x[train], y[train], 3)
    assert (classifier.predict(x[~train]) == y[~train]).all()


@pytest.mark.slow
def test_a_preempted_labelled_run_continues_on_the_same_trajectory(labelled, tmp_path):
    preempted_and_resumed(labelled, tmp_path, ("train/nll_bits", "valid/nll_bits",
                                               "valid/nll_bits/tenor", "test/nll_bits/bass"))


def test_a_diverging_labelled_run_stops_with_one_line(labelled, tmp_path):
    from samplernn.train import Diverged
    with pytest.raises(Diverged, match="not finite for 2 steps in a row"):
        run(_labelled_train(labelled, "optim.lr=1e10", "train.max_nonfinite_steps=2",
                            "train.max_steps=20", "eval.n_samples=0"), run_dir=tmp_path)


def test_a_long_file_walking_on_alone_gives_the_same_nlls(tmp_path):
    """Rows whose files are done sit out the batches (a long file walks on alone): each
    file's NLL is the one a batch of one row gives."""
    source = tmp_path / "source"
    for i in range(5):
        _voice(source / "short" / f"{i}.wav", 330, 0.6, i)
    _voice(source / "long" / "0.wav", 110, 2.5, 9)
    prepare(source, tmp_path / "data", labels="folders", valid_fraction=0.0, test_fraction=0.0,
            num_workers=0)
    dataset = PreparedDataset(tmp_path / "data")
    model = heard(tiny([2, 8], "lstm", n_labels=2, label_dim=6)).cpu()
    one = evaluate_nll(model, dataset, "train", 1, 256, torch.device("cpu"))
    many = evaluate_nll(model, dataset, "train", 4, 256, torch.device("cpu"))
    assert [f["nll_bits"] for f in many["files"]] == pytest.approx(
        [f["nll_bits"] for f in one["files"]], rel=1e-12)
    assert many["n_samples"] == one["n_samples"] == dataset.n_samples("train")


def test_the_paper_protocol_counts_each_files_pieces_once(labelled):
    model = heard(tiny([2, 8], "gru", n_labels=3, label_dim=6)).float().cpu()
    dataset = PreparedDataset(labelled)
    files = evaluate_nll(model, dataset, "test", 2, 64, torch.device("cpu"))
    pieces = evaluate_nll(model, dataset, "test", 2, 64, torch.device("cpu"), protocol="paper")
    assert pieces["nll_bits"] != pytest.approx(files["nll_bits"], rel=1e-6)  # state resets
    assert [f["n_samples"] for f in pieces["files"]] == [f["n_samples"] for f in files["files"]]
    weighted = sum(f["nll_bits"] * f["n_samples"] for f in pieces["files"]) / pieces["n_samples"]
    assert weighted == pytest.approx(pieces["nll_bits"], rel=1e-6)  # float32 sums


# ---------------------------------------------------------------- data parallel

@pytest.mark.slow
def test_two_processes_with_labels_follow_the_single_process_run(labelled, tmp_path):
    steps = ("train.max_steps=40", "train.batch_size=4", "eval.every=20", "train.log_every=4",
             "eval.n_samples=0", "dataset.num_workers=0")
    single, double = tmp_path / "single", tmp_path / "double"
    done = subprocess.run(command(*tiny_train(labelled, single, *steps), tmp=tmp_path),
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(torchrun(2, *tiny_train(labelled, double, *steps), tmp=tmp_path),
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for key in ("train/nll_bits", "valid/nll_bits", "test/nll_bits", "test/nll_bits/bass"):
        _close(_steps(double, key), _steps(single, key))  # within TOL
