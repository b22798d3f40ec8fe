"""Which code made a result: recorded in every summary.json and checkpoint."""

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"


@functools.cache
def code_version() -> dict:
    """{"samplernn": version, "git_commit": the checkout's commit (with "+dirty" when it has
    uncommitted changes; None for an installed package), "torch": torch's version}."""
    import torch
    return {"samplernn": __version__, "git_commit": _git_commit(), "torch": str(torch.__version__)}


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "samplernn", "configs")
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
