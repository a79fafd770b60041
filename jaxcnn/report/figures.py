"""Evaluation figures a person can read: the normalized confusion matrix with class names, the most
confident mistakes, and the reliability diagram.

Sizes and fonts scale with the number of classes so labels never overlap up to
`MAX_MATRIX_CLASSES`; beyond that a matrix is unreadable, and a table of the most frequent
confusions is drawn instead. Class names are drawn as `displayable` text (a name read under
`LANG=C` holds surrogate escapes, which matplotlib cannot draw) in fonts that have their glyphs
(`figure_fonts`).
"""

from __future__ import annotations

import numpy as np

from jaxcnn.output import displayable
from jaxcnn.report.classification import Calibration
from jaxcnn.report.fonts import figure_fonts
from jaxcnn.report.plots import plt

MAX_MATRIX_CLASSES = 100
ANNOTATE_MAX_CLASSES = 20  # write each cell's percentage up to this many classes
TOP_CONFUSIONS = 30
NAME_CHARACTERS = 24  # longer class names are shortened with an ellipsis


def short(name: str, limit: int = NAME_CHARACTERS) -> str:
    """`name` as drawn: displayable, shortened with an ellipsis beyond `limit` characters."""
    name = displayable(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_confusion(confusion: np.ndarray, class_names, path, title: str) -> None:
    """Rows normalized by the true class (each row sums to 1), or the top-confusions table."""
    confusion = np.asarray(confusion, np.float64)
    n = len(class_names)
    if n > MAX_MATRIX_CLASSES:
        plot_top_confusions(confusion, class_names, path, title)
        return
    names, title = [short(c) for c in class_names], displayable(title)
    with figure_fonts([*names, title]):
        _draw_confusion(confusion, names, path, title)


def _draw_confusion(confusion: np.ndarray, names: list[str], path, title: str) -> None:
    n = len(names)
    rows = confusion.sum(axis=1, keepdims=True)
    normalized = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    cell = 0.55 if n <= ANNOTATE_MAX_CLASSES else 0.16  # inches per cell: room for its text
    name_inches = 0.075 * max(len(name) for name in names)
    side = max(4.0, n * cell)
    fig, ax = plt.subplots(figsize=(side + name_inches + 2.2, side + name_inches + 1.2), constrained_layout=True)
    image = ax.imshow(normalized, cmap="Blues", vmin=0.0, vmax=1.0)
    font = 9 if n <= ANNOTATE_MAX_CLASSES else 6
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10 if n <= ANNOTATE_MAX_CLASSES else 14)
    if n <= ANNOTATE_MAX_CLASSES:
        for (i, j), value in np.ndenumerate(normalized):
            if confusion[i, j]:
                ax.text(j, i, f"{100 * value:.0f}" if value >= 0.01 else "<1", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    annotated = " (cells in %)" if n <= ANNOTATE_MAX_CLASSES else ""
    fig.colorbar(image, ax=ax, shrink=0.6, label=f"share of the true class{annotated}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def top_confusions(confusion: np.ndarray, class_names, limit: int = TOP_CONFUSIONS) -> list[tuple]:
    """(true, predicted, count, share of the true class) of the most frequent off-diagonal cells."""
    off = np.array(confusion, np.float64)
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:limit]
    rows = np.asarray(confusion).sum(axis=1)
    picked = [np.unravel_index(k, off.shape) for k in order if off.flat[k] > 0]
    return [(class_names[i], class_names[j], int(off[i, j]), float(off[i, j] / rows[i])) for i, j in picked]


def plot_top_confusions(confusion: np.ndarray, class_names, path, title: str) -> None:
    rows = top_confusions(confusion, class_names)
    cells = [[short(t, 40), short(p, 40), str(c), f"{100 * s:.1f}%"] for t, p, c, s in rows] or [["-", "-", "0", "-"]]
    title = displayable(title)
    with figure_fonts([*(cell for row in cells for cell in row[:2]), title]):
        _draw_table(cells, f"{len(class_names)} classes: the {len(rows)} most frequent confusions", path, title)


def _draw_table(cells: list[list[str]], subtitle: str, path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(cells) + 1.0), constrained_layout=True)
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=["true class", "predicted as", "count", "of the true class"],
                     loc="upper center", cellLoc="left", colLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mistakes(mistakes: list[tuple[float, np.ndarray, int, int]], class_names, path, title: str) -> None:
    """A grid of (probability, uint8 HWC image, true, predicted), most confident first."""
    names, title = [short(c, 20) for c in class_names], displayable(title)
    with figure_fonts([*names, title]):
        _draw_mistakes(mistakes, names, path, title)


def _draw_mistakes(mistakes: list[tuple[float, np.ndarray, int, int]], names: list[str], path, title: str) -> None:
    count = len(mistakes)
    columns = min(4, max(count, 1))
    grid_rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(grid_rows, columns, figsize=(2.6 * columns, 2.9 * grid_rows + 0.6),
                             constrained_layout=True, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (probability, image, true, predicted) in zip(axes.flat, mistakes):
        gray = image.shape[-1] == 1
        ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255)
        ax.set_title(f"true: {names[true]}\npredicted: {names[predicted]}\n"
                     f"p = {probability:.3f}", fontsize=8)
    if not mistakes:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=12)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(bins: Calibration, path, title: str) -> None:
    """Accuracy per confidence bin against the diagonal of perfect calibration, with bin counts."""
    title = displayable(title)
    with figure_fonts([title]):
        _draw_reliability(bins, path, title)


def _draw_reliability(bins: Calibration, path, title: str) -> None:
    fig, (ax, counts_ax) = plt.subplots(2, 1, figsize=(6, 7), sharex=True, constrained_layout=True,
                                        gridspec_kw={"height_ratios": [3, 1]})
    width = np.diff(bins.edges)
    left = bins.edges[:-1]
    filled = bins.counts > 0
    accuracy, confidence = np.nan_to_num(bins.accuracy), np.nan_to_num(bins.confidence)
    ax.bar(left, accuracy, width=width, align="edge", color="tab:blue", edgecolor="black", label="accuracy")
    low, high = np.minimum(accuracy, confidence), np.maximum(accuracy, confidence)
    ax.bar(left[filled], (high - low)[filled], bottom=low[filled], width=width[filled], align="edge", fill=False,
           hatch="//", edgecolor="tab:red", label="gap between accuracy and confidence")
    ax.plot((left + width / 2)[filled], confidence[filled], "o", color="tab:red", markersize=4,
            label="mean confidence of the bin")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)  # below the panels: never over a bar
    fig.suptitle(f"{title}\nexpected calibration error {bins.ece:.4f}", fontsize=10)
    counts_ax.bar(left, bins.counts, width=width, align="edge", color="gray", edgecolor="black")
    counts_ax.set_xlabel("confidence (top probability)")
    counts_ax.set_ylabel("examples")
    fig.savefig(path, dpi=110)
    plt.close(fig)
