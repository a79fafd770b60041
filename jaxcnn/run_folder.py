"""Run folders that are never reused by accident: claimed under an exclusive lock for a whole run.

`claim_run_folder` locks `RUN/.lock` (a second run on the folder fails at once, naming the holder's PID),
refuses a non-empty folder unless the run resumes it or overwrites it (the old contents are moved
aside to `RUN.old-<time>/`, never deleted), and checks the folder is writable. A new run claims
its folder only after everything that can fail on the user's input has been checked (data,
weights, model, memory: `jaxcnn.run`), and `RunFolder.remove_start` undoes a start that fails
before its first checkpoint, so no stub blocks the corrected rerun. Only the standard library is
used here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import os
import pathlib
import shutil

from jaxcnn.errors import UserError

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"


class RunFolderError(UserError, ValueError):
    """The run folder cannot be used as asked; the message is one line naming the folder."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


class RunLock:
    """An exclusive, non-blocking `flock` on `RUN/.lock`, which holds the holder's PID.

    The OS drops a flock when its process dies, however it dies (SIGKILL included), so a stale
    `.lock` file never blocks a later run; only a live holder does.
    """

    def __init__(self, run_dir):
        self.path = pathlib.Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RunFolderError(f"cannot write to the run folder {self.path.parent}: {_reason(error)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunFolderError(f"cannot lock the run folder {self.path.parent}: {_reason(error)}") from None
            raise RunFolderError(
                f"the run folder {self.path.parent} is in use by another run (PID {holder}); "
                "wait for it to end or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlock; the file stays (removing it would race with a run that has just opened it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc_info) -> None:
        self.release()


@dataclasses.dataclass
class RunFolder:
    """A claimed run folder: `path` (absolute, symlinks resolved), the held lock, and where
    `overwrite` moved the old contents (`None` if nothing was moved). Release with `close()` or `with`."""

    path: pathlib.Path
    lock: RunLock
    moved_aside: pathlib.Path | None = None
    created: bool = False  # the claim made the folder

    def close(self) -> None:
        self.lock.release()

    def remove_start(self) -> None:
        """Undo a start that failed before its first checkpoint: remove what it wrote (the folder
        held nothing else when it was claimed: it was new or empty, or its contents were moved
        aside, where they stay) and the folder itself when the claim created it. A corrected
        rerun of the same command then finds the folder as it was."""
        for item in _contents(self.path):
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        self.lock.release()
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        if self.created:
            with contextlib.suppress(OSError):  # another process may have entered it meanwhile
                self.path.rmdir()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_run_config(run_dir) -> dict:
    """The parsed `config.json` of an existing run folder, or a `RunFolderError` saying why not."""
    run_dir = pathlib.Path(run_dir)
    path = run_dir / CONFIG_NAME
    if not run_dir.is_dir():
        raise RunFolderError(f"not a jaxcnn run folder: {run_dir} does not exist")
    if not path.is_file():
        raise RunFolderError(f"not a jaxcnn run folder: {run_dir} has no {CONFIG_NAME}")
    try:
        config = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        reason = _reason(error) if isinstance(error, OSError) else f"not valid JSON ({error})"
        raise RunFolderError(f"not a jaxcnn run folder: {path} is unreadable: {reason}") from None
    if not isinstance(config, dict):
        raise RunFolderError(f"not a jaxcnn run folder: {path} does not hold a JSON object")
    return config


def _contents(run_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in run_dir.iterdir() if p.name != LOCK_NAME)


def _move_aside(run_dir: pathlib.Path, contents: list[pathlib.Path]) -> pathlib.Path:
    """Move `contents` into a fresh sibling `RUN.old-<YYYYmmdd-HHMMSS>[-N]/`; nothing is deleted."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    suffix = 1
    while True:
        try:
            target.mkdir()
            break
        except FileExistsError:
            suffix += 1
            target = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{suffix}")
    for item in contents:
        item.rename(target / item.name)
    return target


def _check_writable(run_dir: pathlib.Path, named: pathlib.Path | None = None) -> None:
    """Create and remove a probe file in `run_dir`, so a read-only folder fails now, not after
    the run has started; the error names `named` (default `run_dir`)."""
    probe = run_dir / f".write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as error:
        raise RunFolderError(f"cannot write to the run folder {named or run_dir}: {_reason(error)}") from None


def check_run_folder(path, *, overwrite: bool = False) -> None:
    """Refuse, before a new run does any work, the folder `claim_run_folder` would refuse: one
    that a live run holds, that holds files (without `overwrite`), or that cannot be written
    (for a folder still to be made: its nearest existing parent). Nothing is changed: no folder
    is made, no lock taken (the claim, after the run is built, takes it and checks again)."""
    run_dir = pathlib.Path(path).expanduser().absolute()
    if run_dir.is_dir():
        _check_not_locked(run_dir)
        contents = _contents(run_dir)
        if contents and not overwrite:
            raise _not_empty(run_dir, contents)
    elif run_dir.exists():
        raise RunFolderError(f"the run folder {run_dir} is a file, not a folder")
    existing = next(parent for parent in (run_dir, *run_dir.parents) if parent.exists())
    if not existing.is_dir():
        raise RunFolderError(f"cannot create the run folder {run_dir}: {existing} is a file")
    _check_writable(existing, run_dir)


def _check_not_locked(run_dir: pathlib.Path) -> None:
    """A RunFolderError naming the holder when a live process holds `run_dir`'s lock."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderError(f"the run folder {run_dir} is in use by another run (PID {holder}); "
                                 "wait for it to end or choose another folder") from None
    finally:
        os.close(fd)  # closing drops the lock if it was taken


def _not_empty(run_dir: pathlib.Path, contents: list[pathlib.Path]) -> RunFolderError:
    names = ", ".join(p.name for p in contents[:3]) + (", ..." if len(contents) > 3 else "")
    return RunFolderError(
        f"the run folder {run_dir} is not empty ({names}); use --resume to continue that run "
        "or --overwrite to move its contents aside, or choose another folder"
    )


def claim_run_folder(path, *, resume: bool = False, overwrite: bool = False) -> RunFolder:
    """Lock the run folder `path` for this process and make it ready for a run.

    - `resume`: `path` must be a run folder (a readable `config.json`); it is kept as it is.
    - otherwise `path` is created if missing; if it holds files, `overwrite` moves them aside to
      `<path>.old-<time>/`, and without it the run is refused.
    The lock is taken before anything is inspected or moved, so a live run's folder is never
    touched. Raises `RunFolderError` (one line naming the folder) on every refusal.
    """
    if resume and overwrite:
        raise RunFolderError("resume and overwrite exclude each other: resume continues a run, overwrite starts a new one")
    run_dir = pathlib.Path(path).expanduser().absolute()
    created = not resume and not run_dir.exists()
    if resume:
        read_run_config(run_dir)
    else:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"cannot create the run folder {run_dir}: {_reason(error)}") from None
    run_dir = run_dir.resolve()
    lock = RunLock(run_dir).acquire()
    try:
        moved_aside = None
        contents = [] if resume else _contents(run_dir)
        if contents and not overwrite:
            raise _not_empty(run_dir, contents)
        if contents:
            try:
                moved_aside = _move_aside(run_dir, contents)
            except OSError as error:
                raise RunFolderError(f"cannot move the contents of {run_dir} aside: {_reason(error)}") from None
        _check_writable(run_dir)
    except BaseException:
        lock.release()
        raise
    return RunFolder(run_dir, lock, moved_aside, created)
