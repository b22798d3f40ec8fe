"""Exact NLL in bits per sample over a whole split, and the evaluate command.

Every sample of the split is predicted exactly once, with the recurrent state
carried through each file: the number compares across runs and implementations.
"""

import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from .checkpoint import load_checkpoint
from .data import PreparedDataset, eval_loader
from .device import autocast, pick_device
from .model import SampleRNN
from .quantize import nll_bits


@torch.no_grad()
def evaluate_nll(model: SampleRNN, dataset: PreparedDataset, split: str, batch_size: int,
                 seq_len: int, device: torch.device, precision: str = "fp32") -> dict:
    """-> {"nll_bits": bits per sample over the whole split, "n_samples": samples counted}.

    The result does not depend on batch_size or seq_len (state is carried through each
    file), only the speed does: long chunks mean fewer, larger calls.
    """
    cfg = model.config
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    hidden = None
    # a row walks whole files: more rows than files would only compute padding
    batch_size = max(1, min(batch_size, len(dataset.files(split))))
    seq_len = max(model.lookback, seq_len // model.lookback * model.lookback)
    loader = eval_loader(dataset, split, batch_size, seq_len, model.lookback, cfg.q_type,
                         cfg.q_levels)
    for batch in loader:
        codes, mask = batch.codes.to(device), batch.mask.to(device)
        hidden = model.reset_hidden(hidden, batch.reset.to(device))
        with autocast(device, precision):
            logits, hidden = model(codes, hidden)
        total += nll_bits(logits, codes[:, model.lookback:], mask, reduction="sum").double()
        count += int(mask.sum())
    model.train(was_training)
    return {"nll_bits": (total / max(count, 1)).item(), "n_samples": count}


def run(cfg: DictConfig) -> dict:
    """python scripts/evaluate.py checkpoint=<path> [split=test] [dataset.path=...]"""
    device = pick_device(cfg.device, cfg.get("threads"))
    model, info = load_checkpoint(cfg.checkpoint, device)
    run_cfg = info["run_config"]
    path = cfg.dataset.path or run_cfg["dataset"]["path"]
    dataset = PreparedDataset(path)
    seq_len = cfg.seq_len or run_cfg["eval"]["seq_len"]
    result = evaluate_nll(model, dataset, cfg.split, cfg.batch_size, seq_len, device,
                          cfg.precision)
    result.update(split=cfg.split, dataset=str(path), checkpoint=str(cfg.checkpoint),
                  step=info["step"], n_parameters=model.n_parameters())
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).with_name(
        f"eval_{cfg.split}_{Path(cfg.checkpoint).stem}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    print(f"written to {out}")
    return result

