"""The training job: TBPTT over a prepared dataset, exact evaluation, checkpoints, samples.

`run(cfg)` is what `scripts/train.py` calls and what the tests call. The run
directory (Hydra's output dir) is the source of truth: config.yaml,
summary.json, metrics.jsonl, checkpoints/{last,best}.pt, samples/step_N/, and
W&B's offline run under wandb/.

A run is a `Training`: its state is explicit fields, its phases are methods, read in this
order: `set_up` (build the run, or restore it from its checkpoint), `fit` (the loop, one
screen: `optimization_step`, `log_train`, `validate` with checkpoints and samples, `test`,
`stop_on_signal`), `finish`. What only the main process writes goes through `self.out`
(runwriter.py decides who writes).

A run directory has one writer (a lock), and the same command run again continues the
run it holds (`resume=auto`, the default; see runconfig.py for what may change). On
SIGTERM, SIGUSR1, SIGUSR2, SIGINT or SIGHUP the current step finishes, checkpoints/last.pt is
written at that step (TBPTT state and data position included), summary.json says
`preempted` (`interrupted` for SIGINT and SIGHUP, a terminal's) and the process exits with
128 + the signal number,
after handing the signal to a job scheduler's handler if one was installed (submitit's
requeues the job). A step whose loss or gradients are not finite is skipped; too many in a
row stop the run with one line, and no checkpoint is ever written with non-finite weights.

Started by torchrun or as SLURM tasks, training is data-parallel (distributed.py, DDP): each
process trains its rows of the global batch and keeps their TBPTT state; the main process
alone writes, and its checkpoints hold every row's state, so a run resumes with any number
of processes that divides the batch.
"""

import contextlib
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm.contrib.logging import logging_redirect_tqdm

from . import distributed, runwriter
from .checkpoint import read_checkpoint, restore_rng
from .commands import command
from .data import Batch, PreparedDataset, batches, train_loader
from .device import autocast, grad_scaler, pick_device
from .errors import BadFile, ConfigError, NotFound, UserError
from .evaluate import evaluate_nll
from .interrupt import StopRequest, signal_name
from .lock import DirLock, InUse
from .model import SampleRNN
from .quantization import nll_bits
from .synth import DEFAULT_PATH
from .runconfig import (
    asked_keys,
    check_config,
    hydra_runtime,
    resume_path,
    resumed_config,
)
from .version import code_version

log = logging.getLogger(__name__)


class Diverged(UserError):
    """The loss or its gradients stayed non-finite for too many steps."""


def run(cfg: DictConfig, run_dir=None) -> dict:
    """Train as configured; returns the final metrics (valid/test NLL in bits, steps)."""
    mine = _run_dir(cfg, run_dir)
    try:
        return _run(cfg, mine)
    except BaseException:
        _drop_if_empty(mine)  # a run that never started leaves no folder (Hydra made it)
        raise


def _run(cfg: DictConfig, mine: Path) -> dict:
    check_config(cfg)
    with distributed.process_group(str(cfg.device)) as world:
        run_dir = world.broadcast(mine)  # the main process's clock names the run
        if not world.main:
            distributed.drop_stray_output_dir(mine, run_dir)
        # one writer: before anything is read or written there
        with world.only_main(DirLock(run_dir, "training")):
            resume_from = resume_path(cfg, run_dir)
            state = None
            if resume_from is not None:
                state = read_checkpoint(resume_from, "cpu")
                cfg = resumed_config(cfg, state["run_config"], resume_from, asked_keys())
            with Training(cfg, run_dir, world, state) as training:
                if training.finished_already():
                    return training.previous["final"]
                training.set_up(state, resume_from)
                return training.fit()


@dataclass
class Progress:
    """What a run carries across a resume besides weights, optimizer and TBPTT state (a
    checkpoint's `extra`)."""
    elapsed_s: float = 0.0
    valid_nll_bits: float | None = None  # the last validation's...
    validated_at: int | None = None      # ...and its step (one a signal cut short is redone)
    window: list = field(default_factory=list)  # train losses since the last train/* line
    window_steps: int = 0
    skipped_steps: int = 0               # non-finite steps skipped, in all
    nonfinite_in_a_row: int = 0

    @classmethod
    def restored(cls, extra: dict) -> "Progress":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in extra.items() if k in known})


