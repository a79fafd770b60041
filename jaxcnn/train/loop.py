"""The epoch loop: train, validate, step the plateau schedule, early-stop, checkpoint, log.

Everything here is host-side orchestration around the two compiled pure steps; the loop never
reaches inside them. Its own bookkeeping (`LoopState`) is plain JSON that rides in every
checkpoint, so a resumed run continues exactly where the last completed epoch left it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Protocol

from tqdm.auto import tqdm

from jaxcnn.termination import check_termination, deferred_termination, signal_name
from jaxcnn.train.early_stopping import EarlyStopping
from jaxcnn.train.evaluate import evaluate, prefetch_to_mesh, sum_metrics
from jaxcnn.train.optim import current_learning_rate
from jaxcnn.train.plateau import PlateauConfig, step_plateau

METRIC_MODES = {"val_accuracy": "max", "val_loss": "min"}
PROGRESS_EVERY = 20  # steps between progress-bar loss updates (each one is a host sync)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the checkpoints written before it are kept."""


@dataclasses.dataclass
class LoopState:
    """What the loop needs to continue a run: completed epochs, their metrics, early-stop counters."""

    epoch: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    early_stopping: EarlyStopping | None = None
    stop_reason: str | None = None

    def to_json(self) -> dict:
        return {
            "epoch": self.epoch,
            "history": self.history,
            "early_stopping": None if self.early_stopping is None else dataclasses.asdict(self.early_stopping),
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_json(cls, meta: dict) -> LoopState:
        stopping = meta.get("early_stopping")
        return cls(
            epoch=int(meta["epoch"]),
            history=list(meta["history"]),
            early_stopping=None if stopping is None else EarlyStopping(**stopping),
            stop_reason=meta.get("stop_reason"),
        )


class EpochLogger(Protocol):
    def epoch_end(self, row: dict, total_epochs: int) -> None: ...

    def message(self, text: str) -> None: ...


class PrintLogger:
    """Console-only logger (the CLI uses `jaxcnn.report.RunLogger`, which also writes files)."""

    def epoch_end(self, row: dict, total_epochs: int) -> None:
        from jaxcnn.report.console import format_epoch

        tqdm.write(format_epoch(row, total_epochs))

    def message(self, text: str) -> None:
        tqdm.write(text)


def train_epoch(train_step: Callable, state, batches, mesh, *, progress=None):
    """Run `train_step` over one epoch of batches; returns the new state and summed metrics."""
    per_step = []
    for i, batch in enumerate(prefetch_to_mesh(batches, mesh)):
        state, metrics = train_step(state, batch)
        per_step.append(metrics)
        check_termination()  # a SIGINT/SIGTERM stops here, between steps, not inside the data pipeline
        if progress is not None:
            progress.update(1)
            if i % PROGRESS_EVERY == 0:
                loss = float(metrics["loss_sum"] / max(float(metrics["count"]), 1.0))
                progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if not math.isfinite(loss):
                    break  # the epoch's sums below report it; no point finishing a diverged epoch
    return state, sum_metrics(per_step)


def fit(
    state,
    *,
    train_loader,
    val_loader,
    train_step: Callable,
    eval_step: Callable,
    mesh,
    epochs: int,
    loop: LoopState | None = None,
    best_metric: str = "val_accuracy",
    plateau: PlateauConfig | None = None,
    plateau_metric: str = "val_loss",
    checkpointer=None,
    logger: EpochLogger | None = None,
    progress: bool = True,
):
    """Train from `loop.epoch + 1` to `epochs`; returns `(state, loop)`.

    Each epoch: train, validate, step the plateau schedule (torch semantics, on `plateau_metric`),
    update early stopping (on `best_metric`), save the checkpoint (kept as `last`, and as `best`
    when `best_metric` improved), log. Stops early on early stopping, on a non-finite loss (the
    checkpoints saved so far are kept) and on Ctrl-C or SIGTERM (the save in flight is finished,
    then the interrupt propagates: the caller reports, and exits 130 / 143). `loop` is updated in
    place, so after either exception it still says which epochs completed.
    """
    for name in (best_metric, plateau_metric):
        if name not in METRIC_MODES:
            raise ValueError(f"unknown metric {name!r}; choose from {sorted(METRIC_MODES)}")
    loop = loop or LoopState()
    logger = logger or PrintLogger()
    if loop.early_stopping is not None and loop.early_stopping.should_stop:
        logger.message(f"Nothing to train: this run already stopped early after epoch {loop.epoch}.")
        return state, loop

    def run_epoch(epoch: int, state):
        bar = tqdm(total=len(train_loader), desc=f"Epoch {epoch}/{epochs}", leave=False, disable=not progress or None)
        with bar:
            started = time.perf_counter()
            state, train = train_epoch(train_step, state, train_loader.epoch(epoch), mesh, progress=bar)
            train_seconds = time.perf_counter() - started
        train_loss = float(train["loss_sum"] / train["count"])
        if not math.isfinite(train_loss):
            loop.stop_reason = f"non-finite training loss ({train_loss}) in epoch {epoch}"
            logger.message(
                f"Stopping: the training loss became {train_loss} in epoch {epoch}. "
                "The checkpoints of earlier epochs are kept; try a lower --lr."
            )
            raise NonFiniteLossError(loop.stop_reason)

        val = evaluate(eval_step, state, val_loader.epoch(epoch), mesh)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": float(train["correct"] / train["count"]),
            "val_loss": val.loss,
            "val_accuracy": val.accuracy,
            "lr": current_learning_rate(state.opt_state),
            "epoch_seconds": time.perf_counter() - started,
            "images_per_second": float(train["count"]) / train_seconds,
        }
        reduced = False
        if plateau is not None:
            opt_state, reduced = step_plateau(state.opt_state, row[plateau_metric], plateau)
            state = state.replace(opt_state=opt_state)
        if loop.early_stopping is not None:
            loop.early_stopping = loop.early_stopping.update(row[best_metric])
            if loop.early_stopping.should_stop:
                loop.stop_reason = (
                    f"early stopping: {best_metric} did not improve for {loop.early_stopping.patience} epochs"
                )
        loop.epoch = epoch
        loop.history.append(row)
        if checkpointer is not None:
            checkpointer.save(epoch, state, meta=loop.to_json(), metrics=row)
        logger.epoch_end(row, epochs)
        if reduced:
            logger.message(
                f"{plateau_metric} did not improve for more than {plateau.patience} epochs: "
                f"learning rate reduced to {current_learning_rate(state.opt_state):.3g}"
            )
        return state

    loop.stop_reason = None  # an interrupted run continues
    try:
        with deferred_termination():
            for epoch in range(loop.epoch + 1, epochs + 1):
                state = run_epoch(epoch, state)
                check_termination()
                if loop.stop_reason:
                    logger.message(f"Stopping after epoch {epoch}: {loop.stop_reason}.")
                    break
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM under jaxcnn.termination.handle_termination
        if checkpointer is not None:
            checkpointer.wait()  # finish the save in flight; a second signal abandons it
        saved = checkpointer.latest_epoch if checkpointer is not None else None
        loop.stop_reason = f"interrupted by {signal_name(interrupt)} during epoch {loop.epoch + 1}"
        logger.message(
            f"Interrupted by {signal_name(interrupt)} during epoch {loop.epoch + 1}. "
            f"Last checkpoint: {f'epoch {saved}' if saved else 'none yet'}."
        )
        raise
    if checkpointer is not None:
        checkpointer.wait()
    return state, loop
