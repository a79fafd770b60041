"""The files of a run folder: metrics.csv, TensorBoard events, train.log, JSON documents."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import logging.handlers
import os
import pathlib

import numpy as np
from tensorboardX import SummaryWriter

from jaxcnn.output import TEXT_ERRORS
from jaxcnn.report.console import format_epoch
from jaxcnn.report.plots import figure_written, plot_history

METRIC_COLUMNS = (  # every run (val_* empty without a validation set)
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds", "images_per_second",
)
# runs that have them: top-5 with 6+ classes, the *_ema columns with an EMA of the weights
OPTIONAL_COLUMNS = ("train_top5", "val_top5", "val_loss_ema", "val_accuracy_ema", "val_top5_ema")

# Grouped so that TensorBoard draws train and validation of one metric in one chart.
TENSORBOARD_TAGS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "val_loss_ema": "loss/val_ema",
    "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/val", "val_accuracy_ema": "accuracy/val_ema",
    "train_top5": "accuracy_top5/train", "val_top5": "accuracy_top5/val", "val_top5_ema": "accuracy_top5/val_ema",
    "lr": "lr", "images_per_second": "speed/images_per_second",
}


def metric_columns(row: dict) -> tuple[str, ...]:
    """The metrics.csv columns of a run whose epochs produce rows like `row`."""
    return METRIC_COLUMNS + tuple(name for name in OPTIONAL_COLUMNS if name in row)


def write_json(path, obj) -> None:
    """Write `obj` as indented JSON atomically (a killed run never leaves half a file)."""
    path = pathlib.Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


@contextlib.contextmanager
def log_to_file(path, earlier: list[logging.LogRecord] = ()):
    """Append everything the "jaxcnn" logger logs (at INFO and above) to `path` while open,
    after the `earlier` records (`recorded_log`'s, from before the file could exist)."""
    handler = logging.FileHandler(path, encoding="utf-8", errors=TEXT_ERRORS)  # any file name in a message
    handler.setFormatter(DetailedFormatter())
    for record in earlier:
        handler.handle(record)
    logger = logging.getLogger("jaxcnn")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


class DetailedFormatter(logging.Formatter):
    """The message, and the record's `details` (`log.info(short, extra={"details": why})`) after
    it: the console shows the short line, `train.log` also says why."""

    def format(self, record: logging.LogRecord) -> str:
        details = getattr(record, "details", None)
        return record.getMessage() + (f" ({details})" if details else "")


@contextlib.contextmanager
def recorded_log():
    """Keep what the "jaxcnn" logger logs (at INFO and above) while open, in the list this
    yields: a run's first lines are logged before its folder (and `train.log`) is claimed."""
    handler = logging.handlers.BufferingHandler(capacity=2**31)  # a list; never flushed while open
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("jaxcnn")
    logger.addHandler(handler)
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler.buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class RunLogger:
    """Logs epochs to `metrics.csv`, TensorBoard (`tensorboard/`) and the "jaxcnn" `logging`
    logger (the console handler the application configured, and `log_to_file`'s `train.log`).

    `history` holds the rows restored from the checkpoint of a resumed run: the CSV is rewritten
    from it and TensorBoard purges later events, so an epoch that ran after the last checkpoint
    (and will run again) is never logged twice.
    """

    def __init__(self, run_dir, history: list[dict] = ()):
        self.run_dir = pathlib.Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.history = list(history)
        self._columns = None  # from the first row: which optional columns this run has
        if self.history:
            self._write_csv("w", self.history)
        self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=len(self.history) + 1)
        self._logger = logging.getLogger("jaxcnn")
        self._skipped_reported = 0
        self.best_epoch = None  # marked on curves.png once known

    def epoch_end(self, row: dict, total_epochs: int) -> None:
        self.history.append(row)
        self._write_csv("a" if self._columns else "w", [row])
        for key, tag in TENSORBOARD_TAGS.items():
            if key in row:
                self._tensorboard.add_scalar(tag, row[key], row["epoch"])
        self._tensorboard.flush()
        self.message(format_epoch(row, total_epochs))

    def _write_csv(self, mode: str, rows: list[dict]) -> None:
        """Start metrics.csv ("w": header, then `rows`) or append `rows` to it ("a")."""
        if self._columns is None:
            self._columns = metric_columns(rows[0])
        with open(self.run_dir / "metrics.csv", mode, newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self._columns, extrasaction="ignore")
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)

    def skipped_files(self, skipped: list[tuple[str, str]]) -> None:
        """Write `skipped_files.txt` (path, tab, reason; a line each) and say so, whenever the list grew.

        Any file name survives: paths are written as the file system's own bytes (`os.fsencode`),
        so a name that is not UTF-8 (Linux allows any bytes but / and NUL) is kept exactly: the
        first tab-separated field of a line, read as bytes, is the name (`os.fsdecode` gives the
        str Python uses for it); escaping it instead would name another file. Reasons are UTF-8
        on one line. Only a name holding a tab or newline itself (legal, rare) makes its line ambiguous.
        """
        if len(skipped) > self._skipped_reported:
            path = self.run_dir / "skipped_files.txt"
            path.write_bytes(b"".join(
                os.fsencode(file) + b"\t" + " ".join(str(reason).split()).encode("utf-8", "backslashreplace") + b"\n"
                for file, reason in skipped
            ))
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")  # printable even if the run path is not UTF-8
            self.message(f"Skipped {len(skipped)} unreadable file(s); listed in {shown}")
            self._skipped_reported = len(skipped)

    def finish(self, results: dict, class_names, split: str | None, config_values: dict,
               best_epoch: int | None) -> None:
        """The end-of-run report: the best checkpoint's confusion matrix and per-class table in the
        run folder and in TensorBoard (image, hparams with the test results); curves.png marks
        `best_epoch` when drawn at `close`. A figure that cannot be drawn is a warning line."""
        from PIL import Image

        from jaxcnn.report.final import final_metrics, hyperparameters, write_best_report

        self.best_epoch = best_epoch
        files = write_best_report(self.run_dir, results, class_names, split, config_values["model"]["arch"])
        figure = self.run_dir / "confusion.png"
        if figure in files:
            with Image.open(figure) as image:
                picture = np.asarray(image.convert("RGB"))
            self._tensorboard.add_image(f"confusion_matrix/{split}_best", picture, best_epoch, dataformats="HWC")
        if files:
            self.message(f"{'Confusion matrix and per-class' if figure in files else 'Per-class'} table of the "
                         f"best checkpoint: {', '.join(str(f) for f in files)}")
        self._tensorboard.add_hparams(hyperparameters(config_values), final_metrics(results), name="hparams")

    def message(self, text: str) -> None:
        self._logger.info(text)

    def close(self) -> None:
        """Flush TensorBoard and draw `curves.png` from the full history (or warn that it could not)."""
        self._tensorboard.close()
        if self.history:
            figure_written(self.run_dir / "curves.png",
                           lambda path: plot_history(self.history, path, best_epoch=self.best_epoch))


class OtherProcessLogger:
    """`RunLogger`'s stand-in in processes other than 0 of a multi-process run: process 0 writes
    the run folder, so here epochs and messages only go to the "jaxcnn" logger (which shows
    warnings and up in these processes). Files this process found unreadable are warned about:
    process 0's `skipped_files.txt` lists only its own."""

    def __init__(self, process_index: int):
        self.process_index = process_index
        self._logger = logging.getLogger("jaxcnn")
        self._skipped_reported = 0

    def epoch_end(self, row: dict, total_epochs: int) -> None:
        self.message(format_epoch(row, total_epochs))

    def message(self, text: str) -> None:
        self._logger.info(text)

    def skipped_files(self, skipped: list[tuple[str, str]]) -> None:
        if len(skipped) > self._skipped_reported:
            file, reason = skipped[-1]
            self._logger.warning(f"Process {self.process_index}: skipped {len(skipped)} unreadable file(s), "
                                 f"the last {os.fsdecode(file)!r} ({reason})")
            self._skipped_reported = len(skipped)

    def close(self) -> None:
        """Nothing to flush: this process wrote no files."""