class Training:
    """One training run. Every process of a data-parallel run runs the same phases in the
    same order; collectives keep their decisions (stop, skip, validate) the same."""

    # its state, set by __init__ and set_up
    cfg: DictConfig                # the run's config (a resumed run's own)
    world: distributed.World       # this process's place among the training processes
    out: "runwriter.RunWriter | runwriter.Silent"  # the run directory, if this process writes
    model: SampleRNN
    forward: torch.nn.Module       # the model as trained: in DDP, torch.compile'd
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler     # fp16's loss scale (does nothing for fp32 and bf16)
    step: int                      # optimisation steps taken (skipped ones included)
    hidden: list[torch.Tensor] | None  # TBPTT state of this process's rows
    best: float                    # best valid NLL so far, bits
    progress: Progress             # counters a checkpoint carries
    summary: dict                  # summary.json
    stop: StopRequest              # the stop signal, once one came

    def __init__(self, cfg: DictConfig, run_dir: Path, world: distributed.World,
                 state: dict | None):
        self.model_cfg = check_config(cfg)  # again: a resumed run's stored config with its changes
        self.cfg, self.run_dir, self.world = cfg, Path(run_dir), world
        self.previous = runwriter.read_json(self.run_dir / "summary.json") \
            if state is not None else {}
        self.step = state["step"] if state is not None else 0
        self._held = contextlib.ExitStack()  # what the run holds until it ends

    def __enter__(self) -> "Training":
        return self

    def __exit__(self, *exc) -> None:
        self._held.close()

    def finished_already(self) -> bool:
        """A finished run asked for no more steps: nothing to do, and it says so."""
        if (self.previous.get("status") == "finished" and self.step >= self.cfg.train.max_steps
                and self.previous.get("final")):
            print(f"{self.run_dir} holds a finished run (step {self.step}); nothing to do: raise "
                  "train.max_steps to train it further", flush=True)
            return True
        return False

    # -- set-up and resume -----------------------------------------------------------------

    def set_up(self, state: dict | None, resume_from: Path | None) -> None:
        """Data, model, optimizer and data loader, restored from `state` when resuming;
        everything that can fail on a user's mistake comes before the run directory is
        written."""
        cfg, t_cfg = self.cfg, self.cfg.train
        torch.manual_seed(cfg.seed)
        self.device = distributed.device(self.world, pick_device(cfg.device, cfg.get("threads")))
        self.rows = self.world.rows(t_cfg.batch_size)
        self.out = runwriter.for_process(self.world, self.run_dir)
        self.dataset = self.world.main_first(lambda: open_dataset(cfg.dataset))  # made once
        self._held.enter_context(self.world.only_main(  # not replaced while the run reads it
            InUse(self.dataset.path, f"training {self.run_dir}")))
        self._check_data(state)
        self._build_model()
        self._restore(state)
        segment = int(cfg.dataset.segment_seconds * self.dataset.sample_rate)
        self.loader = train_loader(
            self.dataset, t_cfg.batch_size, t_cfg.seq_len, self.model.lookback,
            max(segment, t_cfg.seq_len), self.model_cfg.q_type, self.model_cfg.q_levels,
            seed=cfg.seed, start_step=self.step, num_workers=cfg.dataset.num_workers,
            order=t_cfg.order, rows=self.rows, pin_memory=self.device.type == "cuda",
            features=self.model_cfg.feature_radius if self.model_cfg.has_features else None)
        self._open_run_dir(resume_from, state["wandb_id"] if state is not None else None)

    def _check_data(self, state: dict | None) -> None:
        split = self.cfg.eval.split
        if not self.dataset.files(split):  # now, not at the first validation
            raise ConfigError(f"{self.dataset.path} has no {split} files to validate on "
                              f"(eval.split={split}); prepare it with {split}_fraction > 0")
        trained_on = (state or {}).get("dataset")
        if trained_on and trained_on["fingerprint"] != self.dataset.fingerprint:
            raise BadFile(f"dataset.path={self.dataset.path} is not the data this run trained on "
                          f"({trained_on['path']}, its manifest differs); point dataset.path at "
                          "that data, or start a new run")
        self.data_info = {"path": str(self.dataset.path.resolve()), "name": self.dataset.name,
                          "fingerprint": self.dataset.fingerprint, "labels": self.dataset.labels,
                          **({"features": self._feature_record()}
                             if self.dataset.feature_info else {})}
        # the run records where its data are and what they are called (their manifest's name:
        # dataset.path=data/mine is "mine", whatever dataset preset the command started from)
        self.cfg.dataset.path = self.data_info["path"]
        self.cfg.dataset.name = self.dataset.name
        self.cfg.dataset.builtin = self.dataset.path.resolve() == DEFAULT_PATH.resolve()
        self._conditioning_from_the_data()

    def _feature_record(self) -> dict:
        """What generation needs to make features of any file as the data's were made:
        the spec, the statistics and how the audio was normalised."""
        options = self.dataset.manifest.get("options", {})
        return {**self.dataset.feature_info, "sample_rate": self.dataset.sample_rate,
                "data_options": {"normalize": options.get("normalize", "none"),
                                 "chunk_seconds": options.get("chunk_seconds", 8.0)}}

    def _conditioning_from_the_data(self) -> None:
        """A dataset with labels conditions the model on them (model.n_labels), unless
        model.label_dim=0 says to train without them; one with features on those
        (model.n_features, model.feature_hop), unless model.feature_dim=0."""
        labels, model = self.dataset.labels, self.cfg.model
        model.n_labels = len(labels) if model.label_dim > 0 else 0
        info = self.dataset.feature_info
        model.n_features = int(info["n_mels"]) if info and model.feature_dim > 0 else 0
        model.feature_hop = int(info["hop"]) if model.n_features else 0
        self.model_cfg = check_config(self.cfg)
        if info and not model.n_features:
            log.warning("%s has features; model.feature_dim=0 trains without them",
                        self.dataset.path)
        elif info:
            log.info("conditioned on %s features: a stack of %d convolutions (%d channels, "
                     "%d frames each side), into %s", info["kind"], model.feature_layers,
                     model.feature_dim, self.model_cfg.feature_radius, model.features_into)
        if labels and not model.n_labels:
            log.warning("%s has %d labels (%s); model.label_dim=0 trains without them",
                        self.dataset.path, len(labels), ", ".join(labels))
        elif labels:
            log.info("conditioned on %d labels (%s): label_dim %d, into %s", len(labels),
                     ", ".join(labels), model.label_dim, model.label_into)

    def _build_model(self) -> None:
        """The model; `forward` wraps it for DDP and torch.compile; Adam with warm-up."""
        cfg, device = self.cfg, self.device
        self.model = SampleRNN(self.model_cfg).to(device)
        forward = self.model
        if self.world.active:  # gradients averaged over the processes as they are computed
            forward = DistributedDataParallel(
                forward, device_ids=[device] if device.type == "cuda" else None,
                broadcast_buffers=False)  # its buffers are constants
        self.forward = torch.compile(forward) if cfg.compile else forward
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.optim.lr,
                                          betas=tuple(cfg.optim.betas),
                                          weight_decay=cfg.optim.weight_decay,
                                          fused=device.type == "cuda" or None)
        self.scaler = grad_scaler(device, cfg.precision)  # fp16's loss scale; else does nothing
        warmup = max(int(cfg.optim.warmup_steps), 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)

    def _open_run_dir(self, resume_from: Path | None, wandb_id: str | None) -> None:
        """config.yaml, the logger, summary.json (the main process); the clock starts."""
        cfg, model_cfg, dataset = self.cfg, self.model_cfg, self.dataset
        self.run_config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        who = runwriter.identity(cfg, model_cfg.n_tiers, dataset.name, self.previous)
        identity = {"tiers": model_cfg.n_tiers, "preset": who["preset"],
                    "preset_changes": who["preset_changes"],
                    "n_parameters": self.model.n_parameters(), "dataset": dataset.name}
        resumed = None if resume_from is None else f"{resume_from} at step {self.step}"
        self.out.open(cfg, self.run_config, who, identity, resumed, wandb_id)
        self.summary = {**identity, "name": who["name"], "sample_rate": dataset.sample_rate,
                        "group": who["group"], "status": "running", "step": self.step,
                        "wandb_id": self.out.run_id, "processes": self.world.size,
                        "code": code_version()}
        self.summary.update({k: self.previous[k] for k in ("best_valid_nll_bits", "wall_time_s")
                             if k in self.previous})
        self.out.summary(self.summary)
        log.info("model %s: %d tiers, %s parameters; data %s; device %s%s", who["preset"],
                 model_cfg.n_tiers, f"{self.model.n_parameters():,}", dataset.path, self.device,
                 f"; {self.world.size} processes of {cfg.train.batch_size // self.world.size} rows"
                 if self.world.active else "")
        self.start = time.time() - self.progress.elapsed_s
        max_minutes = cfg.train.max_minutes
        self.budget_s = max_minutes * 60 if max_minutes else math.inf
        self.stop = StopRequest()

    # -- checkpoints: what one holds of the run, and the run restored from one -------------

    def checkpoint(self, name: str) -> None:
        """checkpoints/<name> at this step: every process hands in its rows' TBPTT state,
        the main process writes."""
        every_row = self.world.gather_rows(self.hidden) if self.hidden is not None else None
        self.progress.elapsed_s = time.time() - self.start
        self.out.checkpoint(
            name, self.model, run_config=self.run_config, step=self.step,
            optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
            hidden=every_row,
            best_valid_nll_bits=self.best if math.isfinite(self.best) else None,
            wandb_id=self.out.run_id, sample_rate=self.dataset.sample_rate,
            dataset=self.data_info, extra=asdict(self.progress))

    def _restore(self, state: dict | None) -> None:
        """Weights, optimizer, schedule, random numbers, this process's rows of the TBPTT
        state, the best NLL and the progress counters, as the checkpoint left them."""
        self.best, self.hidden, self.progress = math.inf, None, Progress()
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and self.scaler.is_enabled():  # fp16 resumed at its scale
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state)
        self.progress = Progress.restored(state["extra"])
        if state["best_valid_nll_bits"] is not None:
            self.best = state["best_valid_nll_bits"]
        lo, hi = self.rows
        if state["hidden"]:
            self.hidden = [h[:, lo:hi].to(self.device) for h in state["hidden"]]

    # -- the run -----------------------------------------------------------------------------

    def fit(self) -> dict:
        """Optimisation steps until train.max_steps, the time budget or a stop signal, with
        train/* lines and validations on their schedules; then the test and the summary."""
        t_cfg, e_cfg, progress = self.cfg.train, self.cfg.eval, self.progress
        self.bar = self.out.progress_bar(t_cfg.max_steps, self.step)
        exit_code = 1
        try:
            self.out.truncate_after(self.step)  # lines a killed run wrote after its last checkpoint
            self.first_step = self.step
            self.loop_t0 = self.window_t = time.time()
            # log lines print above the bar; the data workers end with the loop, whatever ends it
            with self.stop, logging_redirect_tqdm(), batches(self.loader) as stream:
                self.model.train()
                if self.step and self.step % e_cfg.every == 0 and progress.validated_at != self.step:
                    self.validate()  # the one a signal cut short before this run resumed
                for batch in stream:
                    # every process stops at the same step: when any of them must
                    n_done, n_targets = self.world.sum(self._done(), batch.mask.sum())
                    if n_done:
                        self._agree_on_the_signal()
                        break
                    self.optimization_step(batch, n_targets)
                    if self.step % t_cfg.log_every == 0:
                        self.log_train()
                    if self.step % e_cfg.every == 0:
                        if not self.validate():
                            break
                        self.window_t = time.time()
                if not self.stop.requested and progress.validated_at != self.step:
                    self.validate()
                test = None if self.stop.requested else self.test()
                if self.stop.requested:
                    self.stop_on_signal()
            final = self.finish(test)
            exit_code = 0
            return final
        except SystemExit:  # a signal's stop: its status is written
            raise
        except BaseException as error:
            self.fail(error)
            raise
        finally:
            self.bar.close()
            self.out.finish(exit_code)

    def _done(self) -> bool:
        return (self.step >= self.cfg.train.max_steps or time.time() - self.start > self.budget_s
                or self.stop.requested)

    def _agree_on_the_signal(self) -> None:
        """Every process stops as if it had received the signal one of them did."""
        signum = int(self.world.max(self.stop.signum or 0)[0])
        self.stop.signum = self.stop.signum or signum or None

    def optimization_step(self, batch: Batch, n_targets: float) -> None:
        """Forward, loss, backward, clip and update on one TBPTT chunk of this process's rows;
        n_targets: the samples predicted in the global batch. A step whose loss or
        gradients are not finite makes no update (under fp16 the loss is scaled before
        backward, and a step whose scaled gradients overflow is one of these)."""
        device, lb = self.device, self.model.lookback
        codes = batch.codes.to(device, non_blocking=True)
        mask = batch.mask.to(device, non_blocking=True)
        hidden = self.model.reset_hidden(self.hidden, batch.reset.to(device))  # detached below
        label = batch.label.to(device) if self.model_cfg.conditioned else None
        feats = phase = None
        if self.model_cfg.has_features:
            feats, phase = batch.feats.to(device), batch.phase.to(device)
        with autocast(device, self.cfg.precision):
            logits, hidden = self.forward(codes, hidden, label, feats, phase)
        # the global batch's mean: DDP averages the processes' gradients
        loss = nll_bits(logits, codes[:, lb:], mask, reduction="sum") / (
            max(n_targets, 1) / self.world.size)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # the clip and the check see true gradients
        self.grad_norm = _clip(self.params, self.cfg.optim)
        loss_bits = self.world.sum(loss.item())[0] / self.world.size
        updated = math.isfinite(loss_bits) and math.isfinite(self.grad_norm)
        if updated:
            self.scaler.step(self.optimizer)
            self.progress.window.append(loss_bits)
            self.progress.nonfinite_in_a_row = 0
        else:
            hidden = self._skip_step(hidden, loss_bits)
        self.scaler.update()  # fp16: the scale halves after a skipped step
        with warnings.catch_warnings():  # a skipped first step is not torch's order mistake
            if not updated:
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step",
                                        UserWarning)
            self.scheduler.step()
        self.hidden = [h.detach() for h in hidden]
        self.step += 1
        self.progress.window_steps += 1
        self.bar.update(1)

    def _skip_step(self, hidden: list[torch.Tensor], loss_bits: float) -> list[torch.Tensor]:
        """No update; rows whose state broke start afresh; too many in a row stop the run."""
        progress, limit = self.progress, self.cfg.train.max_nonfinite_steps
        self.optimizer.zero_grad(set_to_none=True)
        progress.skipped_steps += 1
        progress.nonfinite_in_a_row += 1
        scale = (f"; fp16 loss scale {self.scaler.get_scale():g}, now halved"
                 if self.scaler.is_enabled() else "")
        log.warning("step %d: loss %s, gradient norm %s: update skipped (%d in a row)%s",
                    self.step + 1, loss_bits, self.grad_norm, progress.nonfinite_in_a_row, scale)
        if progress.nonfinite_in_a_row >= limit:
            last = self.run_dir / "checkpoints" / "last.pt"
            raise Diverged(
                f"training diverged: the loss or its gradients were not finite for "
                f"{progress.nonfinite_in_a_row} steps in a row (to step {self.step + 1}); the "
                f"last good checkpoint is {last if last.exists() else 'none (none was written)'}"
                f": lower optim.lr (now {self.cfg.optim.lr}) or check the data")
        return _finite_rows(self.model, hidden)

    def log_train(self) -> None:
        """train/* over the steps since the last line, speed; the bar's end under a time
        budget (the steps it allows)."""
        t_cfg, progress = self.cfg.train, self.progress
        now = time.time()
        rate = progress.window_steps * t_cfg.batch_size * t_cfg.seq_len / max(now - self.window_t,
                                                                             1e-9)
        metrics = {"train/grad_norm": self.grad_norm, "train/lr": self.scheduler.get_last_lr()[0],
                   "train/skipped_steps": progress.skipped_steps, "perf/samples_per_s": rate,
                   "time_s": now - self.start}
        if progress.window:
            metrics["train/nll_bits"] = sum(progress.window) / len(progress.window)
            self.bar.set_postfix(nll_bits=f"{metrics['train/nll_bits']:.3f}",
                                 samples_per_s=f"{rate:,.0f}")
        self.out.log(metrics, self.step)
        self.summary["train_samples_per_s"] = rate
        if math.isfinite(self.budget_s):
            per_s = (self.step - self.first_step) / max(time.time() - self.loop_t0, 1e-9)
            left_s = self.budget_s - (time.time() - self.start)
            self.bar.total = min(t_cfg.max_steps, self.step + max(0, int(left_s * per_s)))
            self.bar.refresh()
        log.info("step %d  train/nll_bits %.4f  samples/s %.0f", self.step,
                 metrics.get("train/nll_bits", math.nan), rate)
        progress.window, progress.window_steps = [], 0
        self.window_t = time.time()

    def validate(self) -> bool:
        """Valid NLL, checkpoints and samples at this step; False when a signal cut it short."""
        cfg, e_cfg, step = self.cfg, self.cfg.eval, self.step
        result = evaluate_nll(self.model, self.dataset, e_cfg.split, e_cfg.batch_size,
                              e_cfg.seq_len, self.device, cfg.precision, e_cfg.protocol,
                              should_stop=lambda: self.stop.requested, world=self.world)
        if result is None:
            return False
        valid = result["nll_bits"]
        self.progress.valid_nll_bits, self.progress.validated_at = valid, step
        self.out.log({f"{e_cfg.split}/nll_bits": valid, **_by_label(e_cfg.split, result),
                      "time_s": time.time() - self.start}, step)
        log.info("step %d  %s/nll_bits %.4f (best %.4f)", step, e_cfg.split, valid,
                 min(self.best, valid))
        if not math.isfinite(valid):  # a broken model: the checkpoints there stay
            log.warning("step %d: %s/nll_bits is %s; no checkpoint written", step, e_cfg.split,
                        valid)
            return True
        improved = valid < self.best
        self.best = min(self.best, valid)
        self.checkpoint("last.pt")
        if improved:
            self.checkpoint("best.pt")
        gen = None if self.stop.requested else self.out.samples(
            self.model, step, n=e_cfg.n_samples, seconds=e_cfg.sample_seconds,
            temperature=e_cfg.temperature, seed=cfg.seed * 1_000_003 + step,
            sample_rate=self.dataset.sample_rate,
            labels=self.dataset.labels if self.model_cfg.conditioned else None,
            copies=self._copy_synthesis(e_cfg.n_samples) if self.model_cfg.has_features else None,
            features=self.dataset.feature_info)
        self.summary.update(step=step, best_valid_nll_bits=self.best, gen_samples_per_s=gen,
                            wall_time_s=time.time() - self.start)
        self.out.summary(self.summary)
        return True

    def _copy_synthesis(self, n: int) -> list[dict]:
        """A model with features makes its samples from the features of the first n files
        of the validation split (each cut to eval.sample_seconds): what each sample should
        sound like is that file."""
        files = self.dataset.files(self.cfg.eval.split)[:n]
        return [{"source": f["source"], "frames": np.asarray(self.dataset.file_features(f)),
                 "n_samples": f["n_samples"], "label": self.dataset.label_index(f)}
                for f in files]

    def test(self) -> dict | None:
        """Exact test NLL of best.pt (None without test files or with eval.test=false)."""
        e_cfg = self.cfg.eval
        if not math.isfinite(self.best):
            raise Diverged(f"no validation of this run gave a finite {e_cfg.split} NLL, so it "
                           "has no best.pt: lower optim.lr or check the data")
        if not (e_cfg.test and self.dataset.files("test")):
            return None
        self.world.barrier()  # best.pt is written
        best = read_checkpoint(self.run_dir / "checkpoints" / "best.pt", self.device)
        self.model.load_state_dict(best["model"])
        return evaluate_nll(self.model, self.dataset, "test", e_cfg.batch_size, e_cfg.seq_len,
                            self.device, self.cfg.precision, e_cfg.protocol,
                            should_stop=lambda: self.stop.requested, world=self.world)

    def stop_on_signal(self) -> None:
        """After a stop signal: last.pt at this step, the status, one line; then exit."""
        name = signal_name(self.stop.signum)
        self.checkpoint("last.pt")
        self.summary.update(status="interrupted" if name in ("SIGINT", "SIGHUP") else "preempted",
                            step=self.step, stopped_by=name)
        self.out.summary(self.summary)
        log.warning("%s: stopped at step %d; %s holds it, and the same command continues the run",
                    name, self.step, self.run_dir / "checkpoints" / "last.pt")
        self.out.finish(1)
        self.stop.stop()  # the scheduler's handler (e.g. submitit: requeue), or exit 128 + signal

    def finish(self, test: dict | None) -> dict:
        """The final metrics: logged, in summary.json and W&B's summary; the closing lines."""
        step, valid_key = self.step, f"{self.cfg.eval.split}/nll_bits"
        final = {"step": step, valid_key: self.progress.valid_nll_bits,
                 "best_valid_nll_bits": self.best}
        if test is not None:
            by_label = _by_label("test", test)
            self.out.log({"test/nll_bits": test["nll_bits"], **by_label,
                          "time_s": time.time() - self.start}, step)
            final["test/nll_bits"] = self.summary["test_nll_bits"] = test["nll_bits"]
            final.update(by_label)
        self.summary.update(status="finished", step=step, wall_time_s=time.time() - self.start,
                            final=final)
        self.out.summary(self.summary)
        self.out.wandb_summary({"best_valid_nll_bits": self.best, "final_step": step})
        self.out.next_steps(final)
        return final

    def fail(self, error: BaseException) -> None:
        """The status says why the run ended; where even that cannot be written (a full
        disk), the run's lock tells readers it is no longer running."""
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        self.summary.update(status=status, step=self.step,
                            error=" ".join(str(error).split())[:500] or type(error).__name__)
        try:
            self.out.summary(self.summary)
        except OSError as write_error:
            log.warning("summary.json could not be written (%s)", write_error)


