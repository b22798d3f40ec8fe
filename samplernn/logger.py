"""Metrics to disk (the source of truth) and to Weights & Biases (its mirror).

The only module that imports wandb. `logger.mode=disabled` (logger=none) is
W&B's own disabled mode, so no code elsewhere branches on it. Any W&B failure
is logged as a warning and W&B is switched off for the rest of the run:
training never stops for it.
"""

import json
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)


class RunLogger:
    """metrics.jsonl in the run directory, mirrored to a W&B run."""

    def __init__(self, run_dir, logger_cfg: dict, run_config: dict, *, group: str | None,
                 tags: list[str], name: str | None = None, run_id: str | None = None,
                 job_type: str = "train", identity: dict | None = None):
        """identity: what a W&B workspace groups and filters runs by (tiers, preset,
        n_parameters, dataset), added to the W&B config at its top level."""
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.wandb = None
        self.run = None
        self.note = None  # why W&B logs offline or not at all, when it was asked otherwise
        mode = str(logger_cfg.get("mode", "offline"))
        try:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb
            self.wandb = wandb
            start = lambda mode: self._start(mode, logger_cfg, run_config, group=group,  # noqa: E731
                                             tags=tags, name=name, run_id=run_id,
                                             job_type=job_type, identity=identity)
            try:
                self.run = start(mode)
            except Exception as error:  # noqa: BLE001 - no login, no network: offline then
                if mode != "online":
                    raise
                self.note = (f"W&B logs this run offline: online failed "
                             f"({_first_line(error)}); wandb login, then wandb sync it")
                log.warning(self.note)
                self.run = start("offline")
        except Exception as error:  # noqa: BLE001 - W&B must never stop training
            self._off(error)

    def _start(self, mode: str, logger_cfg: dict, run_config: dict, *, group, tags, name,
               run_id, job_type, identity):
        wandb = self.wandb
        settings = wandb.Settings(console=logger_cfg.get("console", "auto"),
                                  x_disable_stats=not logger_cfg.get("system_metrics", True),
                                  init_timeout=30)
        run = wandb.init(
            mode=mode, project=logger_cfg.get("project", "samplernn"),
            entity=logger_cfg.get("entity"), dir=str(self.run_dir), group=group,
            job_type=job_type, tags=list(tags) + list(logger_cfg.get("tags") or []),
            name=name, config={**run_config, **(identity or {})}, id=run_id,
            resume="allow" if run_id else None, settings=settings)
        run.define_metric("trainer/step")
        run.define_metric("*", step_metric="trainer/step")
        for key in ("train/nll_bits", "valid/nll_bits", "test/nll_bits"):
            run.define_metric(key, step_metric="trainer/step", summary="min")
        return run

    @property
    def run_id(self) -> str | None:
        return getattr(self.run, "id", None) if self.run is not None else None

    def sync_hint(self) -> str | None:
        """What to pass `wandb sync` for every segment of this run (a resumed run writes one
        offline-run-* folder per start, all with the same id), or None when W&B is not offline."""
        try:
            if self.run is None or self.run.settings.mode != "offline":
                return None
            return str(Path(self.run.dir).parent.parent / f"offline-run-*-{self.run.id}")
        except Exception:  # noqa: BLE001 - only a hint for the user
            return None

    def _off(self, error: Exception) -> None:
        self.note = f"W&B is off for this run ({_first_line(error)}); metrics.jsonl has it all"
        log.warning(self.note)
        self.run = None

    def _wandb(self, fn, *args, **kwargs):
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            self._off(error)

    def truncate_after(self, step: int) -> None:
        """Drop metric lines written after `step` (0: a fresh start drops them all)."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a kill mid-write
                continue
            if step > 0 and isinstance(record, dict) and record.get("step", math.inf) <= step:
                kept.append(line)
        tmp = self.metrics_path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.metrics_path)

    def log(self, metrics: dict, step: int) -> None:
        """One JSON line {"step", ...metrics} on disk, and the same keys to W&B."""
        record = {"step": int(step), **{k: (float(v) if isinstance(v, (int, float)) and
                                             not isinstance(v, bool) else v)
                                        for k, v in metrics.items()}}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self._wandb(lambda: self.run.log({**metrics, "trainer/step": step}))

    def log_media(self, step: int, samples: list[dict]) -> None:
        """samples: {"index", "wav" (float numpy [n]), "sample_rate", "caption",
        "waveform_png", "spectrogram_png" (PNG bytes), "temperature", "seed", "label" (a
        conditioned model's, else None)}: each as captioned
        audio and images, and all of them as one table row each (listen side by side)."""
        if self.run is None or not samples:
            return

        def send():
            import io

            from PIL import Image
            wandb = self.wandb
            payload = {"trainer/step": step}
            labelled = any(s.get("label") is not None for s in samples)  # a conditioned model
            table = wandb.Table(columns=["step", "sample", *(["label"] if labelled else []),
                                         "temperature", "seed", "audio", "spectrogram"])
            for s in samples:
                k, caption = s["index"], s["caption"]
                audio = wandb.Audio(s["wav"], sample_rate=s["sample_rate"], caption=caption)
                spectrogram = wandb.Image(Image.open(io.BytesIO(s["spectrogram_png"])), caption=caption)
                payload[f"samples/audio_{k}"] = audio
                payload[f"samples/spectrogram_{k}"] = spectrogram
                payload[f"samples/waveform_{k}"] = wandb.Image(
                    Image.open(io.BytesIO(s["waveform_png"])), caption=caption)
                table.add_data(step, k, *([s["label"]] if labelled else []), s["temperature"],
                               s["seed"], audio, spectrogram)
            payload["samples/table"] = table
            self.run.log(payload)
        self._wandb(send)

    def summary(self, values: dict) -> None:
        self._wandb(lambda: self.run.summary.update(values))

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as error:  # noqa: BLE001
                log.warning("W&B finish failed: %s", error)
        self.run = None


LISTENING_COLUMNS = {"ab": ["a", "b", "n", "a_wins", "b_wins", "ties", "pref_a", "ci_low",
                            "ci_high", "p_value"],
                     "mushra": ["condition", "n", "mean", "ci_low", "ci_high"]}


def log_listening(result: dict, chart_png: Path, out_dir: Path, mode: str = "offline",
                  project: str = "samplernn") -> str | None:
    """A listening test's results as one W&B run (job type `listen`) in the group of the runs
    that took part: the results table and the chart. -> `wandb sync`'s argument when offline
    (None when W&B is off)."""
    logger = RunLogger(out_dir, {"mode": mode, "project": project, "system_metrics": False,
                                 "console": "off"},
                       {"listening_test": result["test"], "listen_mode": result["mode"],
                        "raters": result["raters"], "answers": result["answers"]},
                       group=result.get("group"), tags=["listening"],
                       name=f"listen-{result['test']}", job_type="listen")
    if logger.run is None:
        return None
    columns = LISTENING_COLUMNS[result["mode"]]
    rows = result["pairs"] if result["mode"] == "ab" else result["mushra"]["conditions"]
    logger._wandb(lambda: logger.run.log({
        "listening/results": logger.wandb.Table(
            columns=columns, data=[[r[c] for c in columns] for r in rows]),
        "listening/chart": logger.wandb.Image(str(chart_png))}))
    hint = logger.sync_hint()
    logger.finish()
    return hint


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
