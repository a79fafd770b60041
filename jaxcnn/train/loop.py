"""The epoch loop: train, validate, step the plateau schedule, early-stop, checkpoint, log.

Everything here is host-side orchestration around the two compiled pure steps; the loop never
reaches inside them. Its own bookkeeping (`LoopState`) is plain JSON that rides in every
checkpoint, so a resumed run continues exactly where the last completed epoch left it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from typing import Any, Callable, Protocol

from tqdm.auto import tqdm

from jaxcnn.termination import check_termination, deferred_termination, signal_name
from jaxcnn.train.early_stopping import EarlyStopping
from jaxcnn.train.evaluation import evaluate, prefetch_to_mesh, sum_metrics
from jaxcnn.train.metrics import metric_mode
from jaxcnn.train.optim import current_learning_rate
from jaxcnn.train.plateau import PlateauConfig, step_plateau

PROGRESS_EVERY = 20  # steps between progress-bar loss updates (each one is a host sync)
PIPED_PROGRESS_SECONDS = 10.0  # between progress lines when the output is not a terminal
log = logging.getLogger("jaxcnn")


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


class LogLogger:
    """Epoch lines and messages to the "jaxcnn" `logging` logger (the run recipe uses
    `jaxcnn.report.RunLogger`, which also writes metrics.csv and TensorBoard)."""

    def epoch_end(self, row: dict, total_epochs: int) -> None:
        from jaxcnn.report.console import format_epoch

        log.info(format_epoch(row, total_epochs))

    def message(self, text: str) -> None:
        log.info(text)


def train_epoch(train_step: Callable, state, batches, mesh, *, progress=None, prefetch: int = 2):
    """Run `train_step` over one epoch of batches (sharded `prefetch` ahead onto the mesh);
    returns the new state and summed metrics."""
    per_step = []
    for i, batch in enumerate(prefetch_to_mesh(batches, mesh, prefetch)):
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


def _check_watched_metrics(names, val_loader, state) -> None:
    """A ValueError unless every watched metric exists in this run's epoch rows."""
    for name in names:
        metric_mode(name)
        if val_loader is None and name.startswith("val_"):
            raise ValueError(f"{name} needs a validation set; without one, watch train_loss or train_accuracy")
        if name.endswith("_ema") and state.ema is None:
            raise ValueError(f"the metric {name!r} needs a state with an EMA (create_train_state(..., ema=...))")


def _train_metrics(train: dict) -> dict[str, float]:
    """train_loss, train_accuracy and (6+ classes) train_top5 from an epoch's summed step metrics."""
    row = {"train_loss": float(train["loss_sum"] / train["count"]),
           "train_accuracy": float(train["correct"] / train["count"])}
    if "correct_top5" in train:
        row["train_top5"] = float(train["correct_top5"] / train["count"])
    return row


def _validation_metrics(eval_step, state, epoch_batches: Callable, mesh, prefetch: int) -> dict[str, float]:
    """val_* of the state, and val_*_ema of its EMA weights (a second pass) when it keeps an EMA."""
    row = _validate(eval_step, state, epoch_batches(), mesh, prefetch)
    if state.ema is not None:
        ema = _validate(eval_step, state.ema_view(), epoch_batches(), mesh, prefetch)
        row.update({f"{name}_ema": value for name, value in ema.items()})
    return row


def _validate(eval_step, state, batches, mesh, prefetch: int) -> dict[str, float]:
    """val_loss, val_accuracy and (6+ classes) val_top5 of `state` on one pass of `batches`."""
    result = evaluate(eval_step, state, batches, mesh, prefetch=prefetch)
    row = {"val_loss": result.loss, "val_accuracy": result.accuracy}
    if result.top5_accuracy is not None:
        row["val_top5"] = result.top5_accuracy
    return row


class Run(Protocol):
    """What `fit` trains: `jaxcnn.build`'s `Experiment` is one. `config` is the run's
    `RunConfig` (its loop, optim.plateau, data.prefetch and progress are read); `steps` its
    compiled `jaxcnn.train.spec.Steps`; `val_loader` None without a validation set."""

    config: Any
    train_loader: Any
    val_loader: Any
    steps: Any
    mesh: Any


