"""Loading prepared datasets (see samplernn/prepare.py) for training and evaluation.

Both loaders yield `Batch(codes, reset, mask, label, file[, feats, phase])` chunks for
truncated BPTT. A row walks one segment (training) or one whole file (evaluation) in
consecutive chunks of `seq_len` targets.
Chunk c of a row whose segment starts at source sample s holds the codes of source samples
[s + c * seq_len - lookback, s + (c + 1) * seq_len): the first `lookback` codes are the
model's context (the tail of the previous chunk), the last `seq_len` are the targets.
Positions before s are silence (`silence_code`), so a segment's first sample is predicted
from silence; `reset` says the row's hidden state must start from the initial state.

With features (`features=<radius>`, a dataset prepared with features=logmel), each row also
gets the normalised feature frames of its chunk: from `radius` frames before the frame
holding the chunk's first target to `radius` after the one holding its last (silence's
features beyond the file), and `phase`, where that first target lies in its frame. Runs then
start at a file-relative multiple of `lookback` (training rounds its random starts down), so
a top frame never straddles two feature frames.

Training (`TrainStream`) is an infinite stream, deterministic in (seed, batch index), that can
resume at any batch. Evaluation (`EvalStream`) covers a split exactly once, in manifest order,
state carried through whole files, or (`piece_samples`, the paper's protocol) through each
8-second piece of a file from the initial state.
"""


import contextlib
import hashlib
import heapq
import json
import math
import signal
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from samplernn.audio import pcm16_to_float
from samplernn.choices import Order, Protocol, Split, words
from samplernn.commands import command
from samplernn.errors import BadFile, ConfigError, NotFound, UserError
from samplernn.features import FeatureSpec, Normaliser
from samplernn.interrupt import STOP_SIGNALS
from samplernn.quantization import quantize

MANIFEST_VERSION = 1
SPLITS, ORDERS, PROTOCOLS = words(Split), words(Order), words(Protocol)


