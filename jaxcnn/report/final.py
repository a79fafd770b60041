"""What a finished run adds to its folder: the best checkpoint's confusion matrix (PNG) and per-class
table (CSV and Markdown), and the values its TensorBoard hyperparameter view compares."""

from __future__ import annotations

import csv
import pathlib

from jaxcnn.config import flatten
from jaxcnn.output import TEXT_ERRORS, displayable
from jaxcnn.report.classification import per_class_report, per_class_table
from jaxcnn.report.figures import plot_confusion
from jaxcnn.report.plots import figure_written

PER_CLASS_COLUMNS = ("precision", "recall", "f1", "accuracy", "support")


def write_best_report(run_dir, results: dict, class_names, split: str, arch: str) -> list[pathlib.Path]:
    """`confusion.png`, `per_class.csv` and `per_class.md` of the best checkpoint on the final split
    (nothing when the run had no split to test on); returns the files written. The tables come
    first and a figure that cannot be drawn is a warning (`figure_written`), so they are always
    written. Class names are written as UTF-8, a name that is not UTF-8 as its own bytes."""
    best = results.get("best")
    if not best:
        return []
    run_dir = pathlib.Path(run_dir)
    rows = per_class_report(best["confusion_matrix"], class_names)
    figure, tables = run_dir / "confusion.png", [run_dir / "per_class.csv", run_dir / "per_class.md"]
    with open(tables[0], "w", newline="", encoding="utf-8", errors=TEXT_ERRORS) as f:
        writer = csv.writer(f)
        writer.writerow(("class", *PER_CLASS_COLUMNS))
        writer.writerows((name, *(row[key] for key in PER_CLASS_COLUMNS)) for name, row in rows.items())
    tables[1].write_text(f"Best checkpoint (epoch {best['epoch']}) on the {split} split\n\n{per_class_table(rows)}\n",
                         encoding="utf-8", errors=TEXT_ERRORS)
    weights = " EMA weights" if best.get("ema_weights") else ""
    title = (f"Confusion matrix, normalized by true class\n{arch}, {split} split, best checkpoint{weights} "
             f"(epoch {best['epoch']}), accuracy {best['accuracy']:.4f}")
    drawn = figure_written(figure, lambda path: plot_confusion(best["confusion_matrix"], class_names, path, title))
    return [figure, *tables] if drawn else tables


def hyperparameters(config_values: dict) -> dict[str, bool | str | float | int]:
    """The run's options as TensorBoard hparams (numbers kept, anything else as `displayable` text:
    TensorBoard's protobuf strings must be UTF-8, and a path read under `LANG=C` may not be)."""
    return {path: value if isinstance(value, (bool, int, float)) else displayable(str(value))
            for path, value in flatten(config_values)}


def final_metrics(results: dict) -> dict[str, float]:
    """The test results TensorBoard's hyperparameter view lists beside the options."""
    return {f"hparam/{split_tag}_{metric}": float(results[split_tag][metric])
            for split_tag in ("best", "last") if split_tag in results for metric in ("accuracy", "loss")}
