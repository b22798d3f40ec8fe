"""The generate command (scripts/generate.py): WAV files from a checkpoint, streamed to disk block by block.

python scripts/generate.py checkpoint=<path> num_samples=4 seconds=10 temperature=[0.9,1.0]

Each file is 16-bit PCM at the model's sample rate with a JSON sidecar saying
how it was made. A conditioned model makes num_samples files per label (every label, or
`label=a` / `label=[a,b]`: <label>_t<T>_<i>.wav), or num_samples of a mix of label
embeddings (`label_mix=[a:0.7,b:0.3]`: mix_t<T>_<i>.wav). A model with features (a vocoder)
makes num_samples files from each features file (`features=<audio file>`: copy synthesis, of
that file's length; or a .npy/.npz of log-mel frames): <file stem>_t<T>_<i>.wav; `seconds` is
then the features' length. Memory stays constant however
long the output; an interrupted run leaves no file under a final name.
"""

import contextlib
import json
import math
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

from . import features as featuring
from . import labels as labelling
from .audio import AudioError, WavStreamWriter, iter_audio_blocks
from .checkpoint import load_checkpoint
from .commands import command
from .device import pick_device
from .errors import ConfigError, NotFound, check_int, check_number
from .interrupt import Stopped, abort_on_signals
from .lock import DirLock
from .quantization import dequantize, quantize
from .sampler import PERSISTENT_MAX_STREAMS, Sampler


def _temperatures(value) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    message = f"temperature={value}: give a number >= 0 or a list of them (0 = greedy)"
    try:
        temps = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(message) from None
    if not temps or not all(math.isfinite(t) and t >= 0 for t in temps):
        raise ConfigError(message)
    return temps


def _check(cfg: DictConfig) -> list[float]:
    """The options, checked before anything is loaded or written; returns the temperatures."""
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError(f"say which model: {command('generate')} "
                          "checkpoint=<run dir>/checkpoints/best.pt")
    check_int("num_samples", cfg.num_samples, minimum=1)
    check_int("batch_size", cfg.batch_size, minimum=1)
    check_int("seed", cfg.seed, minimum=0)
    check_number("seconds", cfg.seconds, above=0)
    check_number("block_seconds", cfg.block_seconds, above=0)
    check_number("prime_seconds", cfg.prime_seconds, above=0, optional=True)
    check_int("graph_samples", cfg.graph_samples, minimum=1)
    if cfg.persistent and min(cfg.batch_size, cfg.num_samples) > PERSISTENT_MAX_STREAMS:
        raise ConfigError(f"persistent=true generates up to {PERSISTENT_MAX_STREAMS} streams at "
                          f"once: give batch_size <= {PERSISTENT_MAX_STREAMS} or drop persistent=")
    if cfg.get("label") is not None and cfg.get("label_mix"):
        raise ConfigError("give label= or label_mix=, not both")
    if cfg.prime and not Path(cfg.prime).is_file():
        raise NotFound(f"prime={cfg.prime}: no such audio file; give the path of a WAV/FLAC/... "
                       "file whose start primes every stream, or drop prime=")
    return _temperatures(cfg.temperature)


class Stream(NamedTuple):
    """One file to generate: its name's start, index, label (for its sidecar) and the
    sampler's label input (an index, or mix weights; None for a model without labels)."""
    prefix: str
    index: int
    label: str | dict | None
    value: int | list | None
    features: str | None = None


def streams(cfg: DictConfig, names: list[str], conditioned: bool,
            has_features: bool = False) -> list[Stream]:
    """The files to generate: num_samples per label asked for (all of them by default), or
    of one mix; for a model without labels, num_samples plain ones. With features, those
    for each features file."""
    given = cfg.get("features")
    if given is None and has_features:
        raise ConfigError(f"{cfg.checkpoint} is conditioned on features (a vocoder); give "
                          "features=<audio file> (copy synthesis) or features=<.npy/.npz>, "
                          "or a list of them")
    if given is not None and not has_features:
        raise ConfigError(f"features=: {cfg.checkpoint} was trained without features; drop "
                          "features=")
    plain = _streams(cfg, names, conditioned)
    if given is None:
        return plain
    many = isinstance(given, (list, tuple, ListConfig))
    files = [str(f) for f in given] if many else [str(given)]
    return [s._replace(prefix=_file_safe(Path(f).stem) + "_" + s.prefix, features=f)
            for f in files for s in plain]


