"""The commands: one Hydra app per task, whichever way it is started.

    samplernn-train ...     python scripts/train.py ...     python -m samplernn.train ...

are the same app (likewise generate, evaluate, prepare, benchmark; compare is plain argparse).
Each calls its task module's `run(cfg)`; a user's mistake is one line and exit status 2.
The configs are the package's own copy in an installed samplernn (setup.py ships
configs/ as samplernn/configs), and the repository's configs/ in a checkout. Outputs go
under the folder the command runs in (runs/, outputs/, data/), never into the package.
"""

import contextlib
import os
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from . import schema  # noqa: F401  (registers the config schemas)
from .choices import Split, words
from .errors import EXIT_USER_ERROR, ConfigError, one_line_errors, user_message

_PACKAGED = Path(__file__).resolve().with_name("configs")
CONFIG_DIR = str(_PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "configs")


def _app(config_name: str, task: str, result=None):
    """A Hydra main for configs/<config_name>.yaml that runs samplernn.<task>.run(cfg);
    `result` maps what run returns to what Hydra gets back (a sweeper's objective).

    In a sweep whose jobs run in this process (-m with Hydra's basic launcher), a job that
    fails is recorded (its line now, the run directory's summary.json says failed, and a line
    per failed job when the sweep ends) and the other jobs run; the command then exits 1.
    A signal still stops the whole sweep."""
    jobs, failed = [], []  # every job's overrides; (job index, why) of the failed ones

    @hydra.main(config_path=CONFIG_DIR, config_name=config_name, version_base="1.3")
    def main(cfg: DictConfig):
        import importlib
        run = importlib.import_module(f"samplernn.{task}").run
        if not _jobs_run_here():
            with one_line_errors():  # a user error is one line (exit 2), never a traceback
                value = _missing_is_a_user_error(run, cfg)
            return result(value) if result else None
        from hydra.core.hydra_config import HydraConfig
        jobs.append(list(HydraConfig.get().overrides.task))
        try:
            value = run(cfg)
        except Exception as error:  # noqa: BLE001 - recorded, and the sweep goes on
            failed.append((len(jobs) - 1, _failed_job(task, error)))
            return None
        return result(value) if result else None

    def command():
        jobs.clear()
        failed.clear()
        with one_line_errors():
            _check_output_dirs(sys.argv[1:])
            _check_launcher(sys.argv[1:])
        try:
            with _composition_errors_in_one_line():
                main()
        except KeyboardInterrupt as stop:  # Ctrl-C where a command does not stop on its own
            if not getattr(stop, "said", False):
                print("stopped by Ctrl-C", file=sys.stderr, flush=True)
            raise SystemExit(128 + signal.SIGINT) from None
        if failed:
            print(f"error: {len(failed)} of {len(jobs)} jobs of the sweep failed:\n" + "\n".join(
                f"  {_swept(jobs, i)}: {why}" for i, why in failed), file=sys.stderr, flush=True)
            raise SystemExit(1)

    main.__name__ = command.__name__ = config_name
    return command


