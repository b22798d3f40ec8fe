"""Build a listening test: the stimuli of every condition, equal in length and loudness,
under opaque ids, with the trials and the database, in one test directory.

A condition is a run directory (its checkpoints/best.pt, else last.pt), a checkpoint, or a
folder of WAV files; `real` adds the data themselves (clips of a prepared dataset's test
split). Every model condition generates `n_items` stimuli with the same seeds (item i is
stream i of one batch seeded `seed`) and its own temperature. MUSHRA adds, per item, the
open reference (a real clip), a hidden copy of it and a low anchor (the reference low-passed
at `anchor_hz`, as ITU-R BS.1534-3 asks).

Loudness: each stimulus is scaled to `loudness_lufs` (ITU-R BS.1770 integrated loudness,
torchaudio's), and all of them together a little lower if that would push a peak past
-1 dBFS, so louder never wins. A stimulus too quiet to measure (silence) keeps its level
and the build says so.
"""

import math
import secrets
import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
import yaml

from ..audio import AudioError, audio_info, pcm16_to_float, read_audio, write_wav
from ..checkpoint import load_checkpoint
from ..data import PreparedDataset
from ..errors import AlreadyExists, BadFile, ConfigError, NotFound
from ..quantization import dequantize
from ..sampler import generate
from .store import Store

PEAK_LIMIT = 10 ** (-1 / 20)  # -1 dBFS
MIN_SECONDS = 0.4  # one BS.1770 gating block
SILENT_LUFS = -70.0  # BS.1770's absolute gate: quieter than this has no loudness to match
REAL = "real_data"  # the name of the real-data condition


def condition_sources(conditions, real) -> list[dict]:
    """conditions: a list of paths (named by their folder) or a {name: path} mapping ->
    [{name, source, kind}], kind "checkpoint" or "wavs"; `real` appends the data."""
    if isinstance(conditions, dict) or hasattr(conditions, "items"):
        named = [(str(k), str(v)) for k, v in conditions.items()]
    else:
        named = [(_name_of(Path(str(p))), str(p)) for p in conditions or []]
    out = [{"name": n, **_source(Path(p))} for n, p in named]
    if real not in (None, False, "false"):
        source = None if real is True else str(Path(str(real)).resolve())
        out.append({"name": REAL, "source": source, "kind": "real"})
    names = [c["name"] for c in out]
    if len(out) < 2:
        raise ConfigError(f"a listening test needs at least two conditions, got {len(out)} "
                          f"({', '.join(names) or 'none'}); give conditions=[<run dir>,<run "
                          "dir>] and/or real=true")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"conditions named twice: {', '.join(twice)}; name them: "
                          "conditions={a:<path>,b:<path>}")
    return out


def _name_of(path: Path) -> str:
    if path.suffix == ".pt":  # runs/x/checkpoints/best.pt -> x
        return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return path.name


def _source(path: Path) -> dict:
    path = path.resolve()
    if path.is_file() and path.suffix == ".pt":
        return {"source": str(path), "kind": "checkpoint"}
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return {"source": str(path / "checkpoints" / name), "kind": "checkpoint",
                        "run_dir": str(path)}
        if sorted(path.glob("*.wav")):
            return {"source": str(path), "kind": "wavs"}
        raise NotFound(f"{path} has no checkpoints/best.pt or last.pt and no WAV files; give a "
                       "run directory, a checkpoint or a folder of WAV files")
    raise NotFound(f"condition {path} does not exist; give a run directory, a checkpoint "
                   "(.pt) or a folder of WAV files")


