"""The training job: TBPTT over a prepared dataset, exact evaluation, checkpoints, samples.

`run(cfg)` is what `scripts/train.py` calls and what the tests call. The run
directory (Hydra's output dir) is the source of truth: config.yaml,
summary.json, metrics.jsonl, checkpoints/{last,best}.pt, samples/step_N/, and
W&B's offline run under wandb/.

A run directory has one writer (a lock), and the same command run again continues the
run it holds (`resume=auto`, the default; see runconfig.py for what may change). On
SIGTERM, SIGUSR1, SIGUSR2 or SIGINT the current step finishes, checkpoints/last.pt is
written at that step (TBPTT state and data position included), summary.json says
`preempted` (`interrupted` for SIGINT) and the process exits with 128 + the signal number,
after handing the signal to a job scheduler's handler if one was installed (submitit's
requeues the job). A step whose loss or gradients are not finite is skipped; too many in a
row stop the run with one line, and no checkpoint is ever written with non-finite weights.

Started by torchrun or as SLURM tasks, training is data-parallel (distributed.py, DDP): each
process trains its rows of the global batch and keeps their TBPTT state; the main process
alone writes, and its checkpoints hold every row's state, so a run resumes with any number
of processes that divides the batch.
"""

import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import distributed
from .checkpoint import read_checkpoint, restore_rng, save_checkpoint
from .cli import command
from .data import PreparedDataset, train_loader
from .device import autocast, pick_device
from .errors import AlreadyExists, BadFile, NotFound, UserError
from .evaluate import evaluate_nll
from .interrupt import StopRequest, signal_name
from .lock import DirLock
from .logger import RunLogger
from .model import SampleRNN
from .quantize import nll_bits
from .runconfig import asked_keys, check_config, resumed_config
from .samples import write_samples

log = logging.getLogger(__name__)


class Diverged(UserError):
    """The loss or its gradients stayed non-finite for too many steps."""


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


def _identity(cfg: DictConfig, tiers: int, dataset_name: str, previous: dict) -> dict:
    """What the run is, for people and W&B: preset, group, name (e.g. three_tier-s1, or
    three_tier-authors-s1 with a variant) and tags. A resumed run keeps its own."""
    hc = _hydra_runtime()
    choices = hc.runtime.choices if hc is not None else {}
    preset = previous.get("preset") or choices.get("model") or "custom"
    group = cfg.get("group") or cfg.get("experiment_name")
    if hc is not None and str(hc.mode) == "RunMode.MULTIRUN":
        sweep = Path(hc.sweep.dir)
        group = f"{group or 'sweep'}-{sweep.parent.name}-{sweep.name}"
    variant = choices.get("variant")
    name = "-".join([preset] + ([variant] if variant else []) + [f"s{cfg.seed}"])
    return {"preset": preset, "group": previous.get("group") or group or dataset_name,
            "name": previous.get("name") or name,
            "tags": [f"tiers={tiers}", f"preset={preset}", f"dataset={dataset_name}"]}


def open_dataset(dataset_cfg) -> PreparedDataset:
    """The prepared dataset; the built-in default data are synthesised on first use, at their
    own path only (any other path must hold a prepared dataset)."""
    from .synth import DEFAULT_PATH, build_default_dataset
    path = Path(dataset_cfg.path)
    if dataset_cfg.get("builtin") and not (path / "manifest.json").exists():
        if path.resolve() != DEFAULT_PATH.resolve():
            raise NotFound(f"dataset.path={path} holds no prepared dataset; the built-in data are "
                           f"made only at {DEFAULT_PATH}: drop dataset.path, or prepare your audio "
                           f"there first (python datasets/prepare.py source=<folder> out_dir={path})")
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


