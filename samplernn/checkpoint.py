"""Self-describing checkpoints: written atomically, loaded with weights_only=True.

A checkpoint holds the model config and weights (from the uncompiled module),
the resolved run config, the step, optimizer state, RNG states, the TBPTT
state carried between chunks (so a resumed run continues exactly), the best
metric so far, the W&B run id and the code that wrote it (version.code_version).
"""

import errno
import os
import random
import shutil
from pathlib import Path

import torch

from .errors import BadFile, NotFound, UserError
from .model import SampleRNN, SampleRNNConfig
from .version import code_version

FORMAT_VERSION = 1


class NonFiniteWeights(UserError):
    """The model diverged: its weights hold NaN or infinity."""


def non_finite(state_dict: dict) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [k for k, v in state_dict.items()
            if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]


def save_checkpoint(path, model: SampleRNN, *, run_config: dict, step: int,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler=None, scaler: torch.amp.GradScaler | None = None,
                    hidden: list[torch.Tensor] | None = None,
                    best_valid_nll_bits: float | None = None, wandb_id: str | None = None,
                    sample_rate: int | None = None, dataset: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write to `<path>.tmp` then rename over `path`: a crash never leaves half a file.

    Weights that are not finite are never written (NonFiniteWeights): the checkpoint that
    is there stays. dataset: where the data came from (absolute path, manifest hash).
    """
    path = Path(path)
    bad = non_finite(model.state_dict())
    if bad:
        raise NonFiniteWeights(f"the model's weights are no longer finite at step {step} "
                               f"({len(bad)} tensors, e.g. {bad[0]}); {path} was not written, the "
                               "earlier checkpoints stay: lower optim.lr and resume from them")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "run_config": run_config,
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "hidden": [h.detach().cpu() for h in hidden] if hidden is not None else None,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": list(random.getstate()[1])},
        "best_valid_nll_bits": best_valid_nll_bits,
        "wandb_id": wandb_id,
        "sample_rate": sample_rate,
        "dataset": dataset,
        "extra": extra or {},
        "code": code_version(),
    }
    tmp, failed = path.with_name(path.name + ".tmp"), None
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except RuntimeError as error:  # torch's writer says a failed write as an enforce failure
        failed = " ".join(str(error).split())  # (its traceback, which holds the file open, goes)
    finally:
        tmp.unlink(missing_ok=True)
    if failed is not None:
        full = shutil.disk_usage(path.parent).free < (1 << 20)
        raise OSError(errno.ENOSPC if full else errno.EIO,
                      os.strerror(errno.ENOSPC) if full else f"could not write it ({failed})",
                      str(path))
    return path


def read_checkpoint(path, device="cpu") -> dict:
    """The raw checkpoint dict; a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"checkpoint {path} does not exist; pass checkpoint=<run dir>/"
                       "checkpoints/last.pt (or best.pt) of a training run")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise BadFile(f"checkpoint {path} could not be read ({error}); it is not a samplernn "
                      "checkpoint or it is damaged") from error
    if not isinstance(state, dict) or "model_config" not in state:
        raise BadFile(f"{path} is not a samplernn checkpoint (no model_config inside)")
    bad = non_finite(state["model"])
    if bad:
        raise BadFile(f"checkpoint {path} holds non-finite weights ({len(bad)} tensors, e.g. "
                      f"{bad[0]}): its run diverged; use an earlier checkpoint")
    return state


def load_checkpoint(path, device="cpu") -> tuple[SampleRNN, dict]:
    """Rebuild the model from the checkpoint alone -> (model in eval mode, info dict)."""
    state = read_checkpoint(path, device)
    model = SampleRNN(SampleRNNConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    info = {k: v for k, v in state.items() if k not in ("model", "optimizer", "scheduler")}
    info["path"] = str(path)
    return model, info


def restore_rng(state: dict) -> None:
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if rng.get("python"):
        random.setstate((3, tuple(rng["python"]), None))
