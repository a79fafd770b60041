"""What a finished run adds to its folder: the best checkpoint's confusion matrix (PNG) and per-class
table (CSV and Markdown), and the values its TensorBoard hyperparameter view compares."""

from __future__ import annotations

import csv
import pathlib

from jaxcnn.config import flatten
from jaxcnn.report.classification import per_class_report, per_class_table
from jaxcnn.report.figures import plot_confusion

PER_CLASS_COLUMNS = ("precision", "recall", "f1", "accuracy", "support")


def write_best_report(run_dir, results: dict, class_names, split: str, arch: str) -> list[pathlib.Path]:
    """`confusion.png`, `per_class.csv` and `per_class.md` of the best checkpoint on the final split
    (nothing when the run had no split to test on); returns the files written."""
    best = results.get("best")
    if not best:
        return []
    run_dir = pathlib.Path(run_dir)
    rows = per_class_report(best["confusion_matrix"], class_names)
    files = [run_dir / "confusion.png", run_dir / "per_class.csv", run_dir / "per_class.md"]
    weights = " EMA weights" if best.get("ema_weights") else ""
    plot_confusion(best["confusion_matrix"], class_names, files[0],
                   f"Confusion matrix, normalized by true class\n{arch}, {split} split, best checkpoint{weights} "
                   f"(epoch {best['epoch']}), accuracy {best['accuracy']:.4f}")
    with open(files[1], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("class", *PER_CLASS_COLUMNS))
        writer.writerows((name, *(row[key] for key in PER_CLASS_COLUMNS)) for name, row in rows.items())
    files[2].write_text(f"Best checkpoint (epoch {best['epoch']}) on the {split} split\n\n{per_class_table(rows)}\n")
    return files


def hyperparameters(config_values: dict) -> dict[str, bool | str | float | int]:
    """The run's options as TensorBoard hparams (scalars kept, anything else as text)."""
    return {path: value if isinstance(value, (bool, int, float, str)) else str(value)
            for path, value in flatten(config_values)}


def final_metrics(results: dict) -> dict[str, float]:
    """The test results TensorBoard's hyperparameter view lists beside the options."""
    return {f"hparam/{split_tag}_{metric}": float(results[split_tag][metric])
            for split_tag in ("best", "last") if split_tag in results for metric in ("accuracy", "loss")}
