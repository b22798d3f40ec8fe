"""What a training run writes into its directory, and which process writes it.

The main process writes everything: train.log, config.yaml, summary.json, the metrics
(metrics.jsonl and W&B, through RunLogger), checkpoints, samples and the closing lines.
Every other process of a data-parallel run gets a `Silent` writer, which writes nothing
and keeps the console to warnings: `for_process` is the one place that decides. (What
every process must still do together, such as gathering the TBPTT state of every row for
a checkpoint, is the training run's.) rundir.py reads what this writes.
"""

import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .checkpoint import save_checkpoint
from .commands import command, tool
from .distributed import World
from .cli import CONFIG_DIR
from .logger import RunLogger
from .modelconfig import SampleRNNConfig
from .runconfig import FROM_THE_DATA, hydra_runtime
from .samples import write_samples

log = logging.getLogger(__name__)


def for_process(world: World, run_dir: Path) -> "RunWriter | Silent":
    """The main process's writer of run_dir, or a Silent one for any other process."""
    return RunWriter(run_dir) if world.main else Silent()


def identity(cfg: DictConfig, tiers: int, dataset_name: str, previous: dict) -> dict:
    """What the run is, for people and W&B: preset, group, name and tags. A resumed run
    keeps its own.

    preset: the model group's choice; preset_changes: the fields the command changed in it
    (`dim=128, n_rnn=1`), so that a changed preset does not pass for the preset: the name
    shows them (`three_tier(dim=128, n_rnn=1)-s1`), and adds the variant and a sweep's
    other swept keys (`tiny-optim.lr=0.0001-s1`), so the runs of a sweep have names of
    their own."""
    hc = hydra_runtime()
    choices = hc.runtime.choices if hc is not None else {}
    variant = choices.get("variant")
    if previous.get("preset"):
        preset, changes = previous["preset"], previous.get("preset_changes", "")
    else:
        preset = choices.get("model") or "custom"
        changes = _preset_changes(cfg, preset, variant, hc)
    group = cfg.get("group") or cfg.get("experiment_name")
    swept = []
    if hc is not None and str(hc.mode) == "RunMode.MULTIRUN":
        sweep = Path(hc.sweep.dir)
        group = f"{group or 'sweep'}-{sweep.parent.name}-{sweep.name}"
        keys = _swept_keys(hc) - {"seed", "model", "variant", "experiment"}
        swept = [o for o in hc.overrides.task
                 if o.split("=", 1)[0] in keys and not o.startswith("model.")]
    model = f"{preset}({changes})" if changes else preset
    name = "-".join([model] + ([variant] if variant else []) + swept + [f"s{cfg.seed}"])
    return {"preset": preset, "preset_changes": changes,
            "group": previous.get("group") or group or dataset_name,
            "name": previous.get("name") or name,
            "tags": [f"tiers={tiers}", f"preset={preset}", f"dataset={dataset_name}"]}


def _preset_changes(cfg: DictConfig, choice: str, variant: str | None, hc) -> str:
    """The fields this run's model changes in its preset (but those its variant sets)."""
    own = _group_file(hc, "model", choice)
    if own is None:
        return ""
    base = OmegaConf.merge(OmegaConf.structured(SampleRNNConfig), own)
    preset = OmegaConf.to_container(base, enum_to_str=True)
    model = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    by_variant = _group_file(hc, "variant", variant) if variant else None
    skip = set(by_variant.get("model", {})) if by_variant is not None else set()
    skip |= {k.split(".", 1)[1] for k in FROM_THE_DATA if k.startswith("model.")}  # n_labels
    return ", ".join(f"{k}={v}" for k, v in model.items() if k not in skip and preset.get(k) != v)


def _group_file(hc, group: str, option: str):
    """configs/<group>/<option>.yaml from the package or a --config-dir, or None."""
    folders = [Path(CONFIG_DIR)] + [Path(s.path) for s in (hc.runtime.config_sources if hc else [])
                                    if s.schema == "file"]
    for folder in folders:
        path = folder / group / f"{option}.yaml"
        if path.is_file():
            return OmegaConf.load(path)
    return None


