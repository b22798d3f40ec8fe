"""One writer per directory: an exclusive lock held for as long as a process writes there.

    with DirLock(run_dir, "training"):
        ...

The lock is a POSIX record lock (`lockf`) on a small file (`.lock` inside the directory, or
`.<name>.lock` beside it for a folder that is replaced whole): the operating system releases
it when the process ends, even by kill -9, so a stale lock never blocks the next run, and
forked children (data-loading workers) do not inherit it. The holder removes the file when it
is done (one left by a killed process is stale and harmless). A second process asking for a
held lock fails at once with AlreadyExists, naming the holder's pid.
"""

import fcntl
import os
from pathlib import Path

from .errors import AlreadyExists


class DirLock:
    """Exclusive lock on `path` (a directory, created if missing). beside=True keeps the lock
    file next to the directory, for one that is built elsewhere and renamed into place."""

    def __init__(self, path, what: str, beside: bool = False):
        self.path = Path(path)
        self.what = what
        self.file = (self.path.parent / f".{self.path.name}.lock") if beside else self.path / ".lock"
        self._fd = None

    def __enter__(self) -> "DirLock":
        self.file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (BlockingIOError, PermissionError):
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise AlreadyExists(f"{self.path} is in use: {self.what} by pid {holder} is "
                                    "writing there; wait for it to end, or use another "
                                    "directory") from None
            try:  # the file we locked is still the one at the path (its holder removes it)
                if os.stat(self.file).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.file.unlink(missing_ok=True)  # while still held: nothing is left behind
            os.close(self._fd)  # closing releases the lock
            self._fd = None
