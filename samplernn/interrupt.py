"""Stopping cleanly on the signals clusters and people send.

SLURM sends SIGTERM before it kills a job (preemption, scancel) and, when asked, SIGUSR1 or
SIGUSR2 some time before the time limit (submitit uses SIGUSR2); a terminal sends SIGINT,
and SIGHUP when it (or the SSH session) closes.

- `StopRequest` (training): a signal only records itself; the loop finishes its step, writes
  its checkpoint and calls `stop()`, which hands the signal to the handler that was there
  before (submitit's requeue, for instance) and otherwise exits with 128 + the signal number.
  A second SIGINT stops at once (KeyboardInterrupt).
- `abort_on_signals` (generation): a signal raises `Stopped` where the program is, so every
  `with` block unwinds as for Ctrl-C and no half-written file is left.
- `signals_held` (inside either): a few lines that must not be cut in half (a worker process
  being started) hold the signals, which then act as they would have at the end of the block.

Handlers can only be installed in the main thread; elsewhere all three do nothing.
"""

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


class Stopped(SystemExit):
    """The process stops because of a signal; its exit status is 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopRequest:
    """with StopRequest() as stop: ... `stop.signum` is the first stop signal received (or None)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _record(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "StopRequest":
        if _main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def stop(self) -> None:
        """Hand the signal to the handler that was there before us (a job scheduler's, which
        may requeue the job and exit); without one, exit with 128 + the signal number."""
        signum = self.signum
        previous = self._previous.get(signum)
        self.__exit__()
        if callable(previous) and signum != signal.SIGINT:
            previous(signum, None)
        raise Stopped(signum)


@contextlib.contextmanager
def abort_on_signals():
    """SIGTERM, SIGUSR1 and SIGUSR2 raise `Stopped` at once, as SIGINT raises KeyboardInterrupt."""
    if not _main_thread():
        yield
        return

    def abort(signum, frame):
        raise Stopped(signum)

    signals = [s for s in STOP_SIGNALS if s != signal.SIGINT]
    previous = {s: signal.signal(s, abort) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_held():
    """Stop signals that come during the block are held and delivered again at its end, to the
    handlers that were there before. For a step that a signal must not cut in half: a process
    pool's worker half started (forked, not yet registered) is nobody's to end."""
    if not _main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(held):  # each once, in the order they came
            signal.raise_signal(signum)  # runs its handler now: Stopped, KeyboardInterrupt, exit
