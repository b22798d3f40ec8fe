"""The commands: one Hydra app per task, whichever way it is started.

    samplernn-train ...     python scripts/train.py ...     python -m samplernn.train ...

are the same app (likewise generate, evaluate, prepare, benchmark; compare is plain argparse).
Each calls its task module's `run(cfg)`; a user's mistake is one line and exit status 2.
The configs are the package's own copy in an installed samplernn (setup.py ships
configs/ as samplernn/configs), and the repository's configs/ in a checkout. Outputs go
under the folder the command runs in (runs/, outputs/, data/), never into the package.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from . import schema  # noqa: F401  (registers the config schemas)
from .errors import one_line_errors

_PACKAGED = Path(__file__).resolve().with_name("configs")
CONFIG_DIR = str(_PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "configs")


def _app(config_name: str, task: str, result=None):
    """A Hydra main for configs/<config_name>.yaml that runs samplernn.<task>.run(cfg);
    `result` maps what run returns to what Hydra gets back (a sweeper's objective)."""

    @hydra.main(config_path=CONFIG_DIR, config_name=config_name, version_base="1.3")
    def main(cfg: DictConfig):
        import importlib
        run = importlib.import_module(f"samplernn.{task}").run
        with one_line_errors():  # a user error is one line (exit 2), never a traceback
            value = run(cfg)
        return result(value) if result else None

    main.__name__ = config_name
    return main


# the run's test NLL (else its valid NLL): what a sweeper (e.g. Optuna) minimises
train = _app("train", "train", lambda final: final.get("test/nll_bits", final.get("valid/nll_bits")))
generate = _app("generate", "generation")
evaluate = _app("evaluate", "evaluate")
prepare = _app("prepare", "prepare")
benchmark = _app("benchmark", "benchmark")


def command(task: str) -> str:
    """How to run a task the way this process was started: samplernn-<task> when installed
    commands are in use, else python scripts/<task>.py (for the hints a run prints)."""
    if Path(sys.argv[0]).name.startswith("samplernn-"):
        return f"samplernn-{task}"
    return f"python {'datasets' if task == 'prepare' else 'scripts'}/{task}.py"


def compare():
    from .report import main
    main()
