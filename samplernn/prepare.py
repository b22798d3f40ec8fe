"""Turn any folder of audio into a prepared dataset that training memory-maps.

    python datasets/prepare.py source=<folder> name=<name>     # -> data/<name>/

Output (written to a hidden temporary folder beside `out_dir`, renamed at the end):
    samples.npy    int16 [n_samples]: every kept file, mono, resampled, concatenated
                   (wav = samples / 32768); open with np.load(path, mmap_mode="r").
    manifest.json  version, name, sample_rate, n_samples, split_mode, options, files
                   (source, sha256, offset, n_samples, seconds, split[, block]), splits, inputs.
    report.json    what was skipped and why (reasons: empty, not_audio, unreadable,
                   too_short, silent, bad_samples: NaN, infinite or absurd values; a folder
                   that cannot be read is an entry ending in "/"), counts by reason, and the
                   files whose values beyond +-1 were clipped (before normalising).

Every regular file under the folder is tried once (hidden files and folders are ignored;
symbolic links are followed, but a file reached twice is taken once and link loops are cut);
files fail one by one, never the run; a full disk stops it, leaving nothing behind. One
prepare at a time writes an out_dir (a lock beside it). Normalisation: "none" keeps the decoded level
(clipped to 16 bits); "peak" scales each file so max |x| = PEAK_LEVEL; "minmax" maps
each `chunk_seconds` chunk of a file onto [-1, 1], the SampleRNN authors' protocol
(adds a DC offset; use it only to compare with published numbers).
Labels (`labels=folders` or a path,label file, samplernn/labels.py): each file's `label` and
the vocabulary `labels` in the manifest, minutes per label and split in `label_splits`.
Features (`features=logmel`, samplernn/features.py): features.npy, float32 [frames, n_mels],
every file's log-mel frames concatenated (its `feature_offset` and `n_frames` in the
manifest), computed from the stored samples; the spec and the train split's per-band mean
and standard deviation in the manifest's `features`.
Splits are by file (seeded permutation, counts rounded from the fractions, at least one
file for each split with a fraction > 0); when there are too few files for that, every
file is cut into contiguous time blocks and the blocks are split instead.
"""

import contextlib
import errno
import hashlib
import json
import multiprocessing as mp
import os
import select
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from samplernn.audio import (AudioError, audio_info, float_to_pcm16, iter_audio_blocks,
                             pcm16_to_float)
from samplernn.choices import Normalize, words
from samplernn.commands import command
from samplernn.data import MANIFEST_VERSION, SPLITS  # the reader's format: one definition
from samplernn.errors import (AlreadyExists, BadFile, ConfigError, NotFound, check_int,
                             check_number)
from samplernn import features as featuring
from samplernn import labels as labelling
from samplernn.interrupt import STOP_SIGNALS, Stopped, abort_on_signals, signal_name, signals_held
from samplernn.lock import DirLock, readers

NORMALIZE = words(Normalize)
PEAK_LEVEL = 0.99
MAX_AMPLITUDE = 1000.0  # decoded values beyond this (or non-finite) mean a damaged file
# Options that change the prepared data; a re-run with the same ones and inputs is a no-op.
DATA_OPTIONS = ("sample_rate", "normalize", "valid_fraction", "test_fraction", "seed",
                "min_seconds", "chunk_seconds", "silence_db")