class PreparedDataset:
    """A folder written by `prepare`: manifest.json + samples.npy (int16, memory-mapped).

    Both are checked when it is opened, before any data-loading worker starts: the manifest's
    keys, samples.npy's format, dtype and length, and every file's place in it. The samples
    stay mapped from then on, so a run reads one version of its data even if the folder is
    replaced under it (prepare refuses to replace a dataset in use: lock.InUse)."""

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = {}
        manifest_path, samples_path = self.path / "manifest.json", self.path / "samples.npy"
        if not manifest_path.is_file() or not samples_path.is_file():
            raise NotFound(f"{self.path} is not a prepared dataset (needs manifest.json "
                           f"and samples.npy); prepare it first: {command('prepare')} "
                           f"source=<folder> name={self.path.name} (or out_dir={self.path})")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise BadFile(f"{manifest_path} is not valid JSON ({err}); {self._hint}") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("version") != MANIFEST_VERSION:
            version = self.manifest.get("version") if isinstance(self.manifest, dict) else None
            raise BadFile(f"{manifest_path} has version {version}, this code reads version "
                          f"{MANIFEST_VERSION}; {self._hint}")
        missing = [k for k in ("sample_rate", "n_samples", "files") if k not in self.manifest]
        if missing:
            raise BadFile(f"{manifest_path} lacks {', '.join(missing)}; {self._hint}")
        self.sample_rate = int(self.manifest["sample_rate"])
        self._samples = self._open_samples(samples_path)
        self._check_files(manifest_path)
        self.labels: list[str] = list(self.manifest.get("labels") or [])
        self._check_labels(manifest_path)
        self.feature_info: dict | None = self.manifest.get("features")
        self._features = None
        if self.feature_info:
            self._features = self._open_features()

    def _open_features(self) -> np.ndarray:
        """features.npy, float32 [frames, n_mels], checked against the manifest."""
        path, info = self.path / "features.npy", self.feature_info
        try:
            spec = FeatureSpec.from_dict({**info, "sample_rate": self.sample_rate})
            Normaliser(info)
            feats = np.load(path, mmap_mode="r")
            ok = feats.dtype == np.float32 and feats.shape == (info["n_frames"], spec.n_mels)
            ok = ok and all(0 <= f["feature_offset"]
                            and f["n_frames"] == spec.n_frames(f["n_samples"])
                            and f["feature_offset"] + f["n_frames"] <= len(feats)
                            for f in self.manifest["files"])
        except (ValueError, OSError, EOFError, KeyError, TypeError, UserError) as err:
            raise BadFile(f"{path} or the manifest's features cannot be read "
                          f"({' '.join(str(err).split())}); {self._hint}") from None
        if not ok:
            raise BadFile(f"{path} does not hold the features the manifest describes "
                          f"({feats.dtype} {feats.shape}); {self._hint}")
        return feats

    @property
    def features(self) -> np.ndarray | None:
        """float32 memmap [frames, n_mels] (raw log-mel) or None without features."""
        if self.feature_info and self._features is None:  # a worker's pickled copy
            self._features = self._open_features()
        return self._features

    def file_features(self, entry: dict) -> np.ndarray:
        """One manifest file entry's raw feature frames [n_frames, n_mels] (a memmap view)."""
        a = entry["feature_offset"]
        return self.features[a:a + entry["n_frames"]]

    @property
    def _hint(self) -> str:
        source = self.manifest.get("source_dir", "<folder>") if isinstance(self.manifest, dict) \
            else "<folder>"
        return (f"prepare it again: {command('prepare')} source={source} "
                f"out_dir={self.path} overwrite=true")

    def _open_samples(self, path: Path) -> np.ndarray:
        n = self.manifest["n_samples"]
        try:
            samples = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:  # not .npy, pickled, or cut short
            size = path.stat().st_size
            raise BadFile(f"{path} is not the int16 array of {n} samples its manifest says "
                          f"({size} bytes; {' '.join(str(err).split())}); {self._hint}") from None
        if samples.dtype != np.int16 or samples.shape != (n,):
            raise BadFile(f"{path} holds {samples.dtype} {samples.shape}, the manifest says "
                          f"int16 ({n},); {self._hint}")
        return samples

    def _check_files(self, manifest_path: Path) -> None:
        n = self.manifest["n_samples"]
        for i, f in enumerate(self.manifest["files"]):
            try:
                ok = (0 <= f["offset"] and 0 < f["n_samples"] and f["offset"] + f["n_samples"] <= n
                      and f["split"] in SPLITS)
            except (KeyError, TypeError):
                ok = False
            if not ok:
                name = f.get("source", "?") if isinstance(f, dict) else repr(f)
                raise BadFile(f"{manifest_path}: file entry {i} ({name}) does not lie within "
                              f"samples.npy's {n} samples (offset, n_samples, split); "
                              f"{self._hint}")

    def _check_labels(self, manifest_path: Path) -> None:
        known = set(self.labels)
        for i, f in enumerate(self.manifest["files"]):
            if self.labels and f.get("label") not in known:
                raise BadFile(f"{manifest_path}: file entry {i} ({f.get('source', '?')}) has "
                              f"label {f.get('label')!r}, not one of the manifest's labels; "
                              f"{self._hint}")

    def label_index(self, entry: dict) -> int:
        """A manifest file entry's label as its index in `labels` (0 without labels)."""
        return self.labels.index(entry["label"]) if self.labels else 0

    @property
    def samples(self) -> np.ndarray:
        """int16 memmap [n_samples]: all files concatenated (wav = samples / 32768)."""
        if self._samples is None:  # a worker process that was handed a pickled copy
            self._samples = self._open_samples(self.path / "samples.npy")
        return self._samples

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @cached_property
    def fingerprint(self) -> str:
        """A hash of what was prepared (files, their content hashes and places, the options):
        the same data wherever the folder is, and different data whatever its name."""
        options = {k: v for k, v in self.manifest.get("options", {}).items()
                   if k not in ("num_workers", "overwrite")}
        content = {"sample_rate": self.sample_rate, "n_samples": self.manifest["n_samples"],
                   "files": self.manifest["files"], "options": options}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def __getstate__(self) -> dict:      # worker processes re-open the memmap, never copy it
        return {**self.__dict__, "_samples": None, "_features": None}

    def files(self, split: str) -> list[dict]:
        """Manifest entries (source, offset, n_samples, seconds, split, ...) of one split."""
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} is unknown; use one of {SPLITS}")
        return [f for f in self.manifest["files"] if f["split"] == split]

    def n_samples(self, split: str) -> int:
        return sum(f["n_samples"] for f in self.files(split))

    def __repr__(self) -> str:
        return (f"PreparedDataset({str(self.path)!r}, {self.manifest['n_samples']} samples at "
                f"{self.sample_rate} Hz, {self.manifest['split_mode']})")


