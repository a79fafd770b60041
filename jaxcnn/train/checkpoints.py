"""Orbax checkpoints, one per epoch, keeping only the latest and the best.

Each checkpoint (`<directory>/<epoch>/`) holds the `TrainState` leaves (`state`) and a JSON
`meta` dict for the loop's own bookkeeping (early-stopping counters, history, ...). Saves are
asynchronous and atomic (a temporary directory renamed when complete), so a killed run leaves
its previous checkpoints intact.

Every save is confirmed: one that orbax declines, or that fails while it is written (disk full,
I/O error), raises `CheckpointError` naming the path and what was saved before, and its
temporary folder is removed. A checkpoint that cannot be read raises `UnreadableCheckpointError`;
`restore_newest_readable` falls back to the next older one.

In a multi-process run every process calls the same methods in the same order: Orbax writes
each process's part and process 0 finalizes (`ocp.CheckpointManager`'s multi-process support);
the folder work jaxcnn adds (removing a failed save's temporary folder, moving an unreadable
checkpoint aside) is process 0's too. The directory must be on a file system all processes share.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import gc
import logging
import math
import os
import pathlib
import shutil
import sys
import threading
import traceback

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from jaxcnn.train.state import TrainState

TMP_PATTERN = "*.orbax-checkpoint-tmp*"  # orbax's name for a save being written


class CheckpointError(RuntimeError):
    """A checkpoint was not written (declined or failed); one line naming the path."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint cannot be restored into the given state; one line naming it and why."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """What `restore_newest_readable` found: the epoch restored, its state and meta, and one
    line per newer checkpoint that was unreadable (and where it was moved, if it was)."""

    epoch: int
    state: TrainState
    meta: dict
    problems: tuple[str, ...] = ()


def one_line(error: BaseException, limit: int = 300) -> str:
    """`error` as one short line: tensorstore's JSON specs dropped, long chains cut in the middle."""
    text = " ".join(str(error).split(" [tensorstore_spec")[0].split()) or "no details"
    parts = text.split(": ")
    if len(text) > limit and len(parts) > 3:  # keep the status code and the innermost cause
        text = f"{parts[0]}: ... {': '.join(parts[-2:])}"
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}"


