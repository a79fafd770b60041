"""Training curves as a PNG: loss and accuracy per epoch, train vs validation."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: list[dict], path) -> None:
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.plot(epochs, [row[f"train_{metric}"] for row in history], marker="o", label="train")
        if all(f"val_{metric}" in row for row in history):
            ax.plot(epochs, [row[f"val_{metric}"] for row in history], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