class Batch(NamedTuple):
    """One TBPTT chunk for every row.

    codes: LongTensor [B, lookback + seq_len]; targets are codes[:, lookback:].
    reset: BoolTensor [B]; True: reset this row's hidden state before this chunk.
    mask:  BoolTensor [B, seq_len]; True where target codes[:, lookback + t] is a real sample.
    label: LongTensor [B]; each row's label index (0 for a dataset without labels).
    file:  LongTensor [B]; each row's file, as its index in the split's files (-1: none).
    feats: FloatTensor [B, W + 2 * radius, n_mels] normalised feature frames, or None.
    phase: LongTensor [B]: where each row's first target lies in its feature frame, or None.
    """
    codes: torch.Tensor
    reset: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor
    file: torch.Tensor
    feats: torch.Tensor | None = None
    phase: torch.Tensor | None = None


def _check_sizes(batch_size: int, seq_len: int, lookback: int) -> None:
    if batch_size < 1 or seq_len < 1 or lookback < 1:
        raise ConfigError(f"batch_size={batch_size}, seq_len={seq_len}, lookback={lookback}: "
                          "each must be at least 1")


def pieces(files: list[dict], piece_samples: int | None) -> list[tuple[int, int, int]]:
    """(absolute offset, n_samples, index of its file in `files`) of each file cut from its
    start into pieces of piece_samples (the last one shorter); None keeps whole files."""
    out = []
    for i, f in enumerate(files):
        step = piece_samples or f["n_samples"]
        out += [(f["offset"] + a, min(step, f["n_samples"] - a), i)
                for a in range(0, f["n_samples"], step)]
    return out


def eval_runs(files: list[dict], piece_samples: int | None,
              shard: tuple[int, int] = (0, 1)) -> list[tuple[int, int, int]]:
    """The runs (`pieces`) one process evaluates: shard=(i, n) keeps runs i, i + n, ..."""
    return pieces(files, piece_samples)[shard[0]::shard[1]]


class _ChunkBuilder:
    """Fills float rows from the memmap and quantizes them into a Batch; with features
    (radius not None), fills each row's feature frames too."""

    def __init__(self, dataset: PreparedDataset, batch_size: int, seq_len: int, lookback: int,
                 q_type: str, q_levels: int, features: int | None = None):
        _check_sizes(batch_size, seq_len, lookback)
        quantize(torch.zeros(1), q_type, q_levels)          # fails early on a bad q_type
        self.dataset, self.B, self.T, self.L = dataset, batch_size, seq_len, lookback
        self.q_type, self.q_levels = q_type, q_levels
        self.radius = features
        if features is not None:
            if not dataset.feature_info:
                raise ConfigError(f"{dataset.path} has no features, which a model conditioned "
                                  "on them reads; prepare it with features=logmel")
            self.normalise = Normaliser(dataset.feature_info)
            self.hop = int(dataset.feature_info["hop"])
            if self.hop % lookback:
                raise ConfigError(f"the features' hop ({self.hop}) is not a multiple of the "
                                  f"top frame size {lookback}")
            self.width = (seq_len + self.hop - 1) // self.hop + 1 + 2 * features

    def new_features(self, rows: int | None = None):
        """Empty (feats, phase) arrays, silence's features; (None, None) without features."""
        if self.radius is None:
            return None, None
        rows = self.B if rows is None else rows
        quiet = self.normalise.silence
        return np.tile(quiet, (rows, self.width, 1)), np.zeros(rows, np.int64)

    def fill_features(self, feats: np.ndarray, phase: np.ndarray, row: int, entry: dict,
                      start: int, chunk: int) -> None:
        """Row `row` <- the feature frames of chunk `chunk` of a run starting at absolute
        sample `start` in file `entry`."""
        first = start - entry["offset"] + chunk * self.T      # file-relative first target
        frame, phase[row] = divmod(first, self.hop)
        feats[row] = self.normalise.window(self.dataset.file_features(entry),
                                           frame - self.radius, self.width)

    def new(self, rows: int | None = None) -> tuple[np.ndarray, ...]:
        """Empty (wav, reset, mask, label, file) arrays for `rows` rows."""
        rows = self.B if rows is None else rows
        return (np.zeros((rows, self.L + self.T), np.float32), np.zeros(rows, bool),
                np.zeros((rows, self.T), bool), np.zeros(rows, np.int64),
                np.full(rows, -1, np.int64))

    def fill(self, wav: np.ndarray, mask: np.ndarray, row: int, start: int, length: int,
             chunk: int) -> None:
        """Row `row` <- chunk `chunk` of the run of `length` samples at absolute `start`."""
        lo = chunk * self.T - self.L                        # run-relative first position
        a, b = max(lo, 0), min(lo + self.L + self.T, length)
        if b > a:
            wav[row, a - lo:b - lo] = pcm16_to_float(self.dataset.samples[start + a:start + b])
        first_target = chunk * self.T
        mask[row, :max(0, min(self.T, length - first_target))] = True

    def batch(self, wav: np.ndarray, reset: np.ndarray, mask: np.ndarray, label: np.ndarray,
              file: np.ndarray, feats=None, phase=None) -> Batch:
        codes = quantize(torch.from_numpy(wav), self.q_type, self.q_levels)
        extra = () if feats is None else (torch.from_numpy(feats), torch.from_numpy(phase))
        return Batch(codes, torch.from_numpy(reset), torch.from_numpy(mask),
                     torch.from_numpy(label), torch.from_numpy(file), *extra)