_BLOCK = 1 << 20
SMALL_INPUT_BYTES = 64 << 20     # num_workers=None decodes less in-process (workers cost ~4 s)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _walk(source: Path, exclude: Path) -> tuple[list[tuple[str, Path]], list[dict]]:
    """(relative posix path, path) of every non-hidden regular file, sorted, each real file
    once (symbolic links are followed, but a file or folder reached twice, or a link loop,
    is visited once); and the folders that could not be read, as report entries."""
    if source.is_file():
        return [(source.name, source)], []
    found, seen_dirs, seen_files, unreadable = [], set(), set(), []

    def cannot_read(error: OSError) -> None:
        rel = Path(error.filename).relative_to(source).as_posix() if error.filename else "?"
        unreadable.append({"source": rel + "/", "reason": "unreadable",
                           "detail": f"the folder cannot be read ({error.strerror}); its files "
                                     "were not looked at"})

    real_source = os.path.realpath(source)

    def outside(real: str) -> bool:
        return os.path.commonpath([real, real_source]) != real_source

    for root, dirs, names in os.walk(source, followlinks=True, onerror=cannot_read):
        real_root = os.path.realpath(root)
        if real_root in seen_dirs:   # reached again through links: walked already
            dirs[:] = []
            continue
        seen_dirs.add(real_root)
        kept = []
        for d in sorted(dirs):
            path = Path(root) / d
            real = os.path.realpath(path)
            if d.startswith(".") or Path(real) == exclude:
                continue
            if path.is_symlink() and not outside(real):
                continue             # a link into the tree: walked at its own place
            kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            path = Path(root) / name
            if not name.startswith(".") and path.is_file():
                found.append((path.relative_to(source).as_posix(), path))
    # one path per real file: its own place in the tree where it has one, else the first link
    direct = {rel: os.path.realpath(path) == os.path.join(real_source, rel) for rel, path in found}
    unique = []
    for rel, path in sorted(found, key=lambda item: (not direct[item[0]], item[0])):
        real = os.path.realpath(path)
        if real not in seen_files:
            seen_files.add(real)
            unique.append((rel, path))
    return sorted(unique), unreadable


def _to_pcm16(f32_path: Path, pcm_path: Path, n: int, peak: float, opts: dict) -> None:
    """Normalise the decoded float32 part [n] and write it as raw int16 [n]. Values beyond
    +-1 are clipped first (peak: of the clipped audio)."""
    x = np.memmap(f32_path, dtype=np.float32, mode="r", shape=(n,))
    mode = opts["normalize"]
    chunk = max(1, round(opts["chunk_seconds"] * opts["sample_rate"]))
    step = chunk if mode == "minmax" else _BLOCK
    with open(pcm_path, "wb") as out:
        for a in range(0, n, step):
            y = normalised(np.asarray(x[a:a + step], dtype=np.float32), mode, peak)
            out.write(float_to_pcm16(y).astype("<i2").tobytes())
    del x


def normalised(y: np.ndarray, mode: str, peak: float) -> np.ndarray:
    """One block of decoded audio as prepare stores it (before 16 bits): clipped to +-1,
    then scaled (peak: by PEAK_LEVEL / the clipped file's peak) or, for minmax, the block
    (one chunk) mapped onto [-1, 1]."""
    y = np.clip(y, -1.0, 1.0)
    if mode == "peak":
        return y * np.float32(PEAK_LEVEL / peak)
    if mode == "minmax":
        lo, hi = float(y.min()), float(y.max())
        return (y - lo) * np.float32(2.0 / (hi - lo)) - 1 if hi > lo else np.zeros_like(y)
    return y


def as_stored(wav: np.ndarray, opts: dict) -> np.ndarray:
    """A whole decoded file as a dataset prepared with `opts` holds it, float32 (what its
    features are computed from; generation's features of a user file)."""
    mode = opts.get("normalize", "none")
    chunk = max(1, round(opts.get("chunk_seconds", 8.0) * opts["sample_rate"]))
    peak = float(np.abs(np.clip(wav, -1.0, 1.0)).max(initial=0.0)) or 1.0
    step = chunk if mode == "minmax" else max(len(wav), 1)
    blocks = [normalised(wav[a:a + step], mode, peak) for a in range(0, len(wav), step)]
    return pcm16_to_float(float_to_pcm16(np.concatenate(blocks) if blocks else wav))