def _quiet_logging() -> None:
    """A non-main process: warnings and errors on the console, no log file of its own."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.WARNING)


class _Silent:
    """The logger of a non-main process: the main process logs for all."""
    run_id = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _clip(params, optim_cfg) -> float:
    """Clip as configured; returns the gradient norm before clipping (NaN or inf when a
    gradient is not finite)."""
    max_norm = optim_cfg.clip_value if optim_cfg.clip == "norm" else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # the norm before clipping
    if optim_cfg.clip == "value":
        torch.nn.utils.clip_grad_value_(params, optim_cfg.clip_value)
    return float(norm)


def _resume_path(cfg: DictConfig, run_dir: Path) -> Path | None:
    """resume=auto (default): the run directory's own last.pt, if any; false: a fresh start
    into a directory that holds no run; a path: that checkpoint."""
    last = run_dir / "checkpoints" / "last.pt"
    if cfg.resume in (None, False, "false", "never"):
        if last.exists():
            raise AlreadyExists(f"{run_dir} already holds a run (checkpoints/last.pt) and resume="
                                f"{cfg.resume}; drop resume= to continue it, or choose another "
                                "hydra.run.dir")
        return None
    if cfg.resume == "auto":
        return last if last.exists() else None
    path = Path(cfg.resume)
    if not path.is_file():
        raise NotFound(f"resume={cfg.resume}: no such checkpoint; give the path of a .pt file, or "
                       "resume=auto (the default) with hydra.run.dir=<run dir>")
    return path


def _finite_rows(model: SampleRNN, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rows whose TBPTT state is not finite go back to the initial state."""
    bad = torch.zeros(hidden[0].shape[1], dtype=torch.bool, device=hidden[0].device)
    for h in hidden:
        bad |= ~torch.isfinite(h).all(dim=2).all(dim=0)
    return model.reset_hidden(hidden, bad) if bad.any() else hidden


def _print_next_steps(run_dir: Path, final: dict, sync: str | None) -> None:
    best = run_dir / "checkpoints" / "best.pt"
    lines = ["", "Done: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in final.items()),
             f"  run directory  {run_dir}",
             f"  metrics        {run_dir / 'metrics.jsonl'}",
             f"  checkpoints    {run_dir / 'checkpoints'}/{{last,best}}.pt",
             f"  samples        {run_dir / 'samples'}/step_<N>/*.wav (+ .json, .png)",
             "Next:",
             f"  generate more  {command('generate')} checkpoint={best} num_samples=4 seconds=10",
             f"  train longer   {command('train')} hydra.run.dir={run_dir} train.max_steps=<more>",
             f"  evaluate       {command('evaluate')} checkpoint={best}",
             f"  compare runs   {command('compare')} {run_dir} <other run dirs>"]
    if sync is not None:
        lines.append(f"  sync to W&B    wandb sync {sync}   (every segment of the run)")
    print("\n".join(lines), flush=True)


def run(cfg: DictConfig, run_dir=None) -> dict:
    """Train as configured; returns the final metrics (valid/test NLL in bits, steps)."""
    check_config(cfg)
    world = distributed.join(str(cfg.device))
    try:
        mine = _run_dir(cfg, run_dir)
        run_dir = world.broadcast(mine)  # the main process's clock names the run
        if not world.main:
            distributed.drop_stray_output_dir(mine, run_dir)
        # one writer: before anything is read or written there
        with world.only_main(DirLock(run_dir, "training")):
            resume_from = _resume_path(cfg, run_dir)
            state = None
            if resume_from is not None:
                state = read_checkpoint(resume_from, "cpu")
                cfg = resumed_config(cfg, state["run_config"], resume_from, asked_keys())
            return _train(cfg, run_dir, state, resume_from, world)
    finally:
        distributed.leave()


