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


def held(path) -> bool | None:
    """Whether a live process holds the DirLock of directory `path` now (None: cannot tell,
    e.g. a folder copied without its lock file's permissions)."""
    file = Path(path) / ".lock"
    try:
        fd = os.open(file, os.O_RDONLY)
    except FileNotFoundError:
        return False  # its holder removed it on the way out, or there never was one
    except OSError:
        return None
    try:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder == str(os.getpid()):
            return True  # ours (testing it would release it: POSIX locks are per process)
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except (BlockingIOError, PermissionError):
            return True
        except OSError:
            return None
    finally:
        os.close(fd)


class InUse:
    """A mark that this process reads `path` (a prepared dataset), for as long as it lives:
    `.in_use/<pid>` inside it, naming the reader (e.g. "training runs/2026-12-07/10-00-00"),
    under a lock the operating system releases when the process ends. `readers(path)` lists
    the live ones, so that prepare refuses to replace a dataset a run is reading.

    The mark is made under the lock prepare holds while it writes (DirLock beside=True), so
    a dataset cannot be replaced between the check and the mark. Where the folder is not
    writable (shared read-only storage), there is no mark: nothing here can replace it.
    """

    def __init__(self, path, reader: str):
        self.path, self.reader = Path(path), reader
        self._fd, self.file = None, self.path / ".in_use" / str(os.getpid())

    def __enter__(self) -> "InUse":
        try:
            with DirLock(self.path, "prepare", beside=True):
                self.file.parent.mkdir(exist_ok=True)
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, self.reader.encode())
                self._fd = fd
        except AlreadyExists:  # prepare is writing it now
            raise
        except OSError:  # a read-only folder: it cannot be replaced from here either
            self._fd = None
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.file.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
            try:  # the last reader leaves no folder behind
                with DirLock(self.path, "prepare", beside=True):
                    self.file.parent.rmdir()
            except OSError:  # another reader's mark is there, or prepare is writing
                pass


def readers(path) -> list[str]:
    """What reads `path` now (InUse marks whose process lives); stale marks are removed."""
    found = []
    folder = Path(path) / ".in_use"
    for mark in sorted(folder.glob("*")) if folder.is_dir() else []:
        try:
            fd = os.open(mark, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            mark.unlink(missing_ok=True)  # its process has ended
        except (BlockingIOError, PermissionError):
            text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            found.append(f"{text or 'a process'} (pid {mark.name})")
        finally:
            os.close(fd)
    return found