def _streams(cfg: DictConfig, names: list[str], conditioned: bool) -> list[Stream]:
    n, asked, mix = cfg.num_samples, cfg.get("label"), cfg.get("label_mix")
    if not conditioned:
        if asked is not None or mix:
            key = "label" if asked is not None else "label_mix"
            raise ConfigError(f"{key}=: {cfg.checkpoint} was trained without labels; drop {key}=")
        return [Stream("", i, None, None) for i in range(n)]
    if mix:
        weights = labelling.parse_mix(names, mix)
        said = {name: w for name, w in zip(names, weights) if w}
        return [Stream("mix_", i, said, weights) for i in range(n)]
    asked = names if asked is None else \
        [str(a) for a in asked] if isinstance(asked, (list, tuple, ListConfig)) else [str(asked)]
    chosen = [labelling.index(names, a) for a in asked]
    return [Stream(_file_safe(names[j]) + "_", i, names[j], j) for j in chosen for i in range(n)]


def _file_safe(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


def load_prime(path, seconds: float | None, sample_rate: int, q_type: str, q_levels: int):
    """The first `seconds` (None: all) of an audio file, decoded, resampled and quantized ->
    codes [1, P]. Decoding stops once it has them."""
    want = None if seconds is None else int(round(seconds * sample_rate))
    blocks, n = [], 0
    for block in iter_audio_blocks(path, sample_rate):
        blocks.append(block)
        n += len(block)
        if want is not None and n >= want:
            break
    if n == 0:
        raise AudioError(path, "empty", "the file decoded to 0 samples")
    wav = np.concatenate(blocks)[:want]
    return quantize(torch.from_numpy(wav), q_type, q_levels)[None]


@contextlib.contextmanager
def _output_folder(cfg: DictConfig, started: list):
    """The folder this command writes, its own while it runs: by default a new one,
    <run dir>/generated/<time> (with -2, -3, ... if another command made that one in the
    same second); out_dir= is locked against a second generate writing there. A folder the
    command made for a generation that never started (`started` stays empty: an option the
    sampler refused) is removed."""
    if cfg.out_dir:
        folder, made = Path(cfg.out_dir), not Path(cfg.out_dir).exists()
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"out_dir={folder} is a file; give a folder for the WAV files")
    else:
        generated = Path(cfg.checkpoint).resolve().parent.parent / "generated"
        stem, n = datetime.now().strftime("%Y-%m-%d_%H-%M-%S"), 1
        generated.mkdir(parents=True, exist_ok=True)
        while True:
            folder = generated / (stem if n == 1 else f"{stem}-{n}")
            try:
                folder.mkdir()  # atomic: two commands never get the same folder
                break
            except FileExistsError:
                n += 1
        made = True
    try:
        with DirLock(folder, "generate"):
            yield folder
    finally:
        if made and not started and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def run(cfg: DictConfig) -> list[Path]:
    """Generate as configured; returns the WAV paths written."""
    temps = _check(cfg)
    device = pick_device(cfg.device, cfg.get("threads"))
    model, info = load_checkpoint(cfg.checkpoint, device)
    mc = model.config
    rate = info.get("sample_rate") or 16000
    prime = None
    if cfg.prime:
        prime = load_prime(cfg.prime, cfg.prime_seconds, rate, mc.q_type, mc.q_levels)
    names = labelling.of_checkpoint(info)
    jobs = streams(cfg, names, mc.conditioned, mc.has_features)
    made = None
    if mc.has_features:  # each file's raw frames and its output's length (prime=: Sampler)
        record = (info.get("dataset") or {})["features"]
        made = {f: featuring.load(f, record, record["data_options"])
                for f in dict.fromkeys(s.features for s in jobs)}
    length = int(round(cfg.seconds * rate))
    if length < 1:
        raise ConfigError(f"seconds={cfg.seconds} is less than one sample at {rate} Hz; give "
                          f"at least {1 / rate:.2g}")
    block = max(model.lookback, int(cfg.block_seconds * rate) // model.lookback * model.lookback)
    written, started = [], []
    with _output_folder(cfg, started) as out_dir:
        try:
            with abort_on_signals():  # SIGTERM & co. unwind like Ctrl-C: no .partial file stays
                _generate(cfg, model, info, device, temps, prime, length, block, rate, out_dir,
                          jobs, written, started, made)
        except (KeyboardInterrupt, Stopped) as stop:
            print(f"stopped: {len(written)} finished files in {out_dir}, nothing half-written",
                  file=sys.stderr, flush=True)
            stop.said = True  # the command's one line (cli.py adds none)
            raise
    print(f"{len(written)} files in {out_dir}")
    return written


def _generate(cfg, model, info, device, temps, prime, length, block, rate, out_dir, jobs,
              written, started, made=None):
    """Every temperature's files, batch by batch; `written` grows as files are finished,
    `started` once the first sampler is built. made: with features, per features file its
    raw frames and its output's length."""
    mc = model.config
    normaliser = featuring.Normaliser(info["dataset"]["features"]) if made else None
    total = sum(made[s.features][1] for s in jobs) if made else length * len(jobs)
    for temp in temps:
        bar = tqdm(total=total, unit="sample", unit_scale=True,
                   desc=f"temperature {temp:g}", dynamic_ncols=True,
                   disable=not sys.stderr.isatty())  # a bar only on a terminal, never in logs
        for first in range(0, len(jobs), cfg.batch_size):
            batch = jobs[first:first + cfg.batch_size]
            n = len(batch)
            seed = cfg.seed + first
            paths = [out_dir / f"{s.prefix}t{temp:g}_{s.index:03d}.wav" for s in batch]
            label = None if batch[0].value is None else torch.tensor([s.value for s in batch])
            feats, lengths = None, [length] * n
            if made:
                feats = featuring.for_model([made[s.features][0] for s in batch], normaliser,
                                            mc.feature_radius)
                lengths = [made[s.features][1] for s in batch]
            t0 = time.perf_counter()
            with contextlib.ExitStack() as stack, torch.inference_mode():
                sampler = Sampler(model, n, temp, seed=seed, prime=prime,
                                  backend=cfg.get("backend"), threads=cfg.get("threads"),
                                  precision=cfg.precision, graph_samples=cfg.graph_samples,
                                  persistent=cfg.persistent, label=label, features=feats)
                started.append(True)
                writers = [stack.enter_context(WavStreamWriter(p, rate)) for p in paths]
                for codes in sampler.stream(max(lengths), block):
                    wav = dequantize(codes.cpu(), mc.q_type, mc.q_levels).numpy()
                    for writer, row, want in zip(writers, wav, lengths):
                        row = row[:max(0, want - writer.n_samples)]
                        writer.write(row)
                        bar.update(len(row))
                    speed = writers[0].n_samples / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(realtime=f"{speed / rate:.2f}x", streams=n)
            speed = length / max(time.perf_counter() - t0, 1e-9)
            for k, path in enumerate(paths):
                sidecar = {"checkpoint": str(cfg.checkpoint), "step": info["step"],
                           "temperature": temp, "seed": seed, "index_in_batch": k,
                           "prime": str(cfg.prime) if cfg.prime else None,
                           "prime_seconds": cfg.prime_seconds if cfg.prime else None,
                           "seconds": lengths[k] / rate, "sample_rate": rate,
                           "gen_samples_per_s": speed, "realtime_factor": speed / rate,
                           "batch_size": n, "device": str(device), "backend": sampler.backend,
                           "precision": sampler.precision, "persistent": sampler.persistent}
                if batch[k].label is not None:
                    sidecar["label_mix" if isinstance(batch[k].label, dict) else "label"] = \
                        batch[k].label
                if batch[k].features is not None:
                    sidecar["features"] = batch[k].features
                path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
            written += paths
        bar.close()


if __name__ == "__main__":  # python -m samplernn.generation: the same app as samplernn-generate
    from .cli import generate
    generate()
