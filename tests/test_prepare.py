"""samplernn.prepare: mixed/bad inputs, durations, splits, no-op re-runs, atomicity, Hydra
entry, normalisation; the download helper and the built-in default dataset."""

import importlib.util
import json
import math
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplernn import prepare as prep
from samplernn.audio import read_audio
from samplernn.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]


def _tone(seconds, rate, channels=1, freq=330.0, amp=0.4):
    t = np.arange(round(seconds * rate)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x, 0.5 * x][:channels], axis=1) if channels > 1 else x


GOOD = {  # relative path -> (seconds, source rate, channels, soundfile subtype or None)
    "a_stereo_44k.wav": (1.3, 44100, 2, "PCM_16"),
    "sub/b_22k.flac": (1.1, 22050, 1, None),
    "sub/deeper/c_48k.ogg": (0.9, 48000, 2, None),
    "d_8k.aiff": (1.0, 8000, 1, None),
    "e_16k.wav": (0.75, 16000, 1, "PCM_16"),
}
BAD = {"corrupt.flac": "unreadable", "empty.wav": "empty", "notes.wav": "not_audio",
       "silent.wav": "silent", "short.wav": "too_short", "readme.txt": "not_audio",
       "voice.m4a": "unsupported_format"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    src = tmp_path_factory.mktemp("mixed")
    for rel, (seconds, rate, ch, subtype) in GOOD.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(src / rel, _tone(seconds, rate, ch), rate, subtype=subtype)
    if "MP3" in sf.available_formats():
        sf.write(src / "f_44k.mp3", _tone(1.0, 44100), 44100)
    good_flac = (src / "sub/b_22k.flac").read_bytes()
    (src / "corrupt.flac").write_bytes(good_flac[:4] + bytes(range(256)) * 16)
    (src / "empty.wav").write_bytes(b"")
    (src / "notes.wav").write_text("this is a text file named .wav\n" * 30)
    (src / "readme.txt").write_text("hello\n")
    (src / "voice.m4a").write_bytes(b"\0\0\0\x20ftypM4A \0\0\2\0M4A mp42isom" + bytes(2000))  # AAC in MP4
    sf.write(src / "silent.wav", np.zeros(32000), 16000, subtype="PCM_16")
    sf.write(src / "short.wav", _tone(0.1, 16000), 16000, subtype="PCM_16")
    (src / ".DS_Store").write_bytes(b"\0\1\2")                 # hidden: ignored
    out = tmp_path_factory.mktemp("out") / "mixed"
    manifest = prepare(src, out, num_workers=0)
    return src, out, manifest


def test_good_files_land_with_resampled_durations(mixed):
    src, out, manifest = mixed
    entries = {f["source"]: f for f in manifest["files"]}
    expected = dict(GOOD)
    if "MP3" in sf.available_formats():
        expected["f_44k.mp3"] = (1.0, 44100, 1, None)
    assert set(entries) == set(expected)
    for rel, entry in entries.items():
        frames = sf.info(src / rel).frames
        assert abs(entry["n_samples"] - frames * 16000 / sf.info(src / rel).samplerate) <= 1, rel
        assert entry["seconds"] == pytest.approx(entry["n_samples"] / 16000)
    samples = np.load(out / "samples.npy", mmap_mode="r")
    assert samples.dtype == np.int16 and len(samples) == manifest["n_samples"]
    offsets = sorted((f["offset"], f["n_samples"]) for f in manifest["files"])
    assert offsets[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(offsets, offsets[1:]))
    e = entries["a_stereo_44k.wav"]
    stored = samples[e["offset"]:e["offset"] + e["n_samples"]] / 32768.0
    np.testing.assert_allclose(stored, read_audio(src / "a_stereo_44k.wav", 16000), atol=1e-4)


def test_bad_files_are_reported_by_reason(mixed):
    src, out, manifest = mixed
    report = json.loads((out / "report.json").read_text())
    assert {s["source"]: s["reason"] for s in report["skipped"]} == BAD
    assert report["counts"] == {"unreadable": 1, "empty": 1, "not_audio": 2, "silent": 1,
                                "too_short": 1, "unsupported_format": 1}
    m4a = next(s for s in report["skipped"] if s["source"] == "voice.m4a")
    assert "unsupported format (MP4/M4A, e.g. AAC)" in m4a["detail"] and "ffmpeg" in m4a["detail"]
    assert report["n_found"] == report["n_kept"] + report["n_skipped"] == len(BAD) + len(
        manifest["files"])
    assert all(s["detail"] for s in report["skipped"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["mixed"]   # no temporary left


def test_manifest_records_options_hashes_and_splits(mixed):
    src, out, manifest = mixed
    assert manifest["version"] == 1 and manifest["sample_rate"] == 16000
    assert manifest["split_mode"] == "by_file"
    for key in prep.DATA_OPTIONS:
        assert key in manifest["options"]
    for f in manifest["files"]:
        assert f["sha256"] == prep._sha256(src / f["source"])
    totals = manifest["splits"]
    assert sum(t["n_samples"] for t in totals.values()) == manifest["n_samples"]
    assert totals["valid"]["n_files"] == 1 and totals["test"]["n_files"] == 1


def test_workers_give_the_same_dataset(mixed, tmp_path):
    src, out, manifest = mixed
    m2 = prepare(src, tmp_path / "w2", num_workers=2)
    assert m2["files"] == manifest["files"]
    assert np.array_equal(np.load(tmp_path / "w2" / "samples.npy"), np.load(out / "samples.npy"))


def _many(folder: Path, n: int, seconds: float = 0.6) -> Path:
    folder.mkdir()
    for i in range(n):
        sf.write(folder / f"f{i:02d}.wav", _tone(seconds, 16000, freq=100 + 10 * i), 16000,
                 subtype="PCM_16")
    return folder


def test_split_is_by_file_disjoint_and_seeded(tmp_path):
    src = _many(tmp_path / "src", 40)
    m1 = prepare(src, tmp_path / "s1", seed=1, valid_fraction=0.1, test_fraction=0.05)
    m1b = prepare(src, tmp_path / "s1b", seed=1, valid_fraction=0.1, test_fraction=0.05)
    m2 = prepare(src, tmp_path / "s2", seed=2, valid_fraction=0.1, test_fraction=0.05)
    by_split = {s: {f["source"] for f in m1["files"] if f["split"] == s}
                for s in ("train", "valid", "test")}
    assert (len(by_split["valid"]), len(by_split["test"]), len(by_split["train"])) == (4, 2, 34)
    assert not (by_split["train"] & by_split["valid"] or by_split["train"] & by_split["test"]
                or by_split["valid"] & by_split["test"])
    split_of = lambda m: {f["source"]: f["split"] for f in m["files"]}  # noqa: E731
    assert split_of(m1) == split_of(m1b)
    assert split_of(m1) != split_of(m2)


def test_single_long_file_is_split_in_time_blocks(tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    sf.write(src / "long.flac", _tone(30.0, 16000), 16000)
    m = prepare(src, tmp_path / "out")
    assert m["split_mode"] == "time_blocks"
    blocks = sorted(m["files"], key=lambda f: f["offset"])
    assert [b["block"] for b in blocks] == list(range(len(blocks))) and len(blocks) == 20
    assert blocks[0]["offset"] == 0 and sum(b["n_samples"] for b in blocks) == 30 * 16000
    assert all(a["offset"] + a["n_samples"] == b["offset"] for a, b in zip(blocks, blocks[1:]))
    assert {b["source"] for b in blocks} == {"long.flac"}
    assert [m["splits"][s]["n_files"] for s in ("train", "valid", "test")] == [18, 1, 1]


def test_rerun_is_a_no_op_and_changes_need_overwrite(tmp_path, capsys):
    src = _many(tmp_path / "src", 4)
    out = tmp_path / "out"
    m1 = prepare(src, out)
    stamp = (out / "samples.npy").stat().st_mtime_ns
    os.utime(src / "f00.wav", ns=(1, 1))                  # touched, same content
    assert prepare(src, out) == m1
    assert (out / "samples.npy").stat().st_mtime_ns == stamp
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="overwrite=true"):
        prepare(src, out, normalize="peak")
    sf.write(src / "f01.wav", _tone(0.6, 16000, freq=999), 16000, subtype="PCM_16")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        prepare(src, out)
    m2 = prepare(src, out, overwrite=True)
    assert m2["files"][1]["sha256"] != m1["files"][1]["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_nothing_half_written_on_failure(tmp_path, monkeypatch):
    src = _many(tmp_path / "src", 3)
    out = tmp_path / "out"
    old = prepare(src, out)
    before = (out / "samples.npy").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(prep, "_write_samples", boom)
    with pytest.raises(OSError, match="disk full"):
        prepare(src, out, overwrite=True, seed=5)
    with pytest.raises(OSError, match="disk full"):
        prepare(src, tmp_path / "new")
    assert (out / "samples.npy").read_bytes() == before
    assert json.loads((out / "manifest.json").read_text()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_no_usable_audio_is_a_clear_error(tmp_path):
    src = tmp_path / "junk"
    src.mkdir()
    (src / "a.wav").write_bytes(b"")
    (src / "b.txt").write_text("text")
    with pytest.raises(ValueError, match=r"no usable audio .*'empty': 1.*'not_audio': 1"):
        prepare(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare(tmp_path / "missing", tmp_path / "out")


def test_refuses_to_write_into_a_foreign_folder(tmp_path):
    src = _many(tmp_path / "src", 3)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a prepared dataset"):
        prepare(src, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_normalize_modes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    x = _tone(1.0, 16000, amp=0.2) + 0.1                       # DC offset, peak 0.3
    sf.write(src / "a.wav", x, 16000, subtype="FLOAT")
    sf.write(src / "b.wav", _tone(1.0, 16000, amp=0.05), 16000, subtype="FLOAT")
    kw = dict(valid_fraction=0.0, test_fraction=0.0)
    for mode in ("none", "peak", "minmax"):
        m = prepare(src, tmp_path / mode, normalize=mode, chunk_seconds=0.25, **kw)
        s = np.load(tmp_path / mode / "samples.npy").astype(np.int32)
        a, b = (s[f["offset"]:f["offset"] + f["n_samples"]] for f in m["files"])
        if mode == "none":
            np.testing.assert_allclose(a / 32768, x, atol=1 / 32768)
        elif mode == "peak":
            assert np.abs(a).max() / 32768 == pytest.approx(0.99, abs=1e-4)
            assert np.abs(b).max() / 32768 == pytest.approx(0.99, abs=1e-4)
        else:
            for chunk in np.split(a, 4):                        # 0.25 s chunks span [-1, 1]
                assert (chunk.min(), chunk.max()) == (-32768, 32767)
    with pytest.raises(ValueError, match="normalize"):
        prepare(src, tmp_path / "x", normalize="loud")


def test_hydra_entry_resolves_paths_from_the_start_directory(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    _many(tmp_path / "music", 3)
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("prepare", overrides=["source=music", "name=mine", "seed=3"])
    manifest = prep.run(cfg)
    assert (tmp_path / "data" / "mine" / "samples.npy").is_file()
    assert manifest["options"]["seed"] == 3 and manifest["name"] == "mine"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("prepare", overrides=["name=x"])
    with pytest.raises(ValueError, match="source=<folder>"):
        prep.run(cfg)


def _download_module():
    spec = importlib.util.spec_from_file_location("download", ROOT / "datasets" / "download.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_download_helper_unpacks_local_archives_and_file_urls(tmp_path):
    download = _download_module()
    _many(tmp_path / "raw", 3)
    (tmp_path / "raw" / "f00.mp3").write_bytes(b"duplicate in another format")
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as z:
        for p in sorted((tmp_path / "raw").iterdir()):
            z.write(p, f"set/{p.name}")
    with tarfile.open(tmp_path / "set2.tar.gz", "w:gz") as t:
        t.add(tmp_path / "raw", arcname="inner")
    folder = download.fetch(str(tmp_path / "set.zip"), tmp_path / "dl", only=(".wav",))
    assert folder == tmp_path / "dl" / "set"
    assert sorted(p.name for p in (folder / "set").iterdir()) == ["f00.wav", "f01.wav", "f02.wav"]
    folder2 = download.fetch((tmp_path / "set2.tar.gz").as_uri(), tmp_path / "dl2")
    assert (folder2 / "inner" / "f02.wav").is_file()
    assert download.fetch(str(tmp_path / "set.zip"), tmp_path / "dl") == folder  # no-op
    assert prepare(folder, tmp_path / "prepared")["splits"]["train"]["n_files"] == 1
    assert not [p for p in (tmp_path / "dl").iterdir() if p.name.startswith(".")]


def test_default_dataset_is_deterministic_music_and_prepared(tmp_path):
    from samplernn.synth import build_default_dataset, synthesize
    a = synthesize(tmp_path / "a", n_files=2, seconds=2.0)
    b = synthesize(tmp_path / "b", n_files=2, seconds=2.0)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    x, rate = sf.read(a[0])
    assert rate == 16000 and len(x) == 32000 and 0.25 < np.abs(x).max() < 0.95
    path = build_default_dataset(tmp_path / "data" / "default")
    m = json.loads((path / "manifest.json").read_text())
    assert len(m["files"]) == 24 and m["n_samples"] == 24 * 10 * 16000
    assert m["splits"]["valid"]["n_files"] >= 1 and m["splits"]["test"]["n_files"] >= 1
    stamp = (path / "samples.npy").stat().st_mtime_ns
    assert build_default_dataset(path) == path
    assert (path / "samples.npy").stat().st_mtime_ns == stamp
    assert math.isclose(m["splits"]["train"]["seconds"] + m["splits"]["valid"]["seconds"]
                        + m["splits"]["test"]["seconds"], 240.0)