# -- the pieces a run is made of ------------------------------------------------------------

def _run_dir(cfg: DictConfig, run_dir) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    hc = hydra_runtime()
    if hc is not None:
        return Path(hc.runtime.output_dir)
    raise ValueError("no run directory: call run(cfg, run_dir=...) or launch through Hydra")


def _by_label(split: str, result: dict) -> dict:
    """{"<split>/nll_bits/<label>": bits} from an evaluation on a dataset with labels."""
    return {f"{split}/nll_bits/{name}": v["nll_bits"]
            for name, v in result.get("by_label", {}).items()}


def _drop_if_empty(run_dir: Path) -> None:
    """An empty run folder goes, and Hydra's runs/<date>/ and runs/ above it if they are
    empty too."""
    default = run_dir.parent.parent.name == "runs"
    for folder in [run_dir] + ([run_dir.parent, run_dir.parent.parent] if default else []):
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            return


def open_dataset(dataset_cfg) -> PreparedDataset:
    """The prepared dataset; the built-in default data are synthesised on first use, at their
    own path only (any other path must hold a prepared dataset)."""
    from .synth import DEFAULT_PATH, build_default_dataset
    path = Path(dataset_cfg.path)
    if dataset_cfg.get("builtin") and not (path / "manifest.json").exists():
        if path.resolve() != DEFAULT_PATH.resolve():
            raise NotFound(f"dataset.path={path} holds no prepared dataset; the built-in data are "
                           f"made only at {DEFAULT_PATH}: drop dataset.path, or prepare your audio "
                           f"there first ({command('prepare')} source=<folder> out_dir={path})")
        log.info("building the built-in default dataset in %s", path)
        build_default_dataset(path)
    return PreparedDataset(path)


def _clip(params, optim_cfg) -> float:
    """Clip as configured; returns the gradient norm before clipping (NaN or inf when a
    gradient is not finite)."""
    max_norm = optim_cfg.clip_value if optim_cfg.clip == "norm" else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # the norm before clipping
    if optim_cfg.clip == "value":
        torch.nn.utils.clip_grad_value_(params, optim_cfg.clip_value)
    return float(norm)


def _finite_rows(model: SampleRNN, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rows whose TBPTT state is not finite go back to the initial state."""
    bad = torch.zeros(hidden[0].shape[1], dtype=torch.bool, device=hidden[0].device)
    for h in hidden:
        bad |= ~torch.isfinite(h).all(dim=2).all(dim=0)
    return model.reset_hidden(hidden, bad) if bad.any() else hidden


if __name__ == "__main__":  # python -m samplernn.train: the same app as samplernn-train
    from .cli import train
    train()