@dataclasses.dataclass(frozen=True)
class LoopRun:
    """A `Run` from its parts, for research code that feeds `fit` its own loaders and steps
    (`steps`: a `jaxcnn.train.spec.Steps`; `jaxcnn.build` makes the whole run instead)."""

    config: Any
    train_loader: Any
    val_loader: Any
    steps: Any
    mesh: Any


def fit(run: Run, state, loop: LoopState | None = None, *, checkpointer=None, logger: EpochLogger | None = None,
        progress: bool | None = None):
    """Train `run` from `state` and epoch `loop.epoch + 1` to `run.config.loop.epochs`; returns
    `(state, loop)`.

    Each epoch: train, validate (when there is a `val_loader`), step the plateau schedule (torch
    semantics, on `optim.plateau.metric`), update early stopping (on `loop.best_metric`), save
    the checkpoint (kept as `last`, and as `best` when the best metric improved), log. Stops
    early on early stopping, on a non-finite loss (the checkpoints saved so far are kept) and on
    Ctrl-C or SIGTERM (the save in flight is finished, then the interrupt propagates: the caller
    reports, and exits 130 / 143). `loop` is updated in place, so after either exception it
    still says which epochs completed. Without a `val_loader` only training metrics exist to
    watch. Epochs 1 to `steps.frozen_epochs` train with `steps.frozen_train_step` (the backbone
    frozen), the rest with `steps.train_step`; the epoch number decides, so a resumed run
    continues in its phase. Batches are sharded onto the mesh `data.prefetch` ahead of the step
    (`prefetch_to_mesh`). `progress` (default: the config's) shows a per-step bar.
    """
    trainer = _Trainer(run, checkpointer, logger or LogLogger(),
                       run.config.progress if progress is None else progress)
    _check_watched_metrics((trainer.best_metric, *([trainer.plateau.metric] if trainer.plateau else [])),
                           run.val_loader, state)
    loop = loop or LoopState()
    if loop.early_stopping is not None and loop.early_stopping.should_stop:
        trainer.logger.message(f"Nothing to train: this run already stopped early after epoch {loop.epoch}.")
        return state, loop
    loop.stop_reason = None  # an interrupted run continues
    try:
        with deferred_termination():
            state = trainer.run_epochs(state, loop)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM under jaxcnn.termination.handle_termination
        trainer.record_interrupt(loop, interrupt)
        raise
    if checkpointer is not None:
        checkpointer.wait()
    return state, loop


