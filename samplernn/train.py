"""The training job: TBPTT over a prepared dataset, exact evaluation, checkpoints, samples.

`run(cfg)` is what `scripts/train.py` calls and what the tests call. The run
directory (Hydra's output dir) is the source of truth: config.yaml,
summary.json, metrics.jsonl, checkpoints/{last,best}.pt, samples/step_N/, and
W&B's offline run under wandb/.
"""

import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .checkpoint import read_checkpoint, restore_rng, save_checkpoint
from .data import PreparedDataset, train_loader
from .device import autocast, pick_device
from .evaluate import evaluate_nll
from .logger import RunLogger
from .model import SampleRNN, SampleRNNConfig
from .quantize import nll_bits
from .samples import write_samples

log = logging.getLogger(__name__)


def _hydra_runtime():
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.get() if HydraConfig.initialized() else None


def _run_dir(cfg: DictConfig, run_dir) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    hc = _hydra_runtime()
    if hc is not None:
        return Path(hc.runtime.output_dir)
    raise ValueError("no run directory: call run(cfg, run_dir=...) or launch through Hydra")


def _identity(cfg: DictConfig, tiers: int) -> tuple[str, str, list[str]]:
    """(model preset, W&B group, tags) from Hydra's choices and the config."""
    hc = _hydra_runtime()
    preset = (hc.runtime.choices.get("model") if hc is not None else None) or \
        cfg.get("preset") or "custom"
    group = cfg.get("group") or cfg.get("experiment_name")
    if hc is not None and str(hc.mode) == "RunMode.MULTIRUN":
        sweep = Path(hc.sweep.dir)
        group = f"{group or 'sweep'}-{sweep.parent.name}-{sweep.name}"
    group = group or cfg.dataset.name
    tags = [f"tiers={tiers}", f"preset={preset}", f"dataset={cfg.dataset.name}"]
    return preset, group, tags


def open_dataset(dataset_cfg) -> PreparedDataset:
    """The prepared dataset; the built-in default data is synthesised on first use."""
    path = Path(dataset_cfg.path)
    if dataset_cfg.get("builtin") and not (path / "manifest.json").exists():
        from .synth import build_default_dataset
        log.info("building the built-in default dataset in %s", path)
        build_default_dataset(path)
    return PreparedDataset(path)


def _setup_logging(run_dir: Path) -> None:
    path = (run_dir / "train.log").resolve()
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _clip(params, optim_cfg) -> float:
    """Clip as configured; returns the gradient norm before clipping."""
    if optim_cfg.clip not in ("value", "norm", "none"):
        raise ValueError(f"optim.clip={optim_cfg.clip!r}; use value, norm or none")
    max_norm = optim_cfg.clip_value if optim_cfg.clip == "norm" else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # the norm before clipping
    if optim_cfg.clip == "value":
        torch.nn.utils.clip_grad_value_(params, optim_cfg.clip_value)
    return float(norm)


def _resume_path(cfg: DictConfig, run_dir: Path) -> Path | None:
    if not cfg.resume:
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise FileExistsError(f"{run_dir} already holds a run (checkpoints/last.pt); pass "
                                  "resume=auto to continue it, or choose another hydra.run.dir")
        return None
    if cfg.resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.exists() else None
    path = Path(cfg.resume)
    if not path.is_file():
        raise FileNotFoundError(f"resume={cfg.resume}: no such checkpoint; use resume=auto with "
                                "hydra.run.dir=<run dir>, or the path of a .pt file")
    return path