def _decode_file(index: int, path: Path, part: Path, opts: dict) -> dict:
    """Decode, check and normalise one file into `part` (raw int16). Never raises for bad audio:
    returns {"kept": False, "reason", "detail"} instead."""
    stat = path.stat()
    rec = {"index": index, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sr, f32, min_s = opts["sample_rate"], part.with_suffix(".f32"), opts["min_seconds"]
    try:
        rec["sha256"] = _sha256(path)
        info = audio_info(path)
        rec.update(source_rate=info["sample_rate"], source_channels=info["channels"])
        if info["seconds"] < min_s:
            raise AudioError(path, "too_short", f"{info['seconds']:.3f} s < min_seconds={min_s}")
        n, peak, n_over = 0, 0.0, 0  # NaN and infinities are the decoder's AudioError
        with open(f32, "wb") as f:
            for block in iter_audio_blocks(path, sr):
                f.write(block.astype(np.float32, copy=False).tobytes())
                n += len(block)
                magnitude = np.abs(block)
                peak = max(peak, float(magnitude.max(initial=0.0)))
                n_over += int(np.count_nonzero(magnitude > 1.0))
        if n == 0:
            raise AudioError(path, "empty", "the file decoded to 0 samples")
        if peak > MAX_AMPLITUDE:
            raise AudioError(path, "bad_samples", f"it holds sample values up to {peak:.3g} "
                             f"(beyond +-{MAX_AMPLITUDE:g} where audio is within +-1): the file "
                             "is damaged; repair or remove it")
        if n / sr < min_s:
            raise AudioError(path, "too_short", f"{n / sr:.3f} s < min_seconds={min_s}")
        if peak < 10 ** (opts["silence_db"] / 20):
            raise AudioError(path, "silent", f"peak {peak:.2e} is below silence_db="
                             f"{opts['silence_db']} dBFS")
        _to_pcm16(f32, part, n, min(peak, 1.0), opts)
        rec.update(kept=True, n_samples=n, peak=round(peak, 6))
        if n_over:  # clipped to +-1 before normalising: one outlier must not silence the file
            rec.update(clipped=n_over)
    except AudioError as err:
        rec.update(kept=False, reason=err.reason, detail=err.detail)
    except Exception as err:  # a file must never stop the run; say what happened instead
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # the disk, not the file: stop the run
        rec.update(kept=False, reason="unreadable", detail=f"{type(err).__name__}: {err}")
    finally:
        f32.unlink(missing_ok=True)
    if not rec["kept"]:
        part.unlink(missing_ok=True)
    return rec


def _one_torch_thread() -> int:
    """Resampling runs one file per process; extra intra-op threads only slow it down (measured
    10x slower with 2 threads on a 2-core VM). Returns the previous thread count."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return before


def _worker_init(prepare_pid: int) -> None:
    """A decoding worker: one torch thread; stop signals are prepare's to handle (it ends the
    workers itself); and it ends when prepare ends, however it ends (kill -9 included)."""
    _one_torch_thread()
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(prepare_pid,), daemon=True).start()


def _exit_with(pid: int) -> None:
    """Wait for process `pid` to end, then end this one. Its workers are the forkserver's
    children, not prepare's, and each holds the pipe that keeps the forkserver alive: without
    this they would outlive a killed prepare, and so would the forkserver."""
    try:
        fd = os.pidfd_open(pid)  # Linux: readable once the process has ended
        select.select([fd], [], [])
    except (AttributeError, OSError):
        while _running(pid):
            time.sleep(1.0)
    os._exit(1)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:  # a killed process not yet reaped has ended too
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:
        return True


@contextlib.contextmanager
def _pool(n_workers: int):
    """A pool of decoding workers, ended at once (not waited for) when anything stops prepare.

    forkserver: a fresh server process forks the workers, so no OpenMP state of the caller
    (a trainer that already ran torch) is inherited; torch is imported once there."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["samplernn.prepare"])
    ex = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(os.getpid(),))
    try:
        yield ex
    except BaseException:
        for process in list((getattr(ex, "_processes", None) or {}).values()):
            process.kill()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def _decode_all(jobs: list[tuple], num_workers: int) -> list[dict]:
    """Run _decode_file over jobs (index, path, part, opts) with a progress bar. A worker that
    dies (a decoder crash) does not stop the run: the unfinished files are retried one per
    fresh worker, and the one that kills its worker is reported as unreadable."""
    results: dict[int, dict] = {}
    bar = tqdm(total=len(jobs), unit="file", desc="decoding", dynamic_ncols=True,
               disable=not sys.stderr.isatty())  # a bar only on a terminal, never in batch logs
    if num_workers <= 0:
        import torch
        before = _one_torch_thread()
        try:
            for job in jobs:
                results[job[0]] = _decode_file(*job)
                bar.update()
        finally:
            torch.set_num_threads(before)
    else:
        try:
            with _pool(num_workers) as ex:
                with signals_held():  # a submit may start a worker: a stop lands once it is the pool's
                    futures = [ex.submit(_decode_file, *job) for job in jobs]
                for fut in as_completed(futures):
                    rec = fut.result()
                    results[rec["index"]] = rec
                    bar.update()
        except BrokenProcessPool:
            for job in (j for j in jobs if j[0] not in results):
                try:
                    with _pool(1) as ex:
                        with signals_held():
                            future = ex.submit(_decode_file, *job)
                        results[job[0]] = future.result()
                except BrokenProcessPool:
                    results[job[0]] = {"index": job[0], "kept": False, "reason": "unreadable",
                                       "detail": "the decoder crashed on this file"}
                bar.update()
    bar.close()
    return [results[j[0]] for j in jobs]