@dataclasses.dataclass(frozen=True)
class _Trainer:
    """One `fit` call: the run, and where its epochs are saved and logged."""

    run: Run
    checkpointer: Any
    logger: EpochLogger
    progress: bool

    @property
    def epochs(self) -> int:
        return self.run.config.loop.epochs

    @property
    def best_metric(self) -> str:
        return self.run.config.loop.best_metric

    @property
    def plateau(self) -> PlateauConfig | None:
        optim = self.run.config.optim
        return optim.plateau if optim.schedule == "plateau" else None

    @property
    def prefetch(self) -> int:
        return self.run.config.data.prefetch

    def run_epochs(self, state, loop: LoopState):
        """Epochs `loop.epoch + 1` to `epochs`, until one sets `loop.stop_reason`; returns the state."""
        first, frozen_epochs = loop.epoch + 1, self.run.steps.frozen_epochs  # `loop.epoch` advances as epochs finish
        for epoch in range(first, self.epochs + 1):
            if frozen_epochs and epoch in (first, frozen_epochs + 1):  # the phase, once
                self.logger.message(f"Epoch {epoch}: " + ("only the head learns (backbone frozen until epoch "
                                                          f"{frozen_epochs})" if epoch <= frozen_epochs
                                                          else "the whole network learns (backbone unfrozen)"))
            state = self.run_epoch(epoch, state, loop)
            check_termination()
            if loop.stop_reason:
                self.logger.message(f"Stopping after epoch {epoch}: {loop.stop_reason}.")
                break
        return state

    def run_epoch(self, epoch: int, state, loop: LoopState):
        """Train epoch `epoch` (with the frozen step in the frozen phase), stop on a non-finite
        loss, validate, then `finish_epoch`; returns the new state."""
        run, steps = self.run, self.run.steps
        desc = f"Epoch {epoch}/{self.epochs}"
        if self.progress and not sys.stderr.isatty():  # piped: no bar to redraw, a line now and then
            bar = PipedProgress(len(run.train_loader), desc)
        else:
            bar = tqdm(total=len(run.train_loader), desc=desc, leave=False, disable=not self.progress)
        with bar:
            started = time.perf_counter()
            step = steps.frozen_train_step if epoch <= steps.frozen_epochs else steps.train_step
            state, train = train_epoch(step, state, run.train_loader.epoch(epoch), run.mesh, progress=bar,
                                       prefetch=self.prefetch)
            train_seconds = time.perf_counter() - started
        row = {"epoch": epoch, **_train_metrics(train)}
        _stop_unless_finite(row["train_loss"], epoch, loop, self.logger)
        if run.val_loader is not None:
            row.update(_validation_metrics(steps.eval_step, state, lambda: run.val_loader.epoch(epoch), run.mesh,
                                           self.prefetch))
        row.update(
            lr=current_learning_rate(state.opt_state),
            images_per_second=float(train["count"]) / train_seconds,
            epoch_seconds=time.perf_counter() - started,
        )
        return self.finish_epoch(epoch, state, loop, row)

    def finish_epoch(self, epoch: int, state, loop: LoopState, row: dict):
        """The bookkeeping after epoch `epoch`'s metrics `row`: step the plateau schedule, update
        early stopping, record the epoch in `loop`, save the checkpoint, log; returns the state."""
        reduced, plateau = False, self.plateau
        if plateau is not None:
            opt_state, reduced = step_plateau(state.opt_state, row[plateau.metric], plateau)
            state = state.replace(opt_state=opt_state)
        if loop.early_stopping is not None:
            loop.early_stopping = loop.early_stopping.update(row[self.best_metric])
            if loop.early_stopping.should_stop:
                loop.stop_reason = (
                    f"early stopping: {self.best_metric} did not improve for {loop.early_stopping.patience} epochs"
                )
        loop.epoch = epoch
        loop.history.append(row)
        if self.checkpointer is not None:
            self.checkpointer.save(epoch, state, meta=loop.to_json(), metrics=row)
        self.logger.epoch_end(row, self.epochs)
        if reduced:
            self.logger.message(
                f"{plateau.metric} did not improve for more than {plateau.patience} epochs: "
                f"learning rate reduced to {current_learning_rate(state.opt_state):.3g}"
            )
        return state

    def record_interrupt(self, loop: LoopState, interrupt: KeyboardInterrupt) -> None:
        """After Ctrl-C / SIGTERM: finish the save in flight, then record and log where the run stopped."""
        if self.checkpointer is not None:
            self.checkpointer.wait()  # finish the save in flight; a second signal abandons it
        saved = self.checkpointer.latest_epoch if self.checkpointer is not None else None
        loop.stop_reason = f"interrupted by {signal_name(interrupt)} during epoch {loop.epoch + 1}"
        self.logger.message(
            f"Interrupted by {signal_name(interrupt)} during epoch {loop.epoch + 1}. "
            f"Last checkpoint: {f'epoch {saved}' if saved else 'none yet'}."
        )


class PipedProgress:
    """The progress bar's place when the output is not a terminal (a pipe, a log file, a batch
    job): one line every `every` seconds (step, loss), none for an epoch shorter than that."""

    def __init__(self, total: int, desc: str, every: float = PIPED_PROGRESS_SECONDS):
        self.total, self.desc, self.every = total, desc, every
        self.n, self.postfix, self._last = 0, {}, time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            extra = "".join(f", {name} {value}" for name, value in self.postfix.items())
            log.info(f"{self.desc}: step {self.n}/{self.total}{extra}")

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = values

    def __enter__(self) -> PipedProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        pass


def _stop_unless_finite(train_loss: float, epoch: int, loop: LoopState, logger: EpochLogger) -> None:
    """Raise NonFiniteLossError (the reason recorded in `loop` and logged) on a NaN/inf training loss."""
    if not math.isfinite(train_loss):
        loop.stop_reason = f"non-finite training loss ({train_loss}) in epoch {epoch}"
        logger.message(
            f"Stopping: the training loss became {train_loss} in epoch {epoch}. "
            "The checkpoints of earlier epochs are kept; try a lower optim.learning_rate."
        )
        raise NonFiniteLossError(loop.stop_reason)
