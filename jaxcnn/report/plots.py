"""Training curves as a PNG: loss and accuracy per epoch, train vs validation, the learning rate on
a second axis of the loss panel, and the best checkpoint's epoch marked on both; and
`figure_written`, which every figure of a run goes through."""

from __future__ import annotations

import logging
import pathlib
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402

from jaxcnn.output import atomic_path, displayable  # noqa: E402

LOG_SCALE_RANGE = 10  # the LR axis turns logarithmic when the LR varies more than this factor

log = logging.getLogger("jaxcnn")


def figure_written(path, draw: Callable[[pathlib.Path], None]) -> bool:
    """`draw(file)` the figure for `path`; True when it was written. A figure is the least part of
    a report: one that cannot be drawn is one warning line, never a failure of what is written
    beside it. It is written whole or not at all, and on failure no older figure is left at
    `path` to be taken for this one."""
    path = pathlib.Path(path)
    open_before = set(plt.get_fignums())
    try:
        with atomic_path(path) as temporary:
            draw(temporary)
        return True
    except Exception as error:
        for number in set(plt.get_fignums()) - open_before:
            plt.close(number)
        path.unlink(missing_ok=True)
        reason = (str(error).splitlines() or [""])[0]
        log.warning(f"Figure {displayable(str(path))} not drawn ({type(error).__name__}: {displayable(reason)})")
        return False


def _plot_learning_rate(ax, epochs: list, history: list[dict]):
    rates = [row["lr"] for row in history]
    lr_ax = ax.twinx()
    lr_ax.plot(epochs, rates, color="tab:gray", linestyle=":", marker=".", label="learning rate")
    positive = [r for r in rates if r > 0]
    if positive and max(positive) > LOG_SCALE_RANGE * min(positive):
        lr_ax.set_yscale("log")
    else:  # from 0, so a constant or gently changing LR reads as such
        lr_ax.set_ylim(0, 1.1 * max(rates + [1e-12]))
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    lr_ax.set_ylabel("learning rate", color="tab:gray")
    lr_ax.tick_params(axis="y", colors="tab:gray")
    return lr_ax


def style_epoch_axis(ax, metric: str, title: str) -> None:
    """Labels, title, grid and whole-number epoch ticks of a per-epoch `metric` chart."""
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)


def plot_history(history: list[dict], path, best_epoch: int | None = None) -> None:
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.plot(epochs, [row[f"train_{metric}"] for row in history], marker="o", label="train")
        if all(f"val_{metric}" in row for row in history):
            ax.plot(epochs, [row[f"val_{metric}"] for row in history], marker="o", label="validation")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", alpha=0.7,
                       label=f"best checkpoint (epoch {best_epoch})")
        style_epoch_axis(ax, metric, f"{metric} per epoch")
    lr_ax = _plot_learning_rate(loss_ax, epochs, history) if all("lr" in row for row in history) else None
    handles, labels = loss_ax.get_legend_handles_labels()
    if lr_ax is not None:
        more = lr_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)  # clear of the curves
    fig.savefig(path, dpi=100)
    plt.close(fig)
