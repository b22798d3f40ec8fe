"""How a person runs each command, the way this process was started: what hints and closing
lines print, so that a printed command runs as printed in a new shell (where a project's
.venv is not activated).

    command("generate")  ->  samplernn-generate                (installed, on PATH)
                             .venv/bin/python scripts/generate.py   (a checkout's own .venv)
"""

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # a checkout's root (site-packages when installed)
SCRIPTS = {"prepare": "datasets/prepare.py"}  # the others: scripts/<task>.py


def command(task: str) -> str:
    """samplernn-<task> where the installed commands are in use, else this Python running
    the checkout's script; each named so that a new shell finds it (`executable`)."""
    started = Path(sys.argv[0])
    if started.name.startswith("samplernn-") or not (ROOT / "scripts" / "train.py").is_file():
        return executable(f"samplernn-{task}", started.with_name(f"samplernn-{task}"))
    script = ROOT / SCRIPTS.get(task, f"scripts/{task}.py")
    return f"{executable('python', Path(sys.executable))} {_here(script)}"


def tool(name: str) -> str:
    """A program installed beside this Python (e.g. wandb), named as `executable` does."""
    return executable(name, Path(sys.executable).with_name(name))


def executable(name: str, path: Path) -> str:
    """`path` relative to the current folder when it is inside it (.venv/bin/python: a new
    shell there runs it as printed); else `name` when PATH finds this very file; else the
    whole path."""
    if not path.exists():
        return name
    if _here(path) != str(path):
        return _here(path)
    found = shutil.which(name)
    if found and Path(found).resolve() == path.resolve():
        return name
    return str(path)


def _here(path: Path) -> str:
    """path relative to the current folder when it is inside it, else the whole path."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