def _write_samples(path: Path, parts: list[tuple[Path, int]]) -> int:
    """Concatenate raw int16 parts into one .npy array; returns its length. Plain writes, not
    a memory map: a full disk is an OSError (ENOSPC) to report, not a SIGBUS that kills."""
    total = sum(n for _, n in parts)
    with open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(
            out, {"descr": "<i2", "fortran_order": False, "shape": (total,)})
        for part, n in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
            part.unlink()
    return total


def _split_counts(n: int, opts: dict) -> tuple[int, int]:
    """(n_valid, n_test) out of n items: rounded fractions, at least 1 for a fraction > 0,
    always leaving at least one item for training."""
    counts = [max(1, round(f * n)) if f > 0 else 0
              for f in (opts["valid_fraction"], opts["test_fraction"])]
    while sum(counts) > n - 1 and max(counts) > 1:
        counts[counts.index(max(counts))] -= 1
    return counts[0], counts[1]


def _assign_splits(kept: list[dict], opts: dict) -> tuple[list[dict], str]:
    """Manifest `files` entries (offset order) and the split mode, deterministic in the seed.

    by_file: a seeded permutation of the files; the first n_valid go to valid, the next n_test
    to test. time_blocks (too few files to give every split one): each file is cut into
    contiguous blocks, about 1 / (smallest fraction) blocks in all, and the blocks are split
    the same way; each block is its own entry with its "block" index. With labels the split
    is stratified: each label's files are split so on their own (its own seeded permutation),
    and a label with too few files has its files cut into time blocks ("mixed" when some
    labels are split by file and others by blocks).
    """
    sr = opts["sample_rate"]
    items, offset = [], 0
    for r in kept:
        items.append({"source": r["source"], "sha256": r["sha256"], "offset": offset,
                      "n_samples": r["n_samples"], "source_rate": r["source_rate"],
                      "source_channels": r["source_channels"], "peak": r["peak"],
                      **({"label": r["label"]} if "label" in r else {}),
                      **({"clipped": r["clipped"]} if r.get("clipped") else {})})
        offset += r["n_samples"]
    groups = sorted({it.get("label") for it in items}, key=lambda x: (x is not None, x))
    out, modes = [], set()
    for g, label in enumerate(groups):
        group = [it for it in items if it.get("label") == label]
        rng = np.random.default_rng(opts["seed"] if label is None else [opts["seed"], g])
        split, mode = _split_group(group, opts, rng)
        out += split
        modes.add(mode)
    for it in out:
        it["seconds"] = round(it["n_samples"] / sr, 6)
    out.sort(key=lambda it: it["offset"])
    return out, modes.pop() if len(modes) == 1 else "mixed"


