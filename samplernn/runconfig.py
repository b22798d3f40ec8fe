"""A training run's config: checked before anything is written, and kept when it resumes.

`check_config` checks every value a run needs, with one line naming the key at fault.

A run directory is the run: resuming it (what the same command does by default, and what a
requeued cluster job does) restores the config stored in its checkpoint. Only the keys in
`MUTABLE_ON_RESUME` may change then (how long to train, how often and how to evaluate, where
to run, where the same data now lives); asking to change another key is refused, naming it,
before anything is written. Keys the command line does not name keep the run's values, so
`resume` needs none of the original overrides. `resume_path` says what a run resumes from.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import AlreadyExists, ConfigError, NotFound, check_int, check_number
from .modelconfig import SampleRNNConfig

MUTABLE_ON_RESUME = ("train.max_steps", "train.max_minutes", "train.log_every",
                     "train.max_nonfinite_steps", "eval.every", "eval.batch_size", "eval.seq_len",
                     "eval.test", "eval.n_samples", "eval.sample_seconds", "eval.temperature",
                     "device", "threads", "precision", "compile", "resume", "logger", "group",
                     "dataset.path", "dataset.num_workers")
# What the run sets from its data (the manifest's name, whether it is the built-in data, how
# many labels it has), whatever the command said: never a change.
FROM_THE_DATA = ("dataset.name", "dataset.builtin", "model.n_labels", "model.n_features",
                 "model.feature_hop")
# Config groups whose files may set any key (package _global_): naming one names everything.
_GLOBAL_GROUPS = ("experiment", "debug", "variant")
_ABSENT = object()


def check_config(cfg: DictConfig) -> SampleRNNConfig:
    """Every value a training run reads, checked up front (the choices are the schema's, at
    composition); returns the model config."""
    t, e, o = cfg.train, cfg.eval, cfg.optim
    check_int("seed", cfg.seed, minimum=0)
    check_int("threads", cfg.get("threads"), minimum=1, optional=True)
    for key, minimum in (("max_steps", 0), ("batch_size", 1), ("seq_len", 1), ("log_every", 1),
                         ("max_nonfinite_steps", 1)):
        check_int(f"train.{key}", t[key], minimum=minimum)
    check_number("train.max_minutes", t.max_minutes, above=0, optional=True)
    for key, minimum in (("every", 1), ("batch_size", 1), ("seq_len", 1), ("n_samples", 0)):
        check_int(f"eval.{key}", e[key], minimum=minimum)
    check_number("eval.sample_seconds", e.sample_seconds, minimum=0)
    check_number("eval.temperature", e.temperature, minimum=0)
    check_number("optim.lr", o.lr, above=0)
    check_number("optim.weight_decay", o.weight_decay, minimum=0)
    check_number("optim.clip_value", o.clip_value, above=0)
    check_int("optim.warmup_steps", o.warmup_steps, minimum=0)
    if len(o.betas) != 2:
        raise ConfigError(f"optim.betas={list(o.betas)} must be two numbers in [0, 1)")
    for beta in o.betas:
        check_number("optim.betas", beta, minimum=0)
        if beta >= 1:
            raise ConfigError(f"optim.betas={list(o.betas)} must be two numbers in [0, 1)")
    check_number("dataset.segment_seconds", cfg.dataset.segment_seconds, above=0)
    check_int("dataset.num_workers", cfg.dataset.num_workers, minimum=0)
    model = SampleRNNConfig(**cfg.model)
    if t.seq_len % model.frame_sizes[-1]:
        raise ConfigError(f"train.seq_len={t.seq_len} must be a multiple of the top frame size "
                          f"{model.frame_sizes[-1]} (model.frame_sizes={model.frame_sizes})")
    return model


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _under(key: str, names) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def asked_keys() -> dict[str, str] | None:
    """The config keys the command line asks for, each with the override that asks (Hydra's
    task overrides), or None when not launched by Hydra (the API: the whole config passed in
    counts as asked). A config group that sets any key (experiment=, debug=, variant=) asks
    for the keys it sets: those whose values it changes."""
    hc = hydra_runtime()
    if hc is None:
        return None
    overrides = list(hc.overrides.task)
    asked = {}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in _GLOBAL_GROUPS:
            for k in _keys_set_by(override, overrides, hc.job.config_name):
                asked.setdefault(k, override)
        else:
            asked[key] = override
    return asked


def _keys_set_by(override: str, overrides: list[str], config_name: str) -> list[str]:
    """The keys whose values the group choice `override` (e.g. debug=tiny) changes: the
    config composed with every override against the one composed without this one."""
    from hydra import compose

    def flat(ovr):
        return flatten(OmegaConf.to_container(compose(config_name, overrides=ovr), enum_to_str=True))
    with_it, without = flat(overrides), flat([o for o in overrides if o != override])
    return [k for k in sorted(set(with_it) | set(without))
            if with_it.get(k, _ABSENT) != without.get(k, _ABSENT)]


def resumed_config(cfg: DictConfig, stored: dict, source: Path,
                   asked: dict[str, str] | None) -> DictConfig:
    """The run's stored config with the changes asked for applied, or ConfigError naming the
    first asked change that a resumed run cannot take, and the override that asked for it.
    Keys the stored config lacks (added to this code since the run started) take the new
    config's values."""
    new, old = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)), flatten(stored)
    changed = [k for k in sorted(old) if new.get(k, _ABSENT) is not _ABSENT
               and new[k] != old[k] and (asked is None or _under(k, asked))
               and not _under(k, FROM_THE_DATA)]
    refused = [k for k in changed if not _under(k, MUTABLE_ON_RESUME)]
    if refused:
        k = refused[0]
        origin = _asked_by(k, asked)
        raise ConfigError(
            f"{k}={new[k]}{f' (set by {origin})' if origin else ''} cannot change when resuming "
            f"the run in {source.parent.parent} (it has {k}={old[k]}); a resumed run keeps its "
            f"config except {', '.join(MUTABLE_ON_RESUME)}: start a new run (another "
            "hydra.run.dir) to change the rest")
    merged = OmegaConf.create(stored)
    for k in changed + [k for k in new if k not in old]:
        OmegaConf.update(merged, k, new[k], force_add=True)
    return merged


def _asked_by(key: str, asked: dict[str, str] | None) -> str | None:
    """The override that asked for key when it is not key=... itself (a config group)."""
    for name, override in (asked or {}).items():
        if _under(key, [name]) and not override.lstrip("+~").startswith(f"{key}="):
            return override
    return None


def hydra_runtime():
    """Hydra's runtime config when launched by Hydra, else None (the API)."""
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.get() if HydraConfig.initialized() else None


def resume_path(cfg: DictConfig, run_dir: Path) -> Path | None:
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
