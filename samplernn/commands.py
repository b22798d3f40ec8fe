"""How a person runs each command, the way this process was started: what hints and closing
lines print, so that a printed command runs as printed in a new shell (where a project's
.venv is not activated).

    command("generate")  ->  samplernn-generate                (installed, on PATH)
                             .venv/bin/python scripts/generate.py   (a checkout's own .venv)
"""

import shutil
import sys
from pathlib import Path

SCRIPTS = {"prepare": "datasets/prepare.py"}  # the others: scripts/<task>.py


def command(task: str) -> str:
    """samplernn-<task> where the installed commands are in use, else this Python running
    the checkout's script; each named so that a new shell finds it (`executable`)."""
    started = Path(sys.argv[0])
    if started.name.startswith("samplernn-"):
        return executable(f"samplernn-{task}", started.with_name(f"samplernn-{task}"))
    return f"{executable('python', Path(sys.executable))} {SCRIPTS.get(task, f'scripts/{task}.py')}"


def tool(name: str) -> str:
    """A program installed beside this Python (e.g. wandb), named as `executable` does."""
    return executable(name, Path(sys.executable).with_name(name))


def executable(name: str, path: Path) -> str:
    """`path` relative to the current folder when it is inside it (.venv/bin/python: a new
    shell there runs it as printed); else `name` when PATH finds this very file; else the
    whole path."""
    if not path.exists():
        return name
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        pass
    found = shutil.which(name)
    if found and Path(found).resolve() == path.resolve():
        return name
    return str(path)