def _split_group(items: list[dict], opts: dict, rng) -> tuple[list[dict], str]:
    """One group's files (all of them, or one label's) split by file, or by time blocks
    when there are too few files."""
    n_splits = 1 + (opts["valid_fraction"] > 0) + (opts["test_fraction"] > 0)
    mode = "by_file" if len(items) >= n_splits else "time_blocks"
    if mode == "time_blocks":
        total = sum(it["n_samples"] for it in items)
        fractions = [f for f in (opts["valid_fraction"], opts["test_fraction"]) if f > 0]
        n_blocks = max(n_splits, round(1 / min(fractions)))
        n_blocks = min(n_blocks, max(n_splits, total // max(1, round(opts["min_seconds"]
                                                                     * opts["sample_rate"]))))
        blocks = []
        for it in items:
            k = max(1, round(n_blocks * it["n_samples"] / total))
            edges = [round(i * it["n_samples"] / k) for i in range(k + 1)]
            blocks += [{**it, "offset": it["offset"] + a, "n_samples": b - a, "block": i}
                       for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
        items = blocks
    n_valid, n_test = _split_counts(len(items), opts)
    order = rng.permutation(len(items))
    for rank, i in enumerate(order):
        items[i]["split"] = ("valid" if rank < n_valid else
                             "test" if rank < n_valid + n_test else "train")
    return items, mode


def _split_totals(files: list[dict], sample_rate: int) -> dict:
    totals = {}
    for s in SPLITS:
        n = sum(f["n_samples"] for f in files if f["split"] == s)
        totals[s] = {"n_files": sum(f["split"] == s for f in files), "n_samples": n,
                     "seconds": round(n / sample_rate, 6)}
    return totals


def _label_totals(files: list[dict], vocabulary: list[str], sample_rate: int) -> dict:
    """Per label, per split: its files (or blocks) and seconds."""
    return {label: _split_totals([f for f in files if f["label"] == label], sample_rate)
            for label in vocabulary}


def _unchanged(manifest: dict, options: dict, found: list[tuple[str, Path]]) -> bool:
    """True when the manifest was made with these data options from these exact inputs
    (same relative paths and content; files whose size and mtime match are not re-hashed)."""
    if any(manifest["options"].get(k) != options.get(k)
           for k in DATA_OPTIONS + labelling.OPTIONS + ("features",)):
        return False
    old = {i["source"]: i for i in manifest.get("inputs", [])}
    if set(old) != {rel for rel, _ in found}:
        return False
    for rel, path in found:
        stat, before = path.stat(), old[rel]
        if stat.st_size != before["bytes"]:
            return False
        if stat.st_mtime_ns != before["mtime_ns"] and _sha256(path) != before["sha256"]:
            return False
    return True


def _print_summary(manifest: dict, report: dict, out_dir: Path) -> None:
    o = manifest["options"]
    print(f"prepared {out_dir} from {report['source']} in {report['elapsed_seconds']:.1f} s")
    print(f"  kept {report['n_kept']} of {report['n_found']} files, "
          f"{manifest['n_samples'] / manifest['sample_rate'] / 60:.2f} min at "
          f"{manifest['sample_rate']} Hz, normalize={o['normalize']}")
    unit = {"time_blocks": "blocks", "mixed": "files/blocks"}.get(manifest["split_mode"], "files")
    parts = [f"{s} {v['n_files']} {unit} {v['seconds'] / 60:.2f} min"
             for s, v in manifest["splits"].items()]
    print(f"  split {manifest['split_mode']} (seed {o['seed']}): " + " | ".join(parts))
    for label, splits in manifest.get("label_splits", {}).items():
        parts = [f"{s} {v['n_files']} {v['seconds'] / 60:.2f} min" for s, v in splits.items()]
        blocks = any("block" in f for f in manifest["files"] if f.get("label") == label)
        print(f"  label {label}: " + " | ".join(parts) + (
            " (too few files to give every split one: they were cut into time blocks)"
            if blocks else ""))
    if manifest.get("features"):
        spec = featuring.FeatureSpec.from_dict({**manifest["features"],
                                                "sample_rate": manifest["sample_rate"]})
        print(f"  features: {spec.describe()}; {manifest['features']['n_frames']} frames in "
              f"{out_dir / 'features.npy'}, normalised by the train split's statistics")
    if report["n_skipped"]:
        counts = ", ".join(f"{r} {n}" for r, n in report["counts"].items())
        print(f"  skipped {report['n_skipped']}: {counts} (details in {out_dir / 'report.json'})")
    if report.get("clipped"):
        n = sum(r["clipped"] for r in report["clipped"])
        print(f"  clipped {n} sample values beyond +-1 to +-1 in {len(report['clipped'])} files "
              f"(before normalize={o['normalize']}; details in {out_dir / 'report.json'})")


def _check_options(source: Path, opts: dict) -> None:
    if not source.exists():
        raise NotFound(f"source={source} does not exist; give a folder of audio files")
    if opts["normalize"] not in NORMALIZE:
        raise ConfigError(f"normalize={opts['normalize']!r} is unknown; use one of {NORMALIZE}")
    vf, tf = opts["valid_fraction"], opts["test_fraction"]
    if not (0 <= vf < 1 and 0 <= tf < 1 and vf + tf < 1):
        raise ConfigError(f"valid_fraction={vf}, test_fraction={tf}: each must be in [0, 1) and "
                         "their sum below 1, leaving files for training")
    check_int("sample_rate", opts["sample_rate"], minimum=1)
    check_number("chunk_seconds", opts["chunk_seconds"], above=0)
    check_number("min_seconds", opts["min_seconds"], minimum=0)
    check_number("silence_db", opts["silence_db"])


def _check_not_in_use(out_dir: Path) -> None:
    """A dataset a run reads is not replaced under it (the run would train on the old data
    and validate on the new)."""
    using = readers(out_dir)
    if using:
        raise AlreadyExists(f"{out_dir} is in use: {'; '.join(using)} reads it; wait for it "
                            "to end, or prepare into another name=/out_dir=")


def prepare(source, out_dir, sample_rate: int = 16000, normalize: str = "none",
            valid_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0,
            min_seconds: float = 0.5, overwrite: bool = False, num_workers: int | None = None,
            chunk_seconds: float = 8.0, silence_db: float = -60.0, labels=None,
            features: str | None = None, mel: dict | None = None) -> dict:
    """Prepare every usable audio file under `source` into `out_dir`; returns the manifest.

    num_workers: decoding processes (None = one per CPU core, 0 = decode in this process).
    labels: None, "folders" or a .csv/.tsv file of path,label rows (samplernn/labels.py);
    the split is then stratified by label. features: None or "logmel", made as `mel` says
    (FeatureSpec's n_mels, hop, win, n_fft, f_min, f_max).
    A re-run with the same inputs and data options returns the existing manifest untouched;
    different ones need overwrite=True. Raises ValueError when no file is usable.
    """
    t0 = time.time()
    source, out_dir = Path(source).resolve(), Path(out_dir).resolve()
    opts = {"sample_rate": int(sample_rate), "normalize": str(normalize),
            "valid_fraction": float(valid_fraction), "test_fraction": float(test_fraction),
            "seed": int(seed), "min_seconds": float(min_seconds),
            "chunk_seconds": float(chunk_seconds), "silence_db": float(silence_db)}
    _check_options(source, opts)
    opts.update(labelling.spec_options(labels, Path.cwd()))
    if features:  # none: the manifest of data without features is as it was before them
        spec = featuring.FeatureSpec(sample_rate=opts["sample_rate"], kind=str(features),
                                     **{k: v for k, v in (mel or {}).items() if v is not None})
        opts["features"] = {k: v for k, v in spec.to_dict().items() if k != "sample_rate"}
    with DirLock(out_dir, "prepare", beside=True):  # one prepare per out_dir at a time
        return _prepare(source, out_dir, opts, overwrite, num_workers, t0)


def _up_to_date(source: Path, out_dir: Path, opts: dict, overwrite: bool, found) -> dict | None:
    """The existing manifest when out_dir already holds these inputs prepared this way; None
    when it is to be (re)written; AlreadyExists when that needs overwrite=true, or out_dir
    holds something else, or a run reads it."""
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if _unchanged(old, opts, found) and not overwrite:
            return old
        if not overwrite:
            raise AlreadyExists(f"{out_dir} was prepared from other inputs or options; pass "
                                "overwrite=true to replace it, or choose another name=/out_dir=")
        _check_not_in_use(out_dir)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise AlreadyExists(f"{out_dir} exists and is not a prepared dataset (no manifest.json); "
                            "refusing to write into it: choose another name=/out_dir=")
    return None


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """The finished folder takes out_dir's place; the previous dataset is back if that fails."""
    old_dir = out_dir.parent / f".{out_dir.name}.partial-old-{os.getpid()}"
    if out_dir.exists():
        os.replace(out_dir, old_dir)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old_dir.exists():
            os.replace(old_dir, out_dir)
        raise
    shutil.rmtree(old_dir, ignore_errors=True)


def _prepare(source: Path, out_dir: Path, opts: dict, overwrite: bool, num_workers, t0) -> dict:
    found, unreadable_dirs = _walk(source, exclude=out_dir)
    old = _up_to_date(source, out_dir, opts, overwrite, found)
    if old is not None:
        print(f"{out_dir} is up to date with {source} (pass overwrite=true to rebuild)")
        return old
    if not found:
        raise NotFound(f"no files found under {source}; give a folder that holds audio files")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)    # left by a killed run
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    tmp.mkdir()
    try:
        jobs = [(i, path, tmp / f"{i:07d}.i16", opts) for i, (_, path) in enumerate(found)]
        workers = min(os.cpu_count() or 1, len(jobs)) if num_workers is None else num_workers
        if num_workers is None and sum(p.stat().st_size for _, p in found) < SMALL_INPUT_BYTES:
            workers = 0              # starting workers (importing torch) costs more than it saves
        recs = _decode_all(jobs, workers)
        for rec, (rel, _) in zip(recs, found):
            rec["source"] = rel
        kept = [r for r in recs if r["kept"]]
        skipped = [r for r in recs if not r["kept"]] + unreadable_dirs
        counts = {reason: sum(r["reason"] == reason for r in skipped)
                  for reason in dict.fromkeys(r["reason"] for r in skipped)}
        if not kept:
            examples = "; ".join(f"{r['source']} ({r['reason']}: {r['detail']})"
                                 for r in skipped[:3])
            raise BadFile(f"no usable audio in {source}: {len(found)} files, all skipped "
                          f"({counts}); e.g. {examples}")
        vocabulary = labelling.assign(opts.get("labels"), kept, source)
        n_total = _write_samples(tmp / "samples.npy",
                                 [(tmp / f"{r['index']:07d}.i16", r["n_samples"]) for r in kept])
        files, split_mode = _assign_splits(kept, opts)
        feature_info = _write_features(tmp, files, opts)
        manifest = {
            "version": MANIFEST_VERSION, "name": out_dir.name, "sample_rate": opts["sample_rate"],
            "n_samples": n_total, "sample_format": "int16, wav = samples / 32768",
            "split_mode": split_mode, "source_dir": str(source),
            "options": {**opts, "num_workers": num_workers, "overwrite": overwrite},
            "files": files, "splits": _split_totals(files, opts["sample_rate"]),
            **({"labels": vocabulary,
                "label_splits": _label_totals(files, vocabulary, opts["sample_rate"])}
               if vocabulary is not None else {}),
            **({"features": feature_info} if feature_info else {}),
            "inputs": [{k: r.get(k) for k in ("source", "bytes", "mtime_ns", "sha256")}
                       for r in recs],
        }
        report = {"source": str(source), "out_dir": str(out_dir), "n_found": len(found),
                  "n_kept": len(kept), "n_skipped": len(skipped), "counts": counts,
                  "skipped": [{k: r.get(k) for k in ("source", "reason", "detail")}
                              for r in skipped],
                  "clipped": [{"source": r["source"], "clipped": r["clipped"], "peak": r["peak"]}
                              for r in kept if r.get("clipped")],
                  "elapsed_seconds": round(time.time() - t0, 3)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _print_summary(manifest, report, out_dir)
    return manifest


def _write_features(tmp: Path, files: list[dict], opts: dict) -> dict | None:
    """features.npy from the stored samples of each file entry (each gets its
    feature_offset and n_frames); -> the manifest's `features`: the spec, the train
    split's per-band mean and std, the frame count. None without features=."""
    if not opts.get("features"):
        return None
    spec = featuring.FeatureSpec(sample_rate=opts["sample_rate"], **opts["features"])
    samples = np.load(tmp / "samples.npy", mmap_mode="r")
    frames, offset = [], 0
    for f in files:
        wav = samples[f["offset"]:f["offset"] + f["n_samples"]].astype(np.float32) / 32768.0
        frames.append(featuring.logmel(wav, spec))
        f["feature_offset"], f["n_frames"] = offset, len(frames[-1])
        offset += len(frames[-1])
    mean, std = featuring.statistics([x for x, f in zip(frames, files) if f["split"] == "train"])
    out = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float32,
                                    shape=(offset, spec.n_mels))
    for x, f in zip(frames, files):
        out[f["feature_offset"]:f["feature_offset"] + len(x)] = x
    out.flush()
    del out
    return {**spec.to_dict(), "n_frames": offset, "mean": mean.tolist(), "std": std.tolist()}


