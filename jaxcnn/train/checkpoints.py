"""Orbax checkpoints, one per epoch, keeping only the latest and the best.

Each checkpoint (`<directory>/<epoch>/`) holds the `TrainState` leaves (`state`) and a JSON
`meta` dict for the loop's own bookkeeping (early-stopping counters, history, ...). Saves are
asynchronous and atomic (a temporary directory renamed when complete), so a killed run leaves
its previous checkpoints intact.
"""

import math
import os
import pathlib

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from jaxcnn.train.state import TrainState


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
        """Start saving `state` and `meta` as checkpoint `epoch` (returns before it is written)."""
        if self.read_only:
            raise ValueError(f"{self.directory} was opened read-only: it cannot save")
        if self.best_metric not in metrics:
            raise ValueError(
                f"metrics must contain the best metric {self.best_metric!r}; got {sorted(metrics)}"
            )
        metrics = {name: float(value) for name, value in metrics.items()} | {"epoch": epoch}
        self._manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            metrics=metrics,
        )

    def restore(self, abstract_state: TrainState, epoch: int | None = None) -> tuple[TrainState, dict]:
        """Checkpoint `epoch` (default: the latest) as (state, meta).

        `abstract_state` is a TrainState of arrays or `jax.ShapeDtypeStruct`s (e.g. from
        `jax.eval_shape`); the restored leaves get its structure, dtypes and shardings.
        """
        self._manager.wait_until_finished()
        epoch = self.latest_epoch if epoch is None else epoch
        if epoch is None:
            raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
        if epoch not in self._manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for epoch {epoch} in {self.directory}; "
                f"available: {sorted(self._manager.all_steps())}"
            )
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        restored = self._manager.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.meta

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

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager's resources."""
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