def _train(cfg: DictConfig, run_dir: Path, state: dict | None, resume_from: Path | None,
           world: distributed.World) -> dict:
    # -- everything that can fail on a user's mistake, before anything is written --------
    model_cfg = check_config(cfg)  # again: a resumed run's stored config with its changes
    t_cfg, e_cfg = cfg.train, cfg.eval
    previous = _read_json(run_dir / "summary.json") if state is not None else {}
    step = state["step"] if state is not None else 0
    if previous.get("status") == "finished" and step >= t_cfg.max_steps and previous.get("final"):
        print(f"{run_dir} holds a finished run (step {step}); nothing to do: raise "
              "train.max_steps to train it further", flush=True)
        return previous["final"]
    torch.manual_seed(cfg.seed)
    device = distributed.device(world, pick_device(cfg.device, cfg.get("threads")))
    rows = world.rows(t_cfg.batch_size)
    if not world.main:  # its lines would repeat the main process's: warnings only, no file
        _quiet_logging()
    dataset = world.main_first(lambda: open_dataset(cfg.dataset))  # built-in data made once
    trained_on = (state or {}).get("dataset")
    if trained_on and trained_on["fingerprint"] != dataset.fingerprint:
        raise BadFile(f"dataset.path={dataset.path} is not the data this run trained on "
                      f"({trained_on['path']}, its manifest differs); point dataset.path at "
                      "that data, or start a new run")
    data_info = {"path": str(dataset.path.resolve()), "name": dataset.name,
                 "fingerprint": dataset.fingerprint}
    cfg.dataset.path = data_info["path"]  # the run records where its data are, absolutely
    model = SampleRNN(model_cfg).to(device)
    forward = model
    if world.active:  # gradients averaged over the processes as they are computed
        forward = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                          broadcast_buffers=False)  # its buffers are constants
    forward = torch.compile(forward) if cfg.compile else forward
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                 weight_decay=cfg.optim.weight_decay,
                                 fused=device.type == "cuda" or None)
    warmup = max(int(cfg.optim.warmup_steps), 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    best, hidden, elapsed0, wandb_id, extra = math.inf, None, 0.0, None, {}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state)
        wandb_id, extra = state["wandb_id"], state["extra"]
        best = state["best_valid_nll_bits"] if state["best_valid_nll_bits"] is not None else math.inf
        hidden = [h[:, rows[0]:rows[1]].to(device) for h in state["hidden"]] if state["hidden"] else None
        elapsed0 = extra.get("elapsed_s", 0.0)
    lb = model.lookback
    segment = int(cfg.dataset.segment_seconds * dataset.sample_rate)
    loader = train_loader(dataset, t_cfg.batch_size, t_cfg.seq_len, lb, max(segment, t_cfg.seq_len),
                          model_cfg.q_type, model_cfg.q_levels, seed=cfg.seed, start_step=step,
                          num_workers=cfg.dataset.num_workers, order=t_cfg.order, rows=rows,
                          pin_memory=device.type == "cuda")

    # -- the run directory (the main process): config, summary, logger ------------------
    run_config = OmegaConf.to_container(cfg, resolve=True)
    who = _identity(cfg, model_cfg.n_tiers, dataset.name, previous)
    preset = who["preset"]
    identity = {"tiers": model_cfg.n_tiers, "preset": preset,
                "n_parameters": model.n_parameters(), "dataset": dataset.name}
    if world.main:
        _setup_logging(run_dir)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        if resume_from is not None:
            log.info("resuming from %s at step %d", resume_from, step)
        logger = RunLogger(run_dir, run_config["logger"], run_config, group=who["group"],
                           tags=who["tags"], name=who["name"], run_id=wandb_id, identity=identity)
    else:
        logger = _Silent()
    summary = {**identity, "name": who["name"], "sample_rate": dataset.sample_rate,
               "group": who["group"], "status": "running", "step": step, "wandb_id": logger.run_id,
               "processes": world.size}
    summary.update({k: previous[k] for k in ("best_valid_nll_bits", "wall_time_s") if k in previous})
    write_summary = (lambda: _write_json(run_dir / "summary.json", summary)) if world.main else (lambda: None)
    write_summary()
    log.info("model %s: %d tiers, %s parameters; data %s; device %s%s", preset, model_cfg.n_tiers,
             f"{model.n_parameters():,}", dataset.path, device,
             f"; {world.size} processes of {t_cfg.batch_size // world.size} rows" if world.active else "")
    start = time.time() - elapsed0
    budget_s = t_cfg.max_minutes * 60 if t_cfg.max_minutes else math.inf
    # losses since the last train/* line, and the non-finite steps: carried across a resume
    window, window_steps = list(extra.get("window", [])), int(extra.get("window_steps", 0))
    skipped, bad_run = int(extra.get("skipped_steps", 0)), int(extra.get("nonfinite_in_a_row", 0))
    # the last validation: its step and NLL (a signal may cut one short; it is then redone)
    validated_at, valid = extra.get("validated_at"), extra.get("valid_nll_bits")
    window_t = time.time()
    stop = StopRequest()

    def checkpoint(path):
        every_row = world.gather_rows(hidden) if hidden is not None else None  # all processes
        if not world.main:
            return
        save_checkpoint(path, model, run_config=run_config, step=step, optimizer=optimizer,
                        scheduler=scheduler, hidden=every_row, best_valid_nll_bits=best if
                        math.isfinite(best) else None, wandb_id=logger.run_id,
                        sample_rate=dataset.sample_rate, dataset=data_info,
                        extra={"elapsed_s": time.time() - start, "valid_nll_bits": valid,
                               "validated_at": validated_at,
                               "window": window, "window_steps": window_steps,
                               "skipped_steps": skipped, "nonfinite_in_a_row": bad_run})

    def validate() -> bool:
        """Valid NLL, checkpoints and samples at this step; False when a signal cut it short."""
        nonlocal best, valid, validated_at
        result = evaluate_nll(model, dataset, e_cfg.split, e_cfg.batch_size, e_cfg.seq_len,
                              device, cfg.precision, e_cfg.protocol, should_stop=lambda: stop.requested,
                              world=world)
        if result is None:
            return False
        valid, validated_at = result["nll_bits"], step
        logger.log({f"{e_cfg.split}/nll_bits": valid, "time_s": time.time() - start}, step)
        log.info("step %d  %s/nll_bits %.4f (best %.4f)", step, e_cfg.split, valid, min(best, valid))
        if not math.isfinite(valid):  # a broken model: the checkpoints there stay
            log.warning("step %d: %s/nll_bits is %s; no checkpoint written", step, e_cfg.split, valid)
            return True
        improved = valid < best
        best = min(best, valid)
        checkpoint(run_dir / "checkpoints" / "last.pt")
        if improved:
            checkpoint(run_dir / "checkpoints" / "best.pt")
        gen = None if stop.requested or not world.main else write_samples(
            model, run_dir, step, logger, n=e_cfg.n_samples, seconds=e_cfg.sample_seconds,
            temperature=e_cfg.temperature, seed=cfg.seed * 1_000_003 + step,
            sample_rate=dataset.sample_rate)
        summary.update(step=step, best_valid_nll_bits=best, gen_samples_per_s=gen,
                       wall_time_s=time.time() - start)
        write_summary()
        return True

    bar = tqdm(total=t_cfg.max_steps, initial=step, desc="train", unit="step",
               disable=not (sys.stderr.isatty() and world.main), dynamic_ncols=True)
    exit_code = 1
    try:
        logger.truncate_after(step)  # lines a killed run wrote after its last checkpoint
        first_step, loop_t0 = step, time.time()
        with stop, logging_redirect_tqdm():  # log lines print above the bar, not through it
            model.train()
            if step and step % e_cfg.every == 0 and validated_at != step:
                validate()  # the one a signal cut short before this run resumed
            for batch in loader:
                # every process stops at the same step: when any of them must
                done = step >= t_cfg.max_steps or time.time() - start > budget_s or stop.requested
                n_done, n_targets = world.sum(done, batch.mask.sum())
                if n_done:
                    signum = int(world.max(stop.signum or 0)[0])
                    stop.signum = stop.signum or signum or None
                    break
                codes = batch.codes.to(device, non_blocking=True)
                mask = batch.mask.to(device, non_blocking=True)
                hidden = model.reset_hidden(hidden, batch.reset.to(device))  # detached below
                with autocast(device, cfg.precision):
                    logits, hidden = forward(codes, hidden)
                # the global batch's mean: DDP averages the processes' gradients
                loss = nll_bits(logits, codes[:, lb:], mask, reduction="sum") / (
                    max(n_targets, 1) / world.size)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = _clip(params, cfg.optim)
                loss_bits = world.sum(loss.item())[0] / world.size
                if math.isfinite(loss_bits) and math.isfinite(grad_norm):
                    optimizer.step()
                    window.append(loss_bits)
                    bad_run = 0
                else:  # skip the update; rows whose state broke start afresh
                    optimizer.zero_grad(set_to_none=True)
                    hidden = _finite_rows(model, hidden)
                    skipped, bad_run = skipped + 1, bad_run + 1
                    log.warning("step %d: loss %s, gradient norm %s: update skipped (%d in a row)",
                                step + 1, loss_bits, grad_norm, bad_run)
                    if bad_run >= t_cfg.max_nonfinite_steps:
                        last = run_dir / "checkpoints" / "last.pt"
                        raise Diverged(
                            f"training diverged: the loss or its gradients were not finite for "
                            f"{bad_run} steps in a row (to step {step + 1}); the last good "
                            f"checkpoint is {last if last.exists() else 'none (none was written)'}"
                            f": lower optim.lr (now {cfg.optim.lr}) or check the data")
                scheduler.step()
                hidden = [h.detach() for h in hidden]
                step += 1
                window_steps += 1
                bar.update(1)
                if step % t_cfg.log_every == 0:
                    dt = time.time() - window_t
                    rate = window_steps * t_cfg.batch_size * t_cfg.seq_len / max(dt, 1e-9)
                    metrics = {"train/grad_norm": grad_norm, "train/lr": scheduler.get_last_lr()[0],
                               "train/skipped_steps": skipped, "perf/samples_per_s": rate,
                               "time_s": time.time() - start}
                    if window:
                        metrics["train/nll_bits"] = sum(window) / len(window)
                        bar.set_postfix(nll_bits=f"{metrics['train/nll_bits']:.3f}",
                                        samples_per_s=f"{rate:,.0f}")
                    logger.log(metrics, step)
                    summary["train_samples_per_s"] = rate
                    if math.isfinite(budget_s):  # the bar's end: the steps the time budget allows
                        per_s = (step - first_step) / max(time.time() - loop_t0, 1e-9)
                        left_s = budget_s - (time.time() - start)
                        bar.total = min(t_cfg.max_steps, step + max(0, int(left_s * per_s)))
                        bar.refresh()
                    log.info("step %d  train/nll_bits %.4f  samples/s %.0f", step,
                             metrics.get("train/nll_bits", math.nan), rate)
                    window, window_t, window_steps = [], time.time(), 0
                if step % e_cfg.every == 0:
                    if not validate():
                        break
                    window_t = time.time()
            if not stop.requested and validated_at != step:
                validate()
            test = None
            if not stop.requested and not math.isfinite(best):
                raise Diverged(f"no validation of this run gave a finite {e_cfg.split} NLL, so it "
                               "has no best.pt: lower optim.lr or check the data")
            if not stop.requested and e_cfg.test and dataset.files("test"):
                world.barrier()  # best.pt is written
                best_state = read_checkpoint(run_dir / "checkpoints" / "best.pt", device)
                model.load_state_dict(best_state["model"])
                test = evaluate_nll(model, dataset, "test", e_cfg.batch_size, e_cfg.seq_len, device,
                                    cfg.precision, e_cfg.protocol,
                                    should_stop=lambda: stop.requested, world=world)
            if stop.requested:
                _stop(stop, run_dir, step, summary, checkpoint, logger, write_summary)
        final = {"step": step, f"{e_cfg.split}/nll_bits": valid, "best_valid_nll_bits": best}
        if test is not None:
            logger.log({"test/nll_bits": test["nll_bits"], "time_s": time.time() - start}, step)
            final["test/nll_bits"] = summary["test_nll_bits"] = test["nll_bits"]
        summary.update(status="finished", step=step, wall_time_s=time.time() - start, final=final)
        write_summary()
        logger.summary({"best_valid_nll_bits": best, "final_step": step})  # NLLs keep their min
        exit_code = 0
        if world.main:
            _print_next_steps(run_dir, final, logger.sync_hint())
        return final
    except SystemExit:  # a signal's stop: its status is written
        raise
    except BaseException as error:
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        summary.update(status=status, step=step, error=" ".join(str(error).split())[:500] or
                       type(error).__name__)
        write_summary()
        raise
    finally:
        bar.close()
        logger.finish(exit_code)


def _stop(stop: StopRequest, run_dir: Path, step: int, summary: dict, checkpoint, logger,
          write_summary) -> None:
    """After a stop signal: last.pt at this step, the status, one line; then exit."""
    name = signal_name(stop.signum)
    checkpoint(run_dir / "checkpoints" / "last.pt")
    summary.update(status="interrupted" if name == "SIGINT" else "preempted", step=step,
                   stopped_by=name)
    write_summary()
    log.warning("%s: stopped at step %d; %s holds it, and the same command continues the run",
                name, step, run_dir / "checkpoints" / "last.pt")
    logger.finish(1)
    stop.stop()  # the scheduler's handler (e.g. submitit: requeue), or exit 128 + signal


if __name__ == "__main__":  # python -m samplernn.train: the same app as samplernn-train
    from .cli import train
    train()