def _labels_spec(labels, base: Path):
    """labels=folders as it is; a label file's path resolved where the command started."""
    if labels in (None, "", labelling.FOLDERS):
        return labels or None
    return base / Path(str(labels)).expanduser()


def run(cfg) -> dict:
    """Hydra entry (configs/prepare.yaml): relative paths resolve against the directory the
    command was started in; out_dir defaults to data/<name>."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd
    from omegaconf import OmegaConf
    base = Path(get_original_cwd()) if HydraConfig.initialized() else Path.cwd()
    if OmegaConf.is_missing(cfg, "source"):
        raise ConfigError(f"say which folder to prepare: {command('prepare')} "
                          "source=<folder> name=<name>")
    if cfg.get("out_dir"):
        out_dir = Path(cfg.out_dir)
    elif not OmegaConf.is_missing(cfg, "name") and cfg.name:
        out_dir = Path("data") / str(cfg.name)
    else:
        raise ConfigError("say where to write: name=<name> (-> data/<name>) or out_dir=<folder>")
    out_dir = base / out_dir.expanduser()
    try:
        with abort_on_signals():  # SIGTERM & co. unwind like Ctrl-C: the partial folder goes
            manifest = prepare(base / Path(cfg.source).expanduser(), out_dir,
                               sample_rate=cfg.sample_rate, normalize=cfg.normalize,
                               valid_fraction=cfg.valid_fraction, test_fraction=cfg.test_fraction,
                               seed=cfg.seed, min_seconds=cfg.min_seconds,
                               overwrite=cfg.overwrite, num_workers=cfg.num_workers,
                               chunk_seconds=cfg.chunk_seconds, silence_db=cfg.silence_db,
                               labels=_labels_spec(cfg.get("labels"), base),
                               features=cfg.get("features"),
                               mel={"n_mels": cfg.get("mel_bands"), "hop": cfg.get("mel_hop"),
                                    "win": cfg.get("mel_win"), "n_fft": cfg.get("mel_n_fft")})
    except (KeyboardInterrupt, Stopped) as stop:
        name = "SIGINT" if isinstance(stop, KeyboardInterrupt) else signal_name(stop.signum)
        state = "as it was" if (out_dir / "manifest.json").exists() else "not written"
        print(f"stopped by {name}: nothing was written, {out_dir} is {state}", file=sys.stderr,
              flush=True)
        stop.said = True  # the command's one line (cli.py adds none)
        raise
    shown = os.path.relpath(out_dir) if out_dir.is_relative_to(Path.cwd()) else out_dir
    print(f"Next:\n  train on it    {command('train')} dataset.path={shown}", flush=True)
    return manifest


if __name__ == "__main__":  # python -m samplernn.prepare: the same app as samplernn-prepare
    from .cli import prepare
    prepare()