def _print_next_steps(run_dir: Path, final: dict, wandb_dir: Path | None) -> None:
    lines = ["", "Done: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in final.items()),
             f"  run directory  {run_dir}",
             f"  metrics        {run_dir / 'metrics.jsonl'}",
             f"  checkpoints    {run_dir / 'checkpoints'}/{{last,best}}.pt",
             f"  samples        {run_dir / 'samples'}/step_<N>/*.wav (+ .json, .png)",
             "Next:",
             f"  generate more  python scripts/generate.py checkpoint={run_dir / 'checkpoints' / 'best.pt'} "
             "num_samples=4 seconds=10",
             f"  resume         python scripts/train.py <same overrides> hydra.run.dir={run_dir} "
             "resume=auto train.max_steps=<more>",
             f"  evaluate       python scripts/evaluate.py checkpoint={run_dir / 'checkpoints' / 'best.pt'}",
             f"  compare runs   python scripts/compare.py {run_dir} <other run dirs>"]
    if wandb_dir is not None:
        lines.append(f"  sync to W&B    wandb sync {wandb_dir}")
    print("\n".join(lines), flush=True)


def run(cfg: DictConfig, run_dir=None) -> dict:
    """Train as configured; returns the final metrics (valid/test NLL in bits, steps)."""
    run_dir = _run_dir(cfg, run_dir)
    resume_from = _resume_path(cfg, run_dir)  # before anything is written there
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir)
    model_cfg = SampleRNNConfig(**cfg.model)
    if cfg.train.seq_len % model_cfg.frame_sizes[-1]:
        raise ValueError(f"train.seq_len={cfg.train.seq_len} must be a multiple of the top frame "
                         f"size {model_cfg.frame_sizes[-1]} (model.frame_sizes="
                         f"{model_cfg.frame_sizes})")
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device, cfg.get("threads"))
    dataset = open_dataset(cfg.dataset)
    model = SampleRNN(model_cfg).to(device)
    forward = torch.compile(model) if cfg.compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                 weight_decay=cfg.optim.weight_decay)
    warmup = max(int(cfg.optim.warmup_steps), 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    preset, group, tags = _identity(cfg, model_cfg.n_tiers)

    step, best, hidden, elapsed0, wandb_id = 0, math.inf, None, 0.0, None
    if resume_from is not None:
        state = read_checkpoint(resume_from, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state)
        step, wandb_id = state["step"], state["wandb_id"]
        best = state["best_valid_nll_bits"] if state["best_valid_nll_bits"] is not None else math.inf
        hidden = [h.to(device) for h in state["hidden"]] if state["hidden"] else None
        elapsed0 = state["extra"].get("elapsed_s", 0.0)
        log.info("resuming from %s at step %d", resume_from, step)

    logger = RunLogger(run_dir, run_config["logger"], run_config, group=group, tags=tags,
                       name=run_dir.name, run_id=wandb_id)
    logger.truncate_after(step)  # lines a killed run wrote after its last checkpoint
    summary = {"preset": preset, "tiers": model_cfg.n_tiers, "n_parameters": model.n_parameters(),
               "sample_rate": dataset.sample_rate, "group": group, "status": "running",
               "step": step, "wandb_id": logger.run_id}
    _write_json(run_dir / "summary.json", summary)
    log.info("model %s: %d tiers, %s parameters; data %s; device %s", preset, model_cfg.n_tiers,
             f"{model.n_parameters():,}", dataset.path, device)

    t_cfg, e_cfg = cfg.train, cfg.eval
    lb = model.lookback
    segment = int(cfg.dataset.segment_seconds * dataset.sample_rate)
    loader = train_loader(dataset, t_cfg.batch_size, t_cfg.seq_len, lb, max(segment, t_cfg.seq_len),
                          model_cfg.q_type, model_cfg.q_levels, seed=cfg.seed, start_step=step,
                          num_workers=cfg.dataset.num_workers, order=t_cfg.order)
    start = time.time() - elapsed0
    budget_s = cfg.train.max_minutes * 60 if cfg.train.max_minutes else math.inf

    def checkpoint(path, valid=None):
        save_checkpoint(path, model, run_config=run_config, step=step, optimizer=optimizer,
                        scheduler=scheduler, hidden=hidden, best_valid_nll_bits=best if
                        math.isfinite(best) else None, wandb_id=logger.run_id,
                        sample_rate=dataset.sample_rate,
                        extra={"elapsed_s": time.time() - start, "valid_nll_bits": valid})

    def validate():
        nonlocal best
        result = evaluate_nll(model, dataset, e_cfg.split, e_cfg.batch_size, e_cfg.seq_len,
                              device, cfg.precision, e_cfg.protocol)
        valid = result["nll_bits"]
        logger.log({f"{e_cfg.split}/nll_bits": valid, "time_s": time.time() - start}, step)
        improved = valid < best
        best = min(best, valid)
        checkpoint(run_dir / "checkpoints" / "last.pt", valid)
        if improved:
            checkpoint(run_dir / "checkpoints" / "best.pt", valid)
        gen = write_samples(model, run_dir, step, logger, n=e_cfg.n_samples,
                            seconds=e_cfg.sample_seconds, temperature=e_cfg.temperature,
                            seed=cfg.seed * 1_000_003 + step, sample_rate=dataset.sample_rate)
        summary.update(step=step, best_valid_nll_bits=best, gen_samples_per_s=gen,
                       wall_time_s=time.time() - start)
        _write_json(run_dir / "summary.json", summary)
        return valid

    window, window_t, window_steps, valid = [], time.time(), 0, None
    bar = tqdm(total=t_cfg.max_steps, initial=step, desc="train", unit="step",
               disable=not sys.stderr.isatty(), dynamic_ncols=True)
    exit_code = 1
    try:
        model.train()
        for batch in loader:
            if step >= t_cfg.max_steps or time.time() - start > budget_s:
                break
            codes, mask = batch.codes.to(device), batch.mask.to(device)
            hidden = model.reset_hidden(hidden, batch.reset.to(device))  # detached below
            with autocast(device, cfg.precision):
                logits, hidden = forward(codes, hidden)
            loss = nll_bits(logits, codes[:, lb:], mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = _clip(params, cfg.optim)
            optimizer.step()
            scheduler.step()
            hidden = [h.detach() for h in hidden]
            step += 1
            window.append(loss.item())
            window_steps += 1
            bar.update(1)
            if step % t_cfg.log_every == 0:
                dt = time.time() - window_t
                rate = window_steps * t_cfg.batch_size * t_cfg.seq_len / max(dt, 1e-9)
                train_nll = sum(window) / len(window)
                logger.log({"train/nll_bits": train_nll, "train/grad_norm": grad_norm,
                            "train/lr": scheduler.get_last_lr()[0], "perf/samples_per_s": rate,
                            "time_s": time.time() - start}, step)
                summary["train_samples_per_s"] = rate
                bar.set_postfix(nll_bits=f"{train_nll:.3f}", samples_per_s=f"{rate:,.0f}")
                log.info("step %d  train/nll_bits %.4f  samples/s %.0f", step, train_nll, rate)
                window, window_t, window_steps = [], time.time(), 0
            if step % cfg.eval.every == 0:
                valid = validate()
                log.info("step %d  %s/nll_bits %.4f (best %.4f)", step, e_cfg.split, valid, best)
                window_t = time.time()
        if valid is None or summary["step"] != step:
            valid = validate()
        final = {"step": step, f"{e_cfg.split}/nll_bits": valid, "best_valid_nll_bits": best}
        if e_cfg.test and dataset.files("test"):
            best_state = read_checkpoint(run_dir / "checkpoints" / "best.pt", device)
            model.load_state_dict(best_state["model"])
            test = evaluate_nll(model, dataset, "test", e_cfg.batch_size, e_cfg.seq_len, device,
                                cfg.precision, e_cfg.protocol)["nll_bits"]
            logger.log({"test/nll_bits": test, "time_s": time.time() - start}, step)
            final["test/nll_bits"] = test
            summary["test_nll_bits"] = test
        summary.update(status="finished", step=step, wall_time_s=time.time() - start)
        _write_json(run_dir / "summary.json", summary)
        logger.summary(final)
        exit_code = 0
        _print_next_steps(run_dir, final, logger.run_dir_wandb())
        return final
    except BaseException:
        summary.update(status="failed", step=step)
        _write_json(run_dir / "summary.json", summary)
        raise
    finally:
        bar.close()
        logger.finish(exit_code)
