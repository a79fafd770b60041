"""Compare finished runs: every run's curves in one figure, and one table row per run.

Everything is read from the run folders (`config.json`, `metrics.csv`, `results.json`); the
parameter count comes from the model's shapes alone (`jax.eval_shape`, nothing is computed).
A folder that is not a run, or whose files do not read, is a `RunFolderError` naming the file.
"""

from __future__ import annotations

import csv
import json
import pathlib
import statistics

from jaxcnn.models.shapes import abstract_variables, parameter_count
from jaxcnn.output import TEXT_ERRORS, displayable
from jaxcnn.report.fonts import figure_fonts
from jaxcnn.report.plots import figure_written, plt, style_epoch_axis
from jaxcnn.run_folder import RunFolderError
from jaxcnn.run_record import load_config, read_inputs

COLUMNS = {  # key -> header
    "run": "run", "arch": "arch", "params": "params", "best_val_accuracy": "best val acc",
    "best_val_epoch": "best val epoch", "test_accuracy_best": "test acc (best)",
    "test_accuracy_last": "test acc (last)",
    "epochs": "epochs", "wall_seconds": "wall time (s)", "images_per_second": "img/s",
}


def read_history(run_dir) -> list[dict]:
    """metrics.csv as a list of rows of floats (empty cells left out)."""
    path = pathlib.Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no metrics.csv: not a jaxcnn run folder, or it never finished an epoch")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    except (ValueError, TypeError) as error:  # a cell that is no number, a row longer than the header
        raise RunFolderError(f"{path} is not a metrics.csv written by jaxcnn: {error}") from None


def read_results(run_dir) -> dict:
    """results.json, or {} when the run has none (it never finished)."""
    path = pathlib.Path(run_dir) / "results.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise RunFolderError(f"{path} is not a results.json written by jaxcnn: {error}") from None


def count_parameters(run_dir) -> int:
    """The number of trainable parameters of the run's model, from shapes only."""
    config = load_config(run_dir)
    inputs = read_inputs(run_dir, config)
    return parameter_count(abstract_variables(config.model.build(inputs.num_classes), inputs.input_shape))


def summarize_run(run_dir, label: str | None = None) -> dict:
    """One table row (see `COLUMNS`) plus the run's `history` for the figure."""
    run_dir = pathlib.Path(run_dir)
    config = load_config(run_dir)
    history = read_history(run_dir)
    results = read_results(run_dir)
    with_val = [row for row in history if "val_accuracy" in row]
    best = max(with_val, key=lambda row: row["val_accuracy"]) if with_val else None  # the first of equals
    speeds = [row["images_per_second"] for row in history[1:] or history]  # epoch 1 includes compiling
    return {
        "run": label or run_dir.name, "arch": config.model.arch, "params": count_parameters(run_dir),
        "best_val_accuracy": best["val_accuracy"] if best else None,
        "best_val_epoch": int(best["epoch"]) if best else None,
        "test_accuracy_best": results.get("best", {}).get("accuracy"),
        "test_accuracy_last": results.get("last", {}).get("accuracy"),
        "epochs": len(history), "wall_seconds": round(sum(row["epoch_seconds"] for row in history), 1),
        "images_per_second": round(statistics.median(speeds)) if speeds else None,
        "history": history,
    }


def labels_for(run_dirs) -> list[str]:
    """Folder names, with as many parent folders as it takes to tell them apart."""
    paths = [pathlib.Path(d).resolve() for d in run_dirs]
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "params":
        return f"{value:,}"
    return f"{value:.4f}" if isinstance(value, float) and "accuracy" in key else str(value)


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (aligned, so it reads on a console too)."""
    cells = [[_cell(key, row[key]) for key in COLUMNS] for row in rows]
    widths = [max(len(header), *(len(r[i]) for r in cells)) for i, header in enumerate(COLUMNS.values())]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(COLUMNS.values(), widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def write_table(rows: list[dict], csv_path, markdown_path) -> None:
    """The rows as CSV and Markdown, UTF-8 (a run name that is not UTF-8 as its own bytes)."""
    with open(csv_path, "w", newline="", encoding="utf-8", errors=TEXT_ERRORS) as f:
        writer = csv.DictWriter(f, list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    pathlib.Path(markdown_path).write_text(format_table(rows) + "\n", encoding="utf-8", errors=TEXT_ERRORS)


def plot_comparison(rows: list[dict], path) -> None:
    """Loss and accuracy per epoch of every run: one colour per run, train dashed, validation solid."""
    names = [displayable(row["run"]) for row in rows]
    with figure_fonts(names):
        _draw_comparison(rows, names, path)


def _draw_comparison(rows: list[dict], names: list[str], path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for index, (row, name) in enumerate(zip(rows, names)):
            epochs = [h["epoch"] for h in row["history"]]
            colour = f"C{index % 10}"
            ax.plot(epochs, [h[f"train_{metric}"] for h in row["history"]], "--", color=colour, marker=".",
                    label=f"{name} train")
            if all(f"val_{metric}" in h for h in row["history"]):
                ax.plot(epochs, [h[f"val_{metric}"] for h in row["history"]], "-", color=colour, marker="o",
                        label=f"{name} validation")
        style_epoch_axis(ax, metric, f"{metric}: train (dashed) and validation (solid)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    fig.suptitle(f"Comparison of {len(rows)} runs")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare_runs(run_dirs, out_path) -> tuple[list[dict], list[pathlib.Path]]:
    """Write the table (`.csv`, `.md`) and the figure `out_path` beside it; returns the rows and
    the files written (a figure that cannot be drawn is a warning: `figure_written`)."""
    rows = [summarize_run(d, label) for d, label in zip(run_dirs, labels_for(run_dirs))]
    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tables = [out_path.with_suffix(".csv"), out_path.with_suffix(".md")]
    write_table(rows, *tables)
    drawn = figure_written(out_path, lambda path: plot_comparison(rows, path))
    return rows, [out_path, *tables] if drawn else tables
