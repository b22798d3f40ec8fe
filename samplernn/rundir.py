"""Reading run directories: the disk contract a report relies on (no W&B).

`collect_runs` finds and reads each run directory (config.yaml, summary.json,
metrics.jsonl, checkpoints/, samples/ with JSON sidecars, .hydra/hydra.yaml,
train.log) into `RunRecord`s, labelled uniquely; `config_differences` lists the
flattened config keys that differ between runs; `group_rows` aggregates the seeds
of one preset/config into `Row`s (mean, sample std, n). Anything unreadable
becomes a `problems` entry or a missing value, never an exception.
"""

import json
import math
import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError
from .lock import held

RUN_MARKERS = ("config.yaml", "metrics.jsonl", "summary.json")
SEARCH_DEPTH = 3  # levels below a given path searched for run directories
# Config keys that differ between seeds of one configuration; ignored when aggregating.
_RUN_SPECIFIC = re.compile(r"(^|\.)(seed|run_dir|out_dir|output_dir|run_name|run_id|wandb_id)$")
_RUN_SPECIFIC_PREFIXES = ("hydra.", "logger.")
MISSING = "—"


class ReportError(UserError):
    """A bad path or an empty selection; the message says what to do."""


@dataclass
class Sample:
    path: Path
    step: int
    index: int
    meta: dict  # the sidecar JSON; {} when it is missing


@dataclass
class RunRecord:
    """Everything the report knows about one run directory."""

    path: Path
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)  # sorted by (step, index)
    checkpoints: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    hydra_choices: dict = field(default_factory=dict)  # .hydra/hydra.yaml runtime.choices, if any
    log_has_traceback: bool = False
    label: str = ""  # unique within a report, e.g. "three_tier seed=2"
    where: str = ""  # the path relative to common_root(records)

    def series(self, key: str) -> tuple[list[int], list[float], list[float]]:
        """(steps, times_s, values) of every finite `key` in metrics.jsonl."""
        rows = [m for m in self.metrics if _num(m.get(key)) is not None]
        return ([_int(m.get("step")) or 0 for m in rows], [_num(m.get("time_s")) or 0.0 for m in rows],
                [float(m[key]) for m in rows])

    def _summary_or(self, key: str, fallback):
        value = _num(self.summary.get(key))
        return value if value is not None else fallback

    @property
    def group(self) -> str:
        dataset = self.config.get("dataset") if isinstance(self.config.get("dataset"), dict) else {}
        return str(self.config.get("group") or self.config.get("experiment_name")
                   or dataset.get("name") or "ungrouped")

    @property
    def tiers(self) -> int | None:
        frame_sizes = (self.config.get("model") or {}).get("frame_sizes")
        return _int(self.summary.get("tiers")) or (len(frame_sizes) + 1 if frame_sizes else None)

    @property
    def preset(self) -> str:
        """The model preset, with the fields the run changed in it: three_tier(dim=128)."""
        preset = self.summary.get("preset") or self.hydra_choices.get("model")
        preset = str(preset or (f"{self.tiers}_tier" if self.tiers else MISSING))
        changes = self.summary.get("preset_changes")
        return f"{preset}({changes})" if changes else preset

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def status(self) -> str:
        status = self.summary.get("status")
        if status == "running" and held(self.path) is False:  # nobody trains there any more
            return "died (no process holds the run; summary.json says running)"
        if status:
            return str(status)
        if self.log_has_traceback:
            return "failed (no summary.json; traceback in train.log)"
        return "incomplete (no summary.json)"

    @property
    def n_parameters(self) -> int | None:
        return _int(self.summary.get("n_parameters"))

    @property
    def step(self) -> int | None:
        steps = [s for s in (_int(m.get("step")) for m in self.metrics) if s is not None]
        return _int(self.summary.get("step")) or (max(steps) if steps else None)

    @property
    def wall_time_s(self) -> float | None:
        times = [t for t in (_num(m.get("time_s")) for m in self.metrics) if t is not None]
        return self._summary_or("wall_time_s", max(times) if times else None)

    @property
    def test_nll_bits(self) -> float | None:
        values = self.series("test/nll_bits")[2]
        return self._summary_or("test_nll_bits", values[-1] if values else None)

    @property
    def best_valid_nll_bits(self) -> float | None:
        values = self.series("valid/nll_bits")[2]
        return self._summary_or("best_valid_nll_bits", min(values) if values else None)

    @property
    def train_samples_per_s(self) -> float | None:
        return self._summary_or("train_samples_per_s", _mean(self.series("perf/samples_per_s")[2]))

    @property
    def gen_samples_per_s(self) -> float | None:
        logged = self.series("perf/gen_samples_per_s")[2]
        sidecars = [v for v in (_num(s.meta.get("gen_samples_per_s")) for s in self.samples) if v]
        return self._summary_or("gen_samples_per_s", _mean(logged) or _mean(sidecars))