def _swept_keys(hc) -> set[str]:
    """The keys a multirun sweeps: its experiment's sweeper params and the command line's
    sweep overrides (multirun.yaml in the sweep folder)."""
    keys = set(hc.sweeper.get("params") or {})
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        task = OmegaConf.load(Path(hc.sweep.dir) / "multirun.yaml").hydra.overrides.task
        keys |= {o.key_or_group for o in OverridesParser.create().parse_overrides(list(task))
                 if o.is_sweep_override()}
    except Exception:  # noqa: BLE001 - a name's detail: never a reason to fail
        pass
    return keys


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    """Written whole or not at all: a full disk leaves the previous file, and no .tmp."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def record_failure(run_dir: Path, why: str) -> None:
    """A job of a sweep that failed before it wrote its summary says so in one; its folder,
    which a run that never started drops, is made again to hold it."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, {"status": "failed", "error": why})


class RunWriter:
    """The run directory's one writer (its DirLock is held by the caller)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.logger = None

    def open(self, cfg, run_config: dict, who: dict, identity: dict, resumed: str | None,
             wandb_id: str | None) -> None:
        """train.log, config.yaml and the metrics' logger (resuming W&B run wandb_id);
        resumed: what the run resumed from, for the log."""
        self._log_to_file()
        OmegaConf.save(cfg, self.run_dir / "config.yaml", resolve=True)
        self._record_launch(cfg)
        if resumed is not None:
            log.info("resuming from %s", resumed)
        self.logger = RunLogger(self.run_dir, run_config["logger"], run_config, group=who["group"],
                                tags=who["tags"], name=who["name"], run_id=wandb_id,
                                identity=identity)

    def _record_launch(self, cfg) -> None:
        """.hydra/ (config.yaml, overrides.yaml, hydra.yaml): Hydra's record of how this
        launch was composed. Hydra would write it as the command starts (hydra.output_subdir
        is null for training); here it is written once the launch has passed every check
        and holds the run's lock, so a refused command leaves a run's record as it was."""
        hc = hydra_runtime()
        if hc is None:
            return
        folder = self.run_dir / ".hydra"
        folder.mkdir(exist_ok=True)
        OmegaConf.save(cfg, folder / "config.yaml")
        OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), folder / "overrides.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hc)}),
                       folder / "hydra.yaml")

    def _log_to_file(self) -> None:
        path = (self.run_dir / "train.log").resolve()
        root = logging.getLogger()
        if not any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
            handler = logging.FileHandler(path)
            handler.setFormatter(logging.Formatter(
                "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
            root.addHandler(handler)
        root.setLevel(logging.INFO)

    @property
    def run_id(self) -> str | None:
        return self.logger.run_id if self.logger is not None else None

    def summary(self, summary: dict) -> None:
        """summary.json, replaced atomically."""
        _write_json(self.run_dir / "summary.json", summary)

    def truncate_after(self, step: int) -> None:
        """Drop metric lines a killed run wrote after its last checkpoint."""
        self.logger.truncate_after(step)

    def log(self, metrics: dict, step: int) -> None:
        self.logger.log(metrics, step)

    def wandb_summary(self, values: dict) -> None:
        self.logger.summary(values)

    def checkpoint(self, name: str, model, **fields) -> None:
        """checkpoints/<name>, written atomically (checkpoint.save_checkpoint's fields)."""
        save_checkpoint(self.run_dir / "checkpoints" / name, model, **fields)

    def samples(self, model, step: int, **options) -> float | None:
        """Audio samples at this step (samples.write_samples); generation samples/s."""
        return write_samples(model, self.run_dir, step, self.logger, **options)

    def next_steps(self, final: dict) -> None:
        """The closing lines: where everything is, and the commands that come next."""
        run_dir, sync = self.run_dir, self.logger.sync_hint()
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
            lines.append(f"  sync to W&B    {tool('wandb')} sync {sync}   (every segment of the run)")
        if self.logger.note:
            lines.append(f"Note: {self.logger.note}")
        print("\n".join(lines), flush=True)

    def progress_bar(self, max_steps: int, step: int) -> tqdm:
        """The training bar on a terminal (none in a log file)."""
        return tqdm(total=max_steps, initial=step, desc="train", unit="step",
                    disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def finish(self, exit_code: int) -> None:
        if self.logger is not None:
            self.logger.finish(exit_code)


class Silent:
    """The writer of a process that is not the main one: every call does nothing (and
    returns None); its console shows warnings and errors only, with no log file."""
    run_id = None

    def __init__(self):
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
                handler.close()
        root.setLevel(logging.WARNING)

    def progress_bar(self, max_steps: int, step: int) -> tqdm:
        return tqdm(total=max_steps, initial=step, disable=True)

    def __getattr__(self, name):  # every other method of RunWriter
        return lambda *args, **kwargs: None