def build(out: Path, conditions: list[dict], *, mode: str, n_items: int, seconds: float,
          temperature, seed: int, allow_tie: bool, anchor_hz: float, loudness_lufs: float,
          items_per_rater: int | None = None, device: str = "cpu",
          overwrite: bool = False) -> dict:
    """Write the test directory `out` (stimuli/, test.yaml, listen.db) -> its meta dict."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise AlreadyExists(f"{out} exists; give another test=<dir> or overwrite=true")
    if mode == "mushra" and not any(c["kind"] == "real" for c in conditions):
        raise ConfigError("mode=mushra needs the real data as its reference: add real=true")
    if n_items < 1 or not seconds >= MIN_SECONDS:
        raise ConfigError(f"n_items={n_items} seconds={seconds}: give at least one item of at "
                          f"least {MIN_SECONDS} s (BS.1770 measures loudness in 0.4-s blocks)")
    audio, rate = _render(conditions, n_items, seconds, temperature, seed, device)
    audio, roles = _with_roles(audio, conditions, mode, rate, anchor_hz)
    meta = {"mode": mode, "token": secrets.token_urlsafe(18), "sample_rate": rate,
            "seconds": seconds, "n_items": n_items, "seed": seed, "allow_tie": bool(allow_tie),
            "loudness_lufs": loudness_lufs, "anchor_hz": anchor_hz if mode == "mushra" else None,
            "items_per_rater": items_per_rater, "name": out.name,
            "runs": {c["name"]: c["run_dir"] for c in conditions if c.get("run_dir")}}
    real = next((c["source"] for c in conditions if c["kind"] == "real"), None)
    sources = {n: next((c["source"] for c in conditions if c["name"] == n), real) for n in audio}
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:  # nothing half-built stays: the test appears whole, or not at all
        (partial / "stimuli").mkdir(parents=True)
        stimuli, meta["quiet"] = _write_stimuli(partial / "stimuli", audio, rate, loudness_lufs)
        trials, items = _trials(mode, list(audio), stimuli, n_items)
        Store(partial / "listen.db").create(
            meta, [{"name": n, "source": sources[n] or "", "role": roles[n]} for n in audio],
            stimuli, trials, items)
        record = {k: meta[k] for k in ("mode", "n_items", "seconds", "seed", "allow_tie",
                                       "loudness_lufs", "anchor_hz", "items_per_rater", "quiet")}
        record.update(conditions={n: {"role": roles[n], "source": sources[n]} for n in audio},
                      temperature=temperature, trials=len(trials))
        (partial / "test.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return meta


def _with_roles(audio: dict, conditions: list[dict], mode: str, rate: int, anchor_hz: float):
    """-> (clips by condition, in the test's order; role by condition). MUSHRA turns the real
    clips into the open reference, a hidden copy and the low anchor."""
    roles = {c["name"]: "real" if c["kind"] == "real" else "system" for c in conditions}
    if mode != "mushra":
        return audio, roles
    reference = audio.pop(REAL)
    roles.pop(REAL)
    audio = {"reference": reference, "hidden_reference": [w.copy() for w in reference],
             "anchor": [_low_pass(w, rate, anchor_hz) for w in reference], **audio}
    return audio, {"reference": "reference", "hidden_reference": "hidden_reference",
                   "anchor": "anchor", **roles}


def _trials(mode: str, names: list[str], stimuli: list[dict], n_items: int):
    """-> (the stimulus ids of each trial, each trial's item). A/B: every pair of conditions
    on every item; MUSHRA: one trial per item, the reference's id first."""
    ids = {(s["condition"], s["item"]): s["id"] for s in stimuli}
    if mode == "ab":
        pairs = list(combinations(names, 2))
        return ([[ids[a, i], ids[b, i]] for a, b in pairs for i in range(n_items)],
                [i for _ in pairs for i in range(n_items)])
    return [[ids[n, i] for n in names] for i in range(n_items)], list(range(n_items))


def _render(conditions: list[dict], n_items: int, seconds: float, temperature, seed: int,
            device: str) -> tuple[dict[str, list[np.ndarray]], int]:
    """Each condition's n_items clips, float [length] at one sample rate."""
    audio, rates, models, first_data = {}, {}, {}, None
    for c in conditions:
        if c["kind"] == "checkpoint":
            models[c["name"]], info = load_checkpoint(c["source"], torch.device(device))
            rates[c["name"]] = info.get("sample_rate") or 16000
            first_data = first_data or (info.get("dataset") or {}).get("path")
    for c in conditions:
        if c["kind"] == "wavs":
            rates[c["name"]] = _wav_rate(Path(c["source"]))
        elif c["kind"] == "real":
            c["source"] = c["source"] or first_data
            if not c["source"]:
                raise ConfigError("real=true takes the data of the first checkpoint, and "
                                  "there is none; give real=<prepared dataset folder>")
            rates[c["name"]] = PreparedDataset(c["source"]).sample_rate
    if len(set(rates.values())) > 1:
        raise ConfigError("the conditions have different sample rates ("
                          + ", ".join(f"{n} {r} Hz" for n, r in rates.items())
                          + "); compare runs on data of one rate")
    rate = next(iter(rates.values()))
    length = int(round(seconds * rate))
    for c in conditions:
        temp = temperature.get(c["name"], 1.0) if hasattr(temperature, "get") else temperature
        if c["kind"] == "checkpoint":
            audio[c["name"]] = _generated(models[c["name"]], n_items, length, float(temp), seed)
        elif c["kind"] == "wavs":
            audio[c["name"]] = _wav_clips(Path(c["source"]), n_items, length, rate)
        else:
            audio[c["name"]] = _real_clips(c["source"], n_items, length, seed)
    return audio, rate


def _generated(model, n: int, length: int, temperature: float, seed: int) -> list[np.ndarray]:
    cfg = model.config
    lb = model.lookback
    label = None
    if cfg.conditioned:  # item i under label i mod n_labels
        label = torch.arange(n) % cfg.n_labels
    codes = generate(model, n, -(-length // lb) * lb, temperature=temperature, seed=seed,
                     label=label)[:, :length]
    return list(dequantize(codes.cpu(), cfg.q_type, cfg.q_levels).numpy())


def _wav_rate(folder: Path) -> int:
    rates = {}
    for path in sorted(folder.glob("*.wav")):
        try:
            rates.setdefault(audio_info(path)["sample_rate"], path)
        except AudioError as error:
            raise BadFile(str(error)) from None
    if len(rates) > 1:
        mixed = ", ".join(f"{r} Hz: {p.name}" for r, p in rates.items())
        raise BadFile(f"{folder} mixes sample rates ({mixed}); give a folder of one rate")
    return next(iter(rates))


def _wav_clips(folder: Path, n: int, length: int, rate: int) -> list[np.ndarray]:
    """The first `length` samples of the first n WAV files (sorted by name)."""
    paths = sorted(folder.glob("*.wav"))
    if len(paths) < n:
        raise BadFile(f"{folder} has {len(paths)} WAV files and the test needs n_items={n}; "
                      "add files or lower n_items")
    clips = []
    for path in paths[:n]:
        wav = read_audio(path, rate)
        if len(wav) < length:
            raise BadFile(f"{path} is {len(wav) / rate:.2f} s long and the stimuli are "
                          f"{length / rate:.2f} s; lower seconds= or drop the file")
        clips.append(wav[:length])
    return clips


def _real_clips(path: str, n: int, length: int, seed: int) -> list[np.ndarray]:
    """n clips of the test split (valid if the test split is empty): files taken in turn,
    each clip at a seeded random offset within its file."""
    dataset = PreparedDataset(path)
    files = [f for f in dataset.files("test") if f["n_samples"] >= length] or \
        [f for f in dataset.files("valid") if f["n_samples"] >= length]
    if not files:
        raise BadFile(f"{path}: no test or valid file is {length / dataset.sample_rate:.2f} s "
                      "long; lower seconds=")
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        f = files[i % len(files)]
        start = f["offset"] + int(rng.integers(0, f["n_samples"] - length + 1))
        clips.append(pcm16_to_float(dataset.samples[start:start + length]))
    return clips


def _low_pass(wav: np.ndarray, rate: int, cutoff_hz: float) -> np.ndarray:
    """Four cascaded biquads (48 dB per octave) at min(cutoff, 0.45 rate)."""
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    for _ in range(4):
        x = AF.lowpass_biquad(x, rate, min(cutoff_hz, 0.45 * rate))
    return x.numpy()


def loudness(wav: np.ndarray, rate: int) -> float:
    """BS.1770 integrated loudness in LUFS; -inf for silence. Measured at a peak of at most
    0.25 and scaled back: torchaudio's K-weighting filters clamp to [-1, 1], which reads
    loud audio (full-scale noise) up to 1.5 LU too quiet."""
    wav = np.asarray(wav, np.float32)
    peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
    scale = 0.25 / peak if peak > 0.25 else 1.0
    value = float(AF.loudness(torch.from_numpy(wav * scale)[None], rate))
    return value - 20 * math.log10(scale) if math.isfinite(value) else -math.inf


def _write_stimuli(folder: Path, audio: dict, rate: int, target_lufs: float):
    """Every clip scaled to the common loudness and written as <opaque id>.wav ->
    ([{id, condition, item, file, loudness_lufs, gain_db}], [quiet stimuli])."""
    measured = {(name, i): loudness(w, rate) for name, clips in audio.items()
                for i, w in enumerate(clips)}
    loud = {k: v for k, v in measured.items() if v > SILENT_LUFS}
    peaks = {k: float(np.max(np.abs(audio[k[0]][k[1]]))) for k in loud}
    # lower the common target until no scaled peak passes -1 dBFS
    headroom = min([20 * math.log10(PEAK_LIMIT / peaks[k]) - (target_lufs - v)
                    for k, v in loud.items() if peaks[k] > 0] + [0.0])
    target = target_lufs + min(0.0, headroom)
    stimuli, quiet = [], []
    for (name, i), value in measured.items():
        gain_db = target - value if (name, i) in loud else 0.0
        if (name, i) not in loud:
            quiet.append(f"{name} item {i}")
        sid = secrets.token_hex(8)
        wav = audio[name][i] * 10 ** (gain_db / 20)
        write_wav(folder / f"{sid}.wav", np.clip(wav, -1.0, 1.0), rate)
        stimuli.append({"id": sid, "condition": name, "item": i, "file": f"stimuli/{sid}.wav",
                        "loudness_lufs": value if math.isfinite(value) else None,
                        "gain_db": gain_db, "target_lufs": target})
    return stimuli, quiet