class _DropOrbaxTracebacks(logging.Filter):
    """Drops the tracebacks orbax and asyncio log for a failed asynchronous save: orbax logs it from
    several threads, asyncio once per unretrieved write task (with tensorstore's JSON specs), often
    hundreds of lines; the failure reaches the caller as one `CheckpointError`. One-line records stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.exc_info and record.name != "asyncio":
            return True
        if record.name == "asyncio":
            text = record.getMessage()
            return "orbax" not in text and "tensorstore" not in text
        return f"{os.sep}orbax{os.sep}" not in record.pathname


def _is_closed_loop_callback(unraisable) -> bool:
    """Tensorstore completing a write whose orbax event loop has already closed (after a failure)."""
    return (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"
            and unraisable.exc_traceback is not None
            and traceback.extract_tb(unraisable.exc_traceback)[-1].name == "_check_closed")


@functools.cache
def _quiet_failed_saves() -> None:
    """Install the filters above once per process (they touch nothing else)."""
    quiet = _DropOrbaxTracebacks()
    logging.getLogger("absl").addFilter(quiet)
    logging.getLogger("asyncio").addFilter(quiet)
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _is_closed_loop_callback(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook


class Checkpointer:
    """Save every epoch; keep the latest and the best by `metrics[best_metric]`.

    The best is the checkpoint with the highest (`best_mode="max"`) or lowest ("min") finite
    metric; on a tie the earlier epoch stays best (as "save when it improves" would), and a
    NaN or infinite metric ranks last, so a diverged epoch never becomes best.

    `read_only` opens a run's checkpoints to restore only: nothing is saved, deleted or cleaned
    up, so a run still training in that folder is left alone.
    """

    def __init__(self, directory, *, best_metric: str = "val_accuracy", best_mode: str = "max",
                 read_only: bool = False):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric
        self.best_mode = best_mode
        self._pending: int | None = None  # the epoch whose save runs in the background
        self._failed = False
        options = ocp.CheckpointManagerOptions(
            best_fn=self._rank,
            best_mode=best_mode,
            preservation_policy=AnyPreservationPolicy(
                [LatestN(n=1), BestN(get_metric_fn=self._rank, reverse=best_mode == "min", n=1)]
            ),
            enable_async_checkpointing=True,
            cleanup_tmp_directories=not read_only,  # half-written saves of a killed run
            create=not read_only,
        )
        _quiet_failed_saves()
        self.read_only = read_only
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def _rank(self, metrics: dict):
        """Sort key that orbax orders by (the best sorts last in "max" mode, first in "min")."""
        value = float(metrics[self.best_metric])
        if self.best_mode == "max":
            return (value if math.isfinite(value) else -math.inf, -metrics["epoch"])
        return (value if math.isfinite(value) else math.inf, metrics["epoch"])

    def save(self, epoch: int, state: TrainState, meta: dict, metrics: dict[str, float]) -> None:
        """Start saving `state` and `meta` as checkpoint `epoch` (returns before it is written).

        The previous save is confirmed first; `wait()` (or `close()`) confirms this one. Raises
        `CheckpointError` if orbax declines the epoch (an equal or later one is already saved)
        or a save fails.
        """
        if self.read_only:
            raise ValueError(f"{self.directory} was opened read-only: it cannot save")
        if self.best_metric not in metrics:
            raise ValueError(
                f"metrics must contain the best metric {self.best_metric!r}; got {sorted(metrics)}"
            )
        metrics = {name: float(value) for name, value in metrics.items()} | {"epoch": epoch}
        self.wait()
        try:
            started = self._manager.save(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                metrics=metrics,
            )
        except Exception as error:
            raise self._save_failed(epoch, one_line(error)) from error
        if not started:
            raise CheckpointError(
                f"the checkpoint of epoch {epoch} was not saved: {self.directory} already holds "
                f"epoch {self.latest_epoch}, and orbax only saves later epochs; a run folder "
                "must belong to one run"
            )
        self._pending = epoch

    def wait(self) -> None:
        """Block until the pending save is on disk; `CheckpointError` if it failed."""
        epoch = self._pending
        try:
            self._manager.wait_until_finished()
        except Exception as error:
            self._pending = None
            raise self._save_failed(epoch, one_line(error)) from error
        self._pending = None
        if epoch is not None and not self.path(epoch).is_dir():  # orbax logged and skipped it
            raise self._save_failed(epoch, "orbax did not finalize it")

    def _save_failed(self, epoch: int | None, reason: str) -> CheckpointError:
        """The error for a failed save, after its writer threads ended and its temporary folder is gone."""
        self._failed = True
        _drain(self._manager)
        gc.collect()  # asyncio reports unretrieved write errors when their futures are collected
        if jax.process_index() == 0:
            for tmp in pathlib.Path(self.directory).glob(TMP_PATTERN):
                shutil.rmtree(tmp, ignore_errors=True)
        self._manager.reload()  # forget the failed step
        latest, best = self.latest_epoch, self.best_epoch
        if latest is None:
            saved = "no checkpoint was saved before it"
        else:
            saved = f"saved before: epoch {latest} (latest) and epoch {best} (best) in {self.directory}"
        where = self.path(epoch) if epoch is not None else self.directory
        return CheckpointError(f"could not save the checkpoint of epoch {epoch} to {where}: {reason}; {saved}")

    def restore(self, abstract_state: TrainState, epoch: int | None = None, *,
                partial: bool = False) -> tuple[TrainState, dict]:
        """Checkpoint `epoch` (default: the latest) as (state, meta).

        `abstract_state` is a TrainState of arrays or `jax.ShapeDtypeStruct`s (e.g. from
        `jax.eval_shape`); the restored leaves get its structure, dtypes and shardings. With
        `partial`, it is a dict of some of the state's fields (`jaxcnn.train.spec.inference_target`:
        params, batch_stats, ema) and only those are read. A checkpoint that cannot be read, or
        whose leaves do not match, raises `UnreadableCheckpointError`.
        """
        self.wait()
        epoch = self.latest_epoch if epoch is None else epoch
        if epoch is None:
            raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
        if epoch not in self._manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for epoch {epoch} in {self.directory}; "
                f"available: {sorted(self._manager.all_steps())}"
            )
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        if partial:
            state_args = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                                restore_args=ocp.checkpoint_utils.construct_restore_args(target))
        else:
            state_args = ocp.args.StandardRestore(target)
        try:
            restored = self._manager.restore(
                epoch, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore()),
            )
            _check_leaves(restored.state, abstract_state)
        except Exception as error:
            raise UnreadableCheckpointError(
                f"the checkpoint of epoch {epoch} ({self.path(epoch)}) is unreadable: {one_line(error)}"
            ) from error
        return restored.state, restored.meta

    def restore_newest_readable(self, abstract_state: TrainState, *, set_aside: bool = False,
                                partial: bool = False) -> Restored:
        """Restore the newest checkpoint that reads back, trying them newest first.

        Each unreadable one is reported in `Restored.problems`; with `set_aside` (for a run that
        continues, so its next saves are not declined as older than a broken checkpoint) it is
        moved to `<directory>.unreadable/<epoch>/`, never deleted. Raises FileNotFoundError if
        there is no checkpoint and `UnreadableCheckpointError` if none is readable.
        """
        self.wait()
        unreadable: dict[int, str] = {}
        for epoch in sorted(self._manager.all_steps(), reverse=True):
            try:
                state, meta = self.restore(abstract_state, epoch, partial=partial)
            except UnreadableCheckpointError as error:
                unreadable[epoch] = str(error)
                continue
            if set_aside and unreadable:
                unreadable = {bad: f"{line}; {self._set_aside(bad)}" for bad, line in unreadable.items()}
                multihost_utils.sync_global_devices("jaxcnn: unreadable checkpoints set aside")
                self._manager.reload()
            return Restored(epoch, state, meta, tuple(unreadable.values()))
        if not unreadable:
            raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
        raise UnreadableCheckpointError(
            f"none of the {len(unreadable)} checkpoints in {self.directory} is readable: "
            + "; ".join(unreadable.values())
        )

    def _set_aside(self, epoch: int) -> str:
        """Move checkpoint `epoch` to `<directory>.unreadable/` (process 0 does); where it went."""
        if jax.process_index() != 0:
            return "moved aside by process 0"
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = pathlib.Path(f"{self.directory}.unreadable") / str(epoch)
        if target.exists():
            target = target.with_name(f"{epoch}-{stamp}")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path(epoch).rename(target)
        return f"moved to {target}"

    @property
    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    @property
    def epochs(self) -> list[int]:
        """The epochs of the checkpoints on disk, in order."""
        return sorted(self._manager.all_steps())

    @property
    def best_epoch(self) -> int | None:
        return self._manager.best_step()

    def path(self, epoch: int) -> pathlib.Path:
        """The directory of checkpoint `epoch` (orbax's default step naming)."""
        return pathlib.Path(self.directory) / str(epoch)

    def close(self) -> None:
        """Finish (and confirm) pending saves and release the manager's resources."""
        try:
            self.wait()
        finally:
            try:
                self._manager.close()
            except Exception:
                if not self._failed:
                    raise  # else: the failure already reported, raised again by another orbax thread

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _drain(manager: ocp.CheckpointManager) -> None:
    """Wait until every orbax thread of a failed save has ended. Orbax stops waiting at the first
    failed write while the others still run (and each re-raises the failure when joined); a
    temporary folder removed before they end would be written again."""
    for _ in range(2):
        for wait in (manager.wait_until_finished, manager.check_for_errors):
            try:
                wait()
            except Exception:
                pass
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and type(thread).__module__.startswith("orbax."):
            try:
                thread.join(timeout=60)
            except Exception:
                pass


def _data_view(leaf) -> tuple:
    """(shape, dtype) of a leaf's data; a PRNG key array counts as its uint32 key data, the form
    `ocp.utils.to_shape_dtype_struct` gives it in an abstract target."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.eval_shape(jax.random.key_data, leaf)
    return tuple(leaf.shape), leaf.dtype


def _check_leaves(restored, target) -> None:
    """Raise if a restored leaf's shape or dtype differs from the target's. Orbax restores a PRNG
    key as raw uint32 data, without a word, when the checkpoint's `array_metadatas` are missing."""
    if jax.tree.structure(restored) != jax.tree.structure(target):
        raise ValueError(f"its tree {jax.tree.structure(restored)} differs from {jax.tree.structure(target)}")
    for (path, got), (_, want) in zip(jax.tree_util.tree_leaves_with_path(restored),
                                      jax.tree_util.tree_leaves_with_path(target)):
        lost_key_type = jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key) and not jax.dtypes.issubdtype(
            got.dtype, jax.dtypes.prng_key)
        if lost_key_type or _data_view(got) != _data_view(want):
            raise ValueError(
                f"{jax.tree_util.keystr(path)} is {got.dtype}{list(got.shape)}, "
                f"expected {want.dtype}{list(want.shape)}"
            )