@contextlib.contextmanager
def _composition_errors_in_one_line():
    """An override Hydra cannot parse or apply (a typo in a key, a value of the wrong type or
    not among the choices, a config group option that does not exist) is one line and exit 2,
    like every other mistake; Hydra itself prints several and exits 1. A user who sets
    HYDRA_FULL_ERROR=1 gets Hydra's own report."""
    from hydra.errors import CompactHydraException
    if os.environ.get("HYDRA_FULL_ERROR"):
        yield
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises what it would print, and we say it
    try:
        yield
    except CompactHydraException as error:
        print(f"error: {_composition_message(error)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
    finally:
        del os.environ["HYDRA_FULL_ERROR"]


def _composition_message(error: Exception) -> str:
    """Hydra's message and OmegaConf's under it as one line, e.g. `split=dev: Invalid value
    'dev', expected one of [train, valid, test]`; OmegaConf's detail (full_key, object_type)
    and Hydra's search path are left out, a list of options is said on the line."""
    lines = []
    for line in str(error).split("\nConfig search path:")[0].splitlines():
        if line.startswith("\t") and lines:  # an option in Hydra's list of them
            lines[-1] += (" " if lines[-1].endswith(":") else ", ") + line.strip()
        elif line.strip():
            lines.append(line.strip())
    cause = str(error.__cause__ or "").splitlines()
    first = lines[0].removeprefix("Error merging override ").rstrip(".")
    said = ": ".join([first] + [line for line in cause if line.strip() and not line[0].isspace()])
    return "; ".join([said] + lines[1:])


def _swept(jobs: list[list[str]], i: int) -> str:
    """Job i by the overrides that differ between the jobs (e.g. seed=-1)."""
    values = {}
    for overrides in jobs:
        for o in overrides:
            values.setdefault(o.split("=", 1)[0], set()).add(o)
    swept = [o for o in jobs[i] if len(values[o.split("=", 1)[0]]) > 1]
    return " ".join(swept) or f"job {i}"


def _missing_is_a_user_error(run, cfg):
    """run(cfg); a required key left out (`???` in the config) is one line naming it."""
    from omegaconf.errors import MissingMandatoryValue
    try:
        return run(cfg)
    except MissingMandatoryValue as error:
        key = error.full_key or "a required key"
        raise ConfigError(f"{key} is required: give {key}=<...> (see --help)") from None


def _check_launcher(args: list[str]) -> None:
    """A SLURM launcher asked for without its extra, or off a SLURM cluster: one line."""
    import importlib.util
    import shutil
    launcher = next((a.split("=", 1)[1] for a in args if a.startswith("hydra/launcher=")), None)
    if launcher is None or "submitit" not in launcher and launcher != "slurm":
        return
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        raise ConfigError(f"hydra/launcher={launcher} needs hydra-submitit-launcher: pip "
                          "install 'samplernn[slurm]' (or make install in a checkout)")
    if launcher == "slurm" and shutil.which("srun") is None:
        raise ConfigError("hydra/launcher=slurm submits jobs to SLURM, and this machine has no "
                          "srun: run it on the cluster's login node, or try the sweep here with "
                          "hydra/launcher=submitit_local")


def _check_output_dirs(args: list[str]) -> None:
    """hydra.run.dir= or hydra.sweep.dir= naming a file: one line, before Hydra tries to make
    a folder there."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and value \
                and Path(value).exists() and not Path(value).is_dir():
            raise ConfigError(f"{key}={value} is a file; give a folder for the run")


def _jobs_run_here() -> bool:
    """A multirun sweep whose launcher runs the jobs one after another in this process."""
    from hydra.core.hydra_config import HydraConfig
    hc = HydraConfig.get()
    return str(hc.mode) == "RunMode.MULTIRUN" and \
        str(hc.launcher.get("_target_", "")).endswith("BasicLauncher")


def _failed_job(task: str, error: Exception) -> str:
    """Why a job failed: its line printed now (a traceback for our own bugs), and for a
    training run a summary.json saying it failed, where the run wrote none."""
    import traceback

    from hydra.core.hydra_config import HydraConfig
    hc = HydraConfig.get()
    why = user_message(error)
    if why is None:
        traceback.print_exception(error)
        why = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    print(f"error: job {hc.job.num} ({hc.runtime.output_dir}): {why}", file=sys.stderr,
          flush=True)
    if task == "train":
        from .runwriter import record_failure
        record_failure(Path(hc.runtime.output_dir), why)
    return why


# the run's test NLL (else its valid NLL): what a sweeper (e.g. Optuna) minimises
train = _app("train", "train", lambda final: final.get("test/nll_bits", final.get("valid/nll_bits")))
generate = _app("generate", "generation")
evaluate = _app("evaluate", "evaluate")
prepare = _app("prepare", "prepare")
benchmark = _app("benchmark", "benchmark")


_listen = _app("listen", "listen")
_LISTEN_ACTIONS = ("build", "serve", "results")
_HYDRA_VALUED = ("--cfg", "-c", "--package", "-p", "--info", "-i", "--config-path", "-cp",
                 "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun")


def listen_args(args: list[str]) -> list[str]:
    """samplernn-listen's words as Hydra overrides: the first word (build, serve, results)
    is action=, a bare path is test=, --json is json=true; the rest is left to Hydra."""
    out = []
    for i, arg in enumerate(args):
        after_flag = i > 0 and args[i - 1] in _HYDRA_VALUED
        if i == 0 and arg in _LISTEN_ACTIONS:
            out.append(f"action={arg}")
        elif arg == "--json":
            out.append("json=true")
        elif not after_flag and "=" not in arg and not arg.startswith("-"):
            out.append(f"test={arg}")
        else:
            out.append(arg)
    return out


def listen():
    """samplernn-listen build|serve|results [<test dir>] [--json] [key=value ...]"""
    first = sys.argv[1] if len(sys.argv) > 1 else ""
    if first not in _LISTEN_ACTIONS and not first.startswith("-") and not any(
            a.startswith("action=") for a in sys.argv[1:]):
        said = f"{first!r} is not something it does" if first and "=" not in first else \
            "say what to do"
        print(f"error: {said}: samplernn-listen build|serve|results ... (see --help)",
              file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)
    sys.argv[1:] = listen_args(sys.argv[1:])
    _listen()


def compare():
    from .report import main
    main()


def label_check(argv=None):
    """samplernn-label-check / scripts/label_check.py (argparse; torch only once it runs)."""
    import argparse
    import math
    parser = argparse.ArgumentParser(
        prog="label_check", description="Does a conditioned model know its labels? Each file "
        "of a split scored under every label (the most likely one is the model's guess), and "
        "a classifier of the real audio (log-mel statistics, logistic regression) asked which "
        "label generated samples sound like. Writes a JSON report and the samples.")
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="test", choices=words(Split))
    parser.add_argument("--per-label", type=int, default=10, help="generated samples per label")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each sample")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the "
                        "scoring (1, as evaluate's: fastest on small CPUs, and a core shared "
                        "with a training run does not stall it)")
    parser.add_argument("--out", default=None, help="the report (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    with one_line_errors():
        if args.per_label < 1 or not (math.isfinite(args.seconds) and args.seconds > 0):
            raise ConfigError(f"--per-label={args.per_label} --seconds={args.seconds}: give at "
                              "least 1 sample per label, of more than 0 seconds")
        if not Path(args.checkpoint).is_file():  # before torch's import; positional, so
            raise ConfigError(f"{args.checkpoint}: no such checkpoint; give "  # not key=
                              "<run dir>/checkpoints/best.pt")
        from .label_check import check, report_lines
        report = check(args.checkpoint, args.split, args.per_label, args.seconds, args.seed,
                       args.device, args.out, args.threads)
    print(report_lines(report))
    print(f"written to {report['out']} (samples in {Path(report['out']).with_suffix('')})")


def copy_synthesis(argv=None):
    """samplernn-copy-synthesis / scripts/copy_synthesis.py (argparse; torch once it runs)."""
    import argparse
    parser = argparse.ArgumentParser(
        prog="copy_synthesis", description="How close does a vocoder (a model trained with "
        "features) bring the files of a split back from their features? The log-mel distance "
        "of its resynthesis to each original, beside an unconditioned baseline's sample of "
        "the same length and the original re-quantized (the floor). Writes a JSON report, "
        "the WAVs and one file's spectrograms.")
    parser.add_argument("checkpoint")
    parser.add_argument("--baseline", default=None,
                        help="an unconditioned model's checkpoint, trained on the same data")
    parser.add_argument("--split", default="test", choices=words(Split))
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="resynthesise at most this much of each file (default: all)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="the report (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    with one_line_errors():
        for name in ("checkpoint", "baseline"):
            path = getattr(args, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{path}: no such checkpoint; give "
                                  "<run dir>/checkpoints/best.pt")
        if args.max_seconds is not None and not args.max_seconds > 0:
            raise ConfigError(f"--max-seconds={args.max_seconds}: give more than 0")
        if not args.temperature >= 0:
            raise ConfigError(f"--temperature={args.temperature}: give a number >= 0")
        from .copy_synthesis import report_lines, run
        report = run(args.checkpoint, args.baseline, args.split, args.max_seconds,
                     args.temperature, args.seed, args.threads, args.out)
    print(report_lines(report))
    print(f"written to {report['out']} (WAVs and spectrograms in "
          f"{Path(report['out']).with_suffix('')})")
