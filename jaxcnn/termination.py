"""SIGINT and SIGTERM as one clean way out of a run: an exception, a resume hint, an exit status.

Inside `handle_termination()`, both signals raise `Terminated` (a `KeyboardInterrupt`, so code
that already finishes its work on Ctrl-C handles SIGTERM the same way) in the main thread; inside
`deferred_termination()` (the epoch loop) only at the loop's next `check_termination()`. The
run unwinds through its `finally`/`with` blocks, the caller prints `resume_hint(run_dir)` and
exits with `exit_status(error)`: 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as
shells report a process killed by that signal.
"""

from __future__ import annotations

import contextlib
import pathlib
import shlex
import signal
import threading

from jaxcnn.run_folder import CONFIG_NAME

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RESUME_PROGRAM = "python scripts/train.py"


class Terminated(KeyboardInterrupt):
    """A termination signal arrived; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


def signal_name(error: BaseException) -> str:
    """'SIGTERM' for a `Terminated(SIGTERM)`; 'SIGINT' for it and for a plain KeyboardInterrupt."""
    return signal.Signals(getattr(error, "signum", signal.SIGINT)).name


def exit_status(error: BaseException) -> int:
    """The shell's status for a run ended by `error`'s signal: 130 (SIGINT), 143 (SIGTERM)."""
    return 128 + getattr(error, "signum", signal.SIGINT)


class _Handler:
    """The installed signal handler: raises `Terminated`, or inside `deferred_termination()` records
    the first signal for `check_termination()` to raise."""

    def __init__(self):
        self.deferring = 0
        self.pending: int | None = None

    def __call__(self, signum, frame):
        if self.deferring and self.pending is None:
            self.pending = signum
            return
        raise Terminated(signum)


_handler: _Handler | None = None  # the one `handle_termination()` installed, if any


@contextlib.contextmanager
def handle_termination(signals=SIGNALS):
    """Turn `signals` into `Terminated` inside the block; the previous handlers come back after.

    Each delivery raises again, so a second Ctrl-C abandons the work the first one let finish
    (e.g. waiting for a checkpoint to be written). Python only lets the main thread install
    signal handlers; from any other thread the block runs with the handlers as they are.
    """
    global _handler
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer, _handler = _handler, _Handler()
    previous = {signum: signal.signal(signum, _handler) for signum in signals}
    try:
        yield
        check_termination()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _handler = outer


@contextlib.contextmanager
def deferred_termination():
    """Inside, the first signal is only recorded, and raised by the next `check_termination()` (or
    at the end of the block); a second one raises at once.

    An exception raised by a signal handler can strike inside any code, e.g. between a lock's
    acquire and release in a data pipeline's thread pool, which then deadlocks at exit. A loop
    that calls `check_termination()` between steps stops at a clean point instead.
    """
    handler = _handler
    if handler is None:
        yield
        return
    handler.deferring += 1
    try:
        yield
    finally:
        handler.deferring -= 1
    check_termination()


def check_termination() -> None:
    """Raise `Terminated` for a signal recorded inside `deferred_termination()`."""
    if _handler is not None and _handler.pending is not None:
        signum, _handler.pending = _handler.pending, None
        raise Terminated(signum)


def resume_hint(run_dir, program: str = RESUME_PROGRAM) -> str:
    """One line: the real (absolute, symlink-free) run folder and the exact command that continues it."""
    run_dir = pathlib.Path(run_dir).expanduser().resolve()
    if not (run_dir / CONFIG_NAME).is_file():
        return f"Nothing to resume yet in {run_dir} (no {CONFIG_NAME} was written); start the run again."
    return f"Run folder: {run_dir}. Continue with: {program} --resume {shlex.quote(str(run_dir))}"
