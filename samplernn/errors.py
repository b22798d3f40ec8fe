"""Mistakes a person can fix, and how the commands report them.

A `UserError` (a bad path or value, a damaged file, a full disk, an impossible config)
reaches the user of a command as one line, `error: <what, where, what to do>`, and the
command exits with EXIT_USER_ERROR; anything else is our bug and keeps its traceback.
The subclasses are also the builtin exceptions they refine, so callers of the Python API
can catch ValueError, FileNotFoundError or FileExistsError as before.
"""

import contextlib
import errno
import math
import sys

EXIT_USER_ERROR = 2
# Operating-system errors that mean the environment, not the code: said in one line too.
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


class UserError(Exception):
    """Something the user can fix; the message says what, where and what to do."""


class ConfigError(UserError, ValueError):
    """An impossible, mistyped or unknown value."""


class NotFound(UserError, FileNotFoundError):
    """A path that should hold something does not."""


class AlreadyExists(UserError, FileExistsError):
    """A path that would be overwritten, or a run directory someone else is writing."""


class BadFile(UserError, ValueError):
    """A file that exists but is not what it should be: damaged, foreign, non-finite."""


class Unavailable(UserError, RuntimeError):
    """Something this machine lacks (a C compiler, a GPU)."""


def _os_message(error: OSError) -> str:
    what = error.strerror or str(error)
    where = error.filename if error.filename is not None else ""
    hint = {errno.ENOSPC: "free some space or write elsewhere",
            errno.EDQUOT: "free some space or write elsewhere",
            errno.EROFS: "write elsewhere"}.get(error.errno, "check the path and its permissions")
    return f"{what}: {where} ({hint})" if where else f"{what} ({hint})"


@contextlib.contextmanager
def one_line_errors():
    """For command-line entry points: a UserError (or a disk or permission error) is printed
    as one line on stderr and the process exits with EXIT_USER_ERROR."""
    try:
        yield
    except (UserError, OSError) as error:
        message = user_message(error)
        if message is None:
            raise
        _exit(message)


def user_message(error: BaseException) -> str | None:
    """The one line for a mistake a person can fix; None for our own bugs."""
    if isinstance(error, UserError):
        return " ".join(str(error).split())
    if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
        return _os_message(error)
    return None


def _exit(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


# -- checks of config values: one line naming the key ---------------------------------------

def check_int(name: str, value, minimum: int | None = None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be a whole number"
                          + (f" >= {minimum}" if minimum is not None else ""))
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")


def check_number(name: str, value, minimum: float | None = None, above: float | None = None,
                 optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    if above is not None and value <= above:
        raise ConfigError(f"{name}={value} must be greater than {above}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is unknown; use one of {', '.join(map(str, choices))}")