def _num(value) -> float | None:
    """A finite float, or None for anything else (missing, text, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value) -> int | None:
    number = _num(value)
    return int(number) if number is not None else None


def _mean(values) -> float | None:
    return statistics.fmean(values) if values else None


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_run_dirs(path) -> list[Path]:
    """Run directories at `path` or up to SEARCH_DEPTH levels below it (e.g. a multirun dir)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory; give run directories or a Hydra multirun "
                          "directory (multirun/<date>/<time>)")
    if any((path / marker).is_file() for marker in RUN_MARKERS):
        return [path]
    found, frontier = [], [path]
    for _ in range(SEARCH_DEPTH):
        children = [c for d in frontier for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
        found += [c for c in children if any((c / m).is_file() for m in RUN_MARKERS)]
        frontier = [c for c in children if c not in found]
    return sorted(found, key=_natural_key)


def read_run(path) -> RunRecord:
    """Read one run directory; unreadable pieces become `problems`, never exceptions."""
    record = RunRecord(path=Path(path))
    path = record.path
    for name, attr in (("config.yaml", "config"), ("summary.json", "summary")):
        file = path / name
        if not file.is_file():
            record.problems.append(f"no {name}")
            continue
        try:
            text = file.read_text()
            loaded = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
        except (OSError, ValueError, yaml.YAMLError) as err:
            record.problems.append(f"{name} is unreadable ({type(err).__name__}: {err})")
            continue
        if isinstance(loaded, dict):
            setattr(record, attr, loaded)
        else:
            record.problems.append(f"{name} does not hold a mapping")
    metrics_file = path / "metrics.jsonl"
    if metrics_file.is_file():
        bad = 0
        for line in metrics_file.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                row = None
                bad += 1
            if isinstance(row, dict):
                record.metrics.append(row)
        if bad:
            record.problems.append(f"metrics.jsonl: {bad} line(s) are not JSON (skipped)")
    else:
        record.problems.append("no metrics.jsonl")
    record.checkpoints = sorted(p.name for p in (path / "checkpoints").glob("*.pt"))
    for wav in (path / "samples").glob("step_*/sample_*.wav"):
        step, index = re.fullmatch(r"step_(\d+)", wav.parent.name), re.fullmatch(r"sample_(\d+)", wav.stem)
        if not (step and index):
            continue
        sidecar, meta = wav.with_suffix(".json"), {}
        try:
            meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        except (OSError, ValueError):
            record.problems.append(f"{sidecar.relative_to(path)} is not JSON")
        record.samples.append(Sample(wav, int(step.group(1)), int(index.group(1)), meta))
    record.samples.sort(key=lambda s: (s.step, s.index))
    try:  # Hydra's own record of the run: which config-group options (presets) were chosen
        hydra_yaml = yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text())
        record.hydra_choices = dict(hydra_yaml["hydra"]["runtime"]["choices"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        pass
    log = path / "train.log"
    record.log_has_traceback = (log.is_file()
                                and "Traceback (most recent call last)" in log.read_text(errors="replace"))
    return record


def collect_runs(paths) -> list[RunRecord]:
    """Every run directory under `paths` (run dirs and/or multirun dirs), labelled uniquely."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    dirs = []
    for path in paths:
        found = find_run_dirs(path)
        if not found:
            raise ReportError(f"{path} holds no run directory (none of {', '.join(RUN_MARKERS)} "
                              f"within {SEARCH_DEPTH} levels); is the path right?")
        dirs += [d for d in found if d.resolve() not in {x.resolve() for x in dirs}]
    records = [read_run(d) for d in dirs]
    records.sort(key=lambda r: (r.group, r.tiers or 0, r.preset, _natural_key(str(r.seed)),
                                _natural_key(r.path)))
    labels = Counter()
    for r in records:
        r.label = f"{r.preset} seed={r.seed}" if r.seed is not None else f"{r.preset} {r.path.name}"
        labels[r.label] += 1
    root = common_root(records)
    for r in records:
        if labels[r.label] > 1:
            r.label += f" ({r.path.parent.name}/{r.path.name})"
        r.where = str(r.path.resolve().relative_to(root))
    return records


def common_root(records: list[RunRecord]) -> Path:
    """The deepest folder holding every run directory."""
    return Path(os.path.commonpath([r.path.resolve().parent for r in records])) if records else Path(".")


def flatten(config: dict, prefix: str = "") -> dict:
    """{"model": {"dim": 8}} -> {"model.dim": 8}; lists stay values."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        flat.update(flatten(value, name + ".") if isinstance(value, dict) and value else {name: value})
    return flat


def config_differences(records: list[RunRecord]) -> dict[str, list]:
    """Flattened config keys whose values are not all equal across `records` (missing counts),
    mapped to one value per record (MISSING where absent). Keys under hydra.* are left out."""
    flats = [flatten(r.config) for r in records]
    keys = sorted({k for f in flats for k in f if not k.startswith("hydra.")})
    diffs = {k: [f.get(k, MISSING) for f in flats] for k in keys}
    return {k: v for k, v in diffs.items() if len({json.dumps(x, sort_keys=True, default=str) for x in v}) > 1}


@dataclass
class Row:
    """Runs of one group that share preset and config up to the seed."""

    preset: str
    tiers: int | None
    variant: str
    runs: list[RunRecord]

    def stat(self, attr: str) -> tuple[float | None, float | None, int]:
        """(mean, sample std or None when n < 2, n) of a RunRecord attribute over the runs that have it."""
        values = [v for v in (getattr(r, attr) for r in self.runs) if v is not None]
        if not values:
            return None, None, 0
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def _config_key(record: RunRecord) -> str:
    flat = {k: v for k, v in flatten(record.config).items()
            if not _RUN_SPECIFIC.search(k) and not k.startswith(_RUN_SPECIFIC_PREFIXES)}
    return json.dumps(flat, sort_keys=True, default=str)


def group_rows(records: list[RunRecord]) -> dict[str, list[Row]]:
    """{group: rows}; a row aggregates the seeds of one preset/config."""
    groups: dict[str, dict[tuple, list[RunRecord]]] = {}
    for r in records:
        groups.setdefault(r.group, {}).setdefault((r.preset, r.tiers, _config_key(r)), []).append(r)
    result = {}
    for group, buckets in sorted(groups.items()):
        rows = []
        for (preset, tiers, _), runs in buckets.items():
            twins = [rs[0] for (p, _, _), rs in buckets.items() if p == preset]
            diffs = config_differences(twins) if len(twins) > 1 else {}
            index = twins.index(runs[0])
            variant = ", ".join(f"{k}={v[index]}" for k, v in diffs.items() if not _RUN_SPECIFIC.search(k))
            rows.append(Row(preset, tiers, variant, runs))
        result[group] = sorted(rows, key=lambda row: (row.tiers or 0, row.preset, row.variant))
    return result
