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
                 tags: list[str], name: str | None = None, run_id: str | None = None):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.wandb = None
        self.run = None
        mode = logger_cfg.get("mode", "offline")
        try:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb
            self.wandb = wandb
            self.run = wandb.init(
                mode=mode, project=logger_cfg.get("project", "samplernn"),
                entity=logger_cfg.get("entity"), dir=str(self.run_dir), group=group,
                tags=list(tags) + list(logger_cfg.get("tags") or []), name=name,
                config=run_config, id=run_id, resume="allow" if run_id else None,
                settings=wandb.Settings(console="off", x_disable_stats=True))
            self.run.define_metric("*", step_metric="trainer/step")
        except Exception as error:  # noqa: BLE001 - W&B must never stop training
            self._off(error)

    @property
    def run_id(self) -> str | None:
        return getattr(self.run, "id", None) if self.run is not None else None

    def run_dir_wandb(self) -> Path | None:
        """The offline run's folder (for `wandb sync`), or None when W&B is off or online."""
        try:
            if self.run is None or self.run.settings.mode != "offline":
                return None
            return Path(self.run.dir).parent
        except Exception:  # noqa: BLE001 - only a hint for the user
            return None

    def _off(self, error: Exception) -> None:
        log.warning("W&B is switched off for this run: %s", error)
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

    def log_media(self, step: int, audio: list[tuple[str, "object", int]],
                  images: list[tuple[str, bytes]]) -> None:
        """audio: (key, wav float numpy [n], sample_rate); images: (key, PNG bytes)."""
        if self.run is None:
            return

        def send():
            import io

            from PIL import Image
            payload = {"trainer/step": step}
            for key, wav, rate in audio:
                payload[key] = self.wandb.Audio(wav, sample_rate=rate)
            for key, png in images:
                payload[key] = self.wandb.Image(Image.open(io.BytesIO(png)))
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
