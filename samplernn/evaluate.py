"""Exact NLL in bits per sample over a whole split, and the evaluate command.

Every sample of the split is predicted exactly once. Two protocols:
- "files" (the default): the recurrent state is carried through each whole file.
- "paper": the state starts afresh every 8 seconds of each file (the dataset's
  `chunk_seconds`, the pieces that prepare's normalize=minmax scales), as the paper's
  Table 1 was measured; on a dataset prepared with normalize=minmax this is the
  authors' protocol.
"""

import json
import math
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from . import distributed
from . import labels as labelling
from .checkpoint import load_checkpoint
from .commands import command
from .data import PROTOCOLS, PreparedDataset, eval_loader, eval_runs
from .device import autocast, pick_device
from .distributed import World
from .errors import BadFile, ConfigError, check_int
from .lock import InUse
from .model import SampleRNN
from .quantization import nll_bits
from .sampler.weights import as_stored

PAPER_SECONDS = 8.0


def piece_samples(dataset: PreparedDataset, protocol: str) -> int | None:
    """Samples between state resets: None (whole files) or the paper's 8-s pieces."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={protocol!r} is unknown; use one of {PROTOCOLS}")
    if protocol == "files":
        return None
    seconds = dataset.manifest.get("options", {}).get("chunk_seconds", PAPER_SECONDS)
    return max(1, round(seconds * dataset.sample_rate))


@torch.no_grad()
def evaluate_nll(model: SampleRNN, dataset: PreparedDataset, split: str, batch_size: int,
                 seq_len: int, device: torch.device, precision: str = "fp32",
                 protocol: str = "files", should_stop=None, world: World = World(),
                 as_label: int | None = None, mean_features: bool = False) -> dict | None:
    """-> {"nll_bits": bits per sample over the whole split, "n_samples": samples counted,
    "protocol", "normalize": how the dataset was levelled, "files": per file its source,
    label (if any), nll_bits and n_samples}, and on a dataset with labels "by_label": per
    label its nll_bits and n_samples.

    A conditioned model scores each file under its own label, or every file under label
    index `as_label` (which label the model finds a recording most likely under). A model
    with features reads each file's own, or with `mean_features` the train split's mean
    frame everywhere (normalised: zeros), its features saying nothing about the file.

    The result does not depend on batch_size or seq_len (state is carried through each
    file or piece), only the speed does: long chunks mean fewer, larger calls.
    should_stop() is asked before every batch; when it says True the result is None.
    With several processes (`world`) each takes every world.size-th file or piece and the
    sums are added up: the same NLL as one process, to float rounding.
    """
    piece = piece_samples(dataset, protocol)
    cfg = model.config
    was_training = model.training
    model.eval()
    files = dataset.files(split)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    file_bits = torch.zeros(len(files), dtype=torch.float64, device=device)
    file_count = torch.zeros(len(files), dtype=torch.float64, device=device)
    hidden = None
    # a row walks whole runs: more rows than runs would only compute padding
    shard = (world.rank, world.size)
    batch_size = max(1, min(batch_size, len(eval_runs(dataset.files(split), piece, shard))))
    seq_len = max(model.lookback, seq_len // model.lookback * model.lookback)
    if piece:  # chunks no longer than a piece
        seq_len = min(seq_len, -(-piece // model.lookback) * model.lookback)
    loader = eval_loader(dataset, split, batch_size, seq_len, model.lookback, cfg.q_type,
                         cfg.q_levels, piece_samples=piece, shard=shard,
                         features=cfg.feature_radius if cfg.has_features else None)
    n_batches = int(world.max(len(loader))[0])  # every process asks should_stop as often
    batches = iter(loader)
    bar = tqdm(range(n_batches), desc=f"{split} NLL", unit="batch", leave=False,
               dynamic_ncols=True, disable=not (sys.stderr.isatty() and world.main))
    for _ in bar:
        stop = should_stop is not None and should_stop()
        if world.sum(stop)[0]:
            model.train(was_training)
            return None
        batch = next(batches, None)
        if batch is None:  # this process's share is done
            continue
        hidden = model.reset_hidden(hidden, batch.reset.to(device))
        # only the rows on a file: once the short files are done, a long one may walk on
        # alone for hundreds of chunks, and the idle rows would cost as much as it
        busy = torch.nonzero(batch.file >= 0)[:, 0]
        codes, mask, file = (x[busy].to(device) for x in (batch.codes, batch.mask, batch.file))
        label = None
        if cfg.conditioned:
            label = batch.label if as_label is None else torch.full_like(batch.label, as_label)
            label = label[busy].to(device)
        feats = phase = None
        if cfg.has_features:
            feats, phase = batch.feats[busy].to(device), batch.phase[busy].to(device)
            if mean_features:
                feats = torch.zeros_like(feats)
        busy = busy.to(device)
        with autocast(device, precision):
            logits, state = model(codes, [h[:, busy] for h in hidden], label, feats, phase)
        hidden = [h.index_copy(1, busy, s.to(h.dtype)) for h, s in zip(hidden, state)]
        targets = codes[:, model.lookback:]
        total += nll_bits(logits, targets, mask, reduction="sum").double()
        count += int(mask.sum())
        file_bits.index_add_(0, file, nll_bits(logits, targets, mask, reduction="rows").double())
        file_count.index_add_(0, file, mask.sum(1).double())
    model.train(was_training)
    total_bits, count = world.sum(total.item(), count)
    count = int(count)
    per_file = world.sum(*file_bits.tolist(), *file_count.tolist())
    bits, counts = per_file[:len(files)], per_file[len(files):]
    result = {"nll_bits": total_bits / max(count, 1), "n_samples": count, "protocol": protocol,
              "normalize": dataset.manifest.get("options", {}).get("normalize"),
              "files": [{"source": f["source"], **({"block": f["block"]} if "block" in f else {}),
                         **({"label": f["label"]} if dataset.labels else {}),
                         "nll_bits": b / max(n, 1), "n_samples": int(n)}
                        for f, b, n in zip(files, bits, counts)]}
    if dataset.labels:
        result["by_label"] = {}
        for name in dataset.labels:
            mine = [(b, n) for f, b, n in zip(files, bits, counts) if f["label"] == name]
            if mine:
                n = sum(n for _, n in mine)
                result["by_label"][name] = {"nll_bits": sum(b for b, _ in mine) / max(n, 1),
                                            "n_samples": int(n)}
    return result


def _features_as_trained(config, record: dict | None, dataset: PreparedDataset, path) -> None:
    """A model with features reads the data's features made as its own were, normalised by
    the statistics it was trained with (those of its training data, whatever data it scores)."""
    if not config.has_features:
        return
    info = dataset.feature_info
    if not info:
        raise ConfigError(f"{path} has no features and the model is conditioned on them: "
                          "prepare the data with features=logmel (and the model's mel options)")
    spec = ("kind", "n_mels", "hop", "win", "n_fft", "f_min", "f_max", "floor")
    if record and any(info.get(k) != record.get(k) for k in spec):
        mine = ", ".join(f"{k}={record.get(k)}" for k in spec[1:5])
        raise ConfigError(f"{path} holds features made otherwise than the model's ({mine}): "
                          "prepare it again with those mel options")
    if record:
        dataset.feature_info = {**info, "mean": record["mean"], "std": record["std"]}


def run(cfg: DictConfig) -> dict:
    """python scripts/evaluate.py checkpoint=<path> [split=test] [dataset.path=...]

    Under torchrun (or as SLURM tasks) the processes share the files; the main one writes."""
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError(f"say which model: {command('evaluate')} "
                          "checkpoint=<run dir>/checkpoints/best.pt")
    check_int("batch_size", cfg.batch_size, minimum=1)
    check_int("seq_len", cfg.seq_len, minimum=1, optional=True)
    with distributed.process_group(str(cfg.device)) as world:
        return _evaluate(cfg, world)


def _evaluate(cfg: DictConfig, world: World) -> dict:
    device = distributed.device(world, pick_device(cfg.device, cfg.get("threads")))
    model, info = load_checkpoint(cfg.checkpoint, device)
    scored = as_stored(model, str(cfg.weights))  # the model as CPU generation stores it
    run_cfg = info["run_config"]
    protocol = cfg.protocol or run_cfg["eval"].get("protocol", "files")
    names = labelling.of_checkpoint(info)
    as_label = None
    if cfg.get("label") is not None:
        as_label = labelling.index(names if model.config.conditioned else [], str(cfg.label))
    scored_as = "" if as_label is None else f"_as_{names[as_label]}"
    ablation = cfg.get("features")
    if ablation is not None and not model.config.has_features:
        raise ConfigError(f"features={ablation}: {cfg.checkpoint} was trained without features; "
                          "leave features= out")
    heard = "" if ablation is None else f"_features_{ablation}"
    stored = "" if cfg.weights == "fp32" else f"_{cfg.weights}_weights"
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).with_name(  # one per protocol
        f"eval_{cfg.split}_{Path(cfg.checkpoint).stem}_{protocol}{scored_as}{heard}{stored}.json")
    if out.is_dir():
        raise ConfigError(f"out={out} is a folder; give the path of the JSON file to write")
    path = cfg.dataset.path or run_cfg["dataset"]["path"]
    dataset = PreparedDataset(path)
    trained_on = info.get("dataset")
    if not cfg.dataset.path and trained_on and trained_on["fingerprint"] != dataset.fingerprint:
        raise BadFile(f"{path} is no longer the data {cfg.checkpoint} was trained on (its manifest "
                      "changed); give dataset.path=<prepared data> to evaluate on other data")
    if model.config.conditioned and as_label is None and dataset.labels != names:
        theirs = f"the labels {', '.join(dataset.labels)}" if dataset.labels else "none"
        raise ConfigError(f"{cfg.checkpoint} is conditioned on the labels {', '.join(names)} and "
                          f"{path} has {theirs}: give label=<one of the model's> to score every "
                          "file under it")
    _features_as_trained(model.config, (trained_on or {}).get("features"), dataset, path)
    rate = info.get("sample_rate")
    if rate and rate != dataset.sample_rate:
        raise BadFile(f"{cfg.checkpoint} models {rate} Hz audio and {path} holds "
                      f"{dataset.sample_rate} Hz: prepare the data with sample_rate={rate}")
    tmp = out.with_name(out.name + ".tmp")
    if world.main:
        tmp.write_text("")  # a folder we cannot write to says so now, not after the evaluation
    try:
        seq_len = cfg.seq_len or run_cfg["eval"]["seq_len"]
        with world.only_main(InUse(dataset.path, f"evaluating {cfg.checkpoint}")):
            result = evaluate_nll(scored, dataset, cfg.split, cfg.batch_size, seq_len, device,
                                  cfg.precision, protocol, world=world, as_label=as_label,
                                  mean_features=ablation is not None)
        if not math.isfinite(result["nll_bits"]):
            raise BadFile(f"the NLL of {cfg.checkpoint} on {path} is {result['nll_bits']}: the "
                          "model's outputs are not finite (try precision=fp32)")
        result.update(split=cfg.split, dataset=str(path), checkpoint=str(cfg.checkpoint),
                      step=info["step"], n_parameters=model.n_parameters(), processes=world.size,
                      weights=str(cfg.weights),
                      sample_rate=dataset.sample_rate,
                      **({"scored_as": names[as_label]} if as_label is not None else {}),
                      **({"features": str(ablation)} if ablation is not None else {}))
        if world.main:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
            tmp.replace(out)
    finally:
        if world.main:
            tmp.unlink(missing_ok=True)
    if world.main:
        print(json.dumps({k: v for k, v in result.items() if k != "files"}))
        print(f"written to {out} (with the NLL of each file)")
    return result


if __name__ == "__main__":  # python -m samplernn.evaluate: the same app as samplernn-evaluate
    from .cli import evaluate
    evaluate()