def _shard() -> tuple[int, int]:
    """(worker id, number of workers) inside a DataLoader worker, else (0, 1)."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, row, n, stream: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1), a pure function of (seed, row, n, stream); row and n
    broadcast. Cheap enough to replay millions of segment plans when resuming."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    x = _mix64(np.full(1, seed % (1 << 64), np.uint64) + golden)
    for key in (np.asarray(row), np.asarray(n), np.asarray(stream)):
        x = _mix64((x ^ key.astype(np.uint64)) + golden)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class TrainStream(IterableDataset):
    """Infinite stream of training `Batch`es, deterministic in (seed, batch index).

    Each row plays segments one after another, of at most `segment_samples` each, rounded
    down to a multiple of seq_len; rows reset independently. Segment n of row r is a pure
    function of (seed, r, n) (`segment`), in one of two orders:

    - "epoch" (the authors' and the older PyTorch port's): the train files are cut from
      their start into pieces of segment_samples (the pieces the paper's min-max
      normalisation works on); the pieces are shuffled once per epoch and dealt out to
      the rows in turn (segment n of row r is piece n * B + r of the shuffled sequence),
      so every piece is played once before any is repeated. A piece's part that does not
      fill a whole chunk is skipped at a random offset, different every epoch.
    - "random": each segment is a file drawn with probability proportional to its length
      (with replacement) and a uniform start inside it.

    Pieces or files shorter than seq_len are never used. `start_step=k` resumes at batch
    k exactly (the plan is replayed in integers, no audio is read). Under a DataLoader with
    W workers, worker w yields batches start_step + w, start_step + w + W, ..., so the
    loader's round-robin keeps the order of W = 0. `rows=(lo, hi)` yields only those rows of
    each global batch of batch_size rows (one process's share in data-parallel training).
    """

    def __init__(self, dataset: PreparedDataset, batch_size: int, seq_len: int, lookback: int,
                 segment_samples: int, q_type: str = "linear", q_levels: int = 256,
                 seed: int = 0, start_step: int = 0, order: str = "epoch",
                 rows: tuple[int, int] | None = None, features: int | None = None):
        self.builder = _ChunkBuilder(dataset, batch_size, seq_len, lookback, q_type, q_levels,
                                     features)
        self.rows = range(*(rows or (0, batch_size)))
        if not self.rows or self.rows.start < 0 or self.rows.stop > batch_size:
            raise ConfigError(f"rows={rows} is not a part of a batch of {batch_size} rows")
        if segment_samples < seq_len:
            raise ConfigError(f"segment_samples={segment_samples} is shorter than seq_len={seq_len}"
                              "; raise the segment length or lower train.seq_len")
        if start_step < 0:
            raise ConfigError(f"start_step={start_step} must be >= 0")
        if order not in ORDERS:
            raise ConfigError(f"train.order={order!r} is unknown; use one of {ORDERS}")
        files = dataset.files("train")
        runs = pieces(files, segment_samples if order == "epoch" else None)
        runs = [r for r in runs if r[1] >= seq_len]
        if not runs:
            longest = max((f["n_samples"] for f in dataset.files("train")), default=0)
            raise ConfigError(f"no train file of {dataset.path} is as long as seq_len={seq_len} "
                              f"samples (longest: {longest}); lower train.seq_len")
        self.offsets = np.array([r[0] for r in runs], np.int64)
        self.lengths = np.array([r[1] for r in runs], np.int64)
        self.files = np.array([r[2] for r in runs], np.int64)
        self.entries = files
        self.file_offsets = np.array([files[r[2]]["offset"] for r in runs], np.int64)
        self.labels = np.array([dataset.label_index(files[r[2]]) for r in runs], np.int64)
        self.cdf = np.cumsum(self.lengths) / self.lengths.sum()
        self.segment_samples, self.seed, self.start_step = int(segment_samples), seed, start_step
        self.order, self._permutations = order, {}

    def _permutation(self, epoch: int) -> np.ndarray:
        """The order of the pieces in one epoch (the last few epochs' are kept)."""
        if epoch not in self._permutations:
            if len(self._permutations) >= 64:
                self._permutations.pop(next(iter(self._permutations)))
            keys = _uniform(self.seed, epoch, np.arange(len(self.lengths)), 2)
            self._permutations[epoch] = np.argsort(keys, kind="stable")
        return self._permutations[epoch]

    def _pieces(self, row, n) -> np.ndarray:
        """Which piece (or file) segment n of row `row` plays; row and n broadcast."""
        if self.order == "random":
            return np.minimum(np.searchsorted(self.cdf, _uniform(self.seed, row, n, 0), side="right"),
                              len(self.lengths) - 1)
        m = np.atleast_1d(np.asarray(n) * self.builder.B + np.asarray(row))
        epoch, slot = np.divmod(m, len(self.lengths))
        out = np.empty(epoch.shape, np.int64)
        for e in np.unique(epoch):
            here = epoch == e
            out[here] = self._permutation(int(e))[slot[here]]
        return out

    def segment(self, row, n) -> tuple[np.ndarray, np.ndarray]:
        """(absolute start sample, number of chunks) of segment n of row `row`; row and n may
        be broadcastable integer arrays."""
        return self._segment(row, n)[:2]

    def _segment(self, row, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """segment(row, n) and which piece (or file) it plays."""
        T = self.builder.T
        i = self._pieces(row, n)
        length = np.minimum(self.segment_samples, self.lengths[i]) // T * T
        start = (_uniform(self.seed, row, n, 1) * (self.lengths[i] - length + 1)).astype(np.int64)
        start = self.offsets[i] + start
        if self.builder.radius is not None:  # a file-relative multiple of the top frame size
            start -= (start - self.file_offsets[i]) % self.builder.L
        return start, length // T, i

    def _locate(self, k: int) -> list[list[int]]:
        """Per row of self.rows [segment n, its first batch index, start, n_chunks, piece] for
        the segment that holds batch k: segment lengths are replayed in vectorised blocks."""
        B = self.builder.B
        first, n0 = np.zeros(B, np.int64), np.zeros(B, np.int64)
        out: list = [None] * B
        rows = np.arange(self.rows.start, self.rows.stop)
        block = 64
        while len(rows):
            ns = n0[rows, None] + np.arange(block)[None, :]
            starts, chunks, played = self._segment(rows[:, None], ns)
            ends = first[rows, None] + np.cumsum(chunks, axis=1)
            hit = ends > k
            for j, row in enumerate(rows):
                if hit[j, -1]:
                    m = int(np.argmax(hit[j]))
                    out[row] = [int(ns[j, m]), int(ends[j, m] - chunks[j, m]), int(starts[j, m]),
                                int(chunks[j, m]), int(played[j, m])]
            keep = ~hit[:, -1]
            first[rows[keep]] = ends[keep, -1]
            n0[rows[keep]] += block
            rows = rows[keep]
            block = min(block * 4, 1 << 16)
        return out[self.rows.start:self.rows.stop]

    def _batch(self, k: int, cursors: list) -> Batch:
        wav, reset, mask, label, file = self.builder.new(len(self.rows))
        feats, phase = self.builder.new_features(len(self.rows))
        for i, (row, cursor) in enumerate(zip(self.rows, cursors)):
            while k >= cursor[1] + cursor[3]:            # on to the row's next segment
                cursor[1] += cursor[3]
                cursor[0] += 1
                start, chunks, played = self._segment(row, cursor[0])
                cursor[2], cursor[3], cursor[4] = int(start[0]), int(chunks[0]), int(played[0])
            chunk = k - cursor[1]
            self.builder.fill(wav, mask, i, cursor[2], cursor[3] * self.builder.T, chunk)
            reset[i] = chunk == 0
            label[i], file[i] = self.labels[cursor[4]], self.files[cursor[4]]
            if feats is not None:
                self.builder.fill_features(feats, phase, i, self.entries[file[i]], cursor[2],
                                           chunk)
        return self.builder.batch(wav, reset, mask, label, file, feats, phase)

    def batch_at(self, k: int) -> Batch:
        """Batch number k, computed from scratch (what iteration yields at position k)."""
        return self._batch(k, self._locate(k))

    def __iter__(self):
        worker, n_workers = _shard()
        k = self.start_step + worker
        cursors = self._locate(k)
        while True:
            yield self._batch(k, cursors)
            k += n_workers


class EvalStream(IterableDataset):
    """Every sample of a split predicted exactly once, deterministically; len() = batches.

    Rows take runs from one queue in manifest order (a free row takes the next; ties go to
    the lower row) and walk each run whole, carrying state between its chunks (reset=True on
    a run's first chunk). A run is a whole file, or with `piece_samples` each piece of that
    many samples cut from a file's start (the paper's protocol: state reset every 8 s).
    The last chunk of a run is padded with silence and masked; rows with nothing left are
    all-masked silence with reset=True. `shard=(i, n)` keeps runs i, i + n, i + 2n, ... (one
    process's share; the shares' sums add up to the whole split's).
    """

    def __init__(self, dataset: PreparedDataset, split: str, batch_size: int, seq_len: int,
                 lookback: int, q_type: str = "linear", q_levels: int = 256,
                 piece_samples: int | None = None, shard: tuple[int, int] = (0, 1),
                 features: int | None = None):
        self.builder = _ChunkBuilder(dataset, batch_size, seq_len, lookback, q_type, q_levels,
                                     features)
        files = dataset.files(split)
        if features is not None and piece_samples and piece_samples % lookback:
            raise ConfigError(f"pieces of {piece_samples} samples do not start on whole top "
                              f"frames of {lookback}; a model with features needs pieces of a "
                              "multiple of its top frame size")
        self.entries = files
        if not files:
            raise ConfigError(f"split {split!r} of {dataset.path} has no files; prepare it with "
                              f"{split}_fraction > 0")
        self.runs = eval_runs(files, piece_samples, shard)
        self.n_targets = sum(n for _, n, _ in self.runs)
        self.labels = [dataset.label_index(f) for f in files]
        # plan[row] = [(run index, first batch, n_chunks), ...]
        self.plan: list[list[tuple[int, int, int]]] = [[] for _ in range(batch_size)]
        free = [(0, row) for row in range(batch_size)]
        for i, (_, n_samples, _) in enumerate(self.runs):
            t, row = heapq.heappop(free)
            n_chunks = math.ceil(n_samples / seq_len)
            self.plan[row].append((i, t, n_chunks))
            heapq.heappush(free, (t + n_chunks, row))
        self.n_batches = max((t for t, _ in free), default=0)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        worker, n_workers = _shard()
        position = [0] * self.builder.B
        for k in range(worker, self.n_batches, n_workers):
            wav, reset, mask, label, file = self.builder.new()
            feats, phase = self.builder.new_features()
            for row, runs in enumerate(self.plan):
                while position[row] < len(runs) and k >= sum(runs[position[row]][1:]):
                    position[row] += 1                      # that file is done
                if position[row] == len(runs):
                    reset[row] = True                       # idle: nothing left to predict
                    continue
                i, first, _ = runs[position[row]]
                offset, n_samples, file[row] = self.runs[i]
                label[row] = self.labels[file[row]]
                self.builder.fill(wav, mask, row, offset, n_samples, k - first)
                reset[row] = k == first
                if feats is not None:
                    self.builder.fill_features(feats, phase, row, self.entries[file[row]],
                                               offset, k - first)
            yield self.builder.batch(wav, reset, mask, label, file, feats, phase)


def _leave_signals_to_the_main_process(worker_id: int) -> None:
    """A worker ignores stop signals (a cluster sends them to every process of a job): the
    main process finishes its step, checkpoints and then ends the workers itself."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class WorkerDied(UserError, RuntimeError):
    """A data-loading worker process ended from outside (e.g. killed for lack of memory)."""


@contextlib.contextmanager
def batches(loader: DataLoader):
    """with batches(loader) as stream: for batch in stream: ...

    Whatever ends the loop (its end, a stop, an error), the loader's worker processes are
    ended on the way out. They ignore stop signals (a cluster's are the main process's to
    handle), so workers left waiting by an iterator that an error's traceback still holds
    would keep the process alive at exit forever. A worker killed from outside is one line:
    torch's SIGCHLD handler, which raises wherever the main process happens to be (inside a
    log call, say), is set aside while the loop runs; the loader itself notices a dead
    worker within seconds at its next batch.
    """
    stream = iter(loader)
    workers = list(getattr(stream, "_workers", []))
    previous = None
    if workers and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield stream
    except Exception as error:
        dead = _dead(workers, wait_s=2.0 if isinstance(error, (OSError, EOFError, RuntimeError))
                     else 0.0)  # a queue that broke: its worker may be a moment from dead
        if not dead:
            raise
        how = ", ".join(f"pid {w.pid} " + (f"killed by {signal.Signals(-w.exitcode).name}"
                                           if w.exitcode < 0 else f"exit status {w.exitcode}")
                        for w in dead)
        raise WorkerDied(f"a data-loading worker process died ({how}), most often for lack of "
                         "memory; the same command resumes from the last checkpoint "
                         "(dataset.num_workers=0 loads data in the training process itself)"
                         ) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGCHLD, previous)
        shutdown = getattr(stream, "_shutdown_workers", None)  # none without workers
        if shutdown is not None:
            shutdown()


def _dead(workers: list, wait_s: float) -> list:
    """The worker processes that have ended (killed, or exited with an error)."""
    deadline = time.monotonic() + wait_s
    while True:
        dead = [w for w in workers if w.exitcode not in (None, 0)]
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(0.05)


def train_loader(dataset: PreparedDataset, batch_size: int, seq_len: int, lookback: int,
                 segment_samples: int, q_type: str = "linear", q_levels: int = 256,
                 seed: int = 0, start_step: int = 0, num_workers: int = 1,
                 order: str = "epoch", rows: tuple[int, int] | None = None,
                 pin_memory: bool = False, features: int | None = None) -> DataLoader:
    """DataLoader over a TrainStream; batch order is the same for any num_workers.
    pin_memory: page-locked batches, for non-blocking copies to a GPU. features: the feature
    stack's radius, for a model conditioned on features (None: no features)."""
    stream = TrainStream(dataset, batch_size, seq_len, lookback, segment_samples, q_type,
                         q_levels, seed, start_step, order, rows, features)
    return DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      worker_init_fn=_leave_signals_to_the_main_process)


def eval_loader(dataset: PreparedDataset, split: str, batch_size: int, seq_len: int,
                lookback: int, q_type: str = "linear", q_levels: int = 256,
                num_workers: int = 0, piece_samples: int | None = None,
                shard: tuple[int, int] = (0, 1), features: int | None = None) -> DataLoader:
    """DataLoader over an EvalStream; len() is the number of batches. features: as
    train_loader's."""
    stream = EvalStream(dataset, split, batch_size, seq_len, lookback, q_type, q_levels,
                        piece_samples, shard, features)
    return DataLoader(stream, batch_size=None, num_workers=num_workers)
