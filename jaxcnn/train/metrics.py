"""The per-epoch metrics the loop reports that a run can watch, and which direction is better.

The best checkpoint, early stopping and the plateau schedule each watch one of these. Without a
validation set (`val_split=0`) only the training metrics exist, and a run watches `train_loss`.
"""

METRIC_MODES = {
    "val_accuracy": "max", "val_loss": "min", "train_accuracy": "max", "train_loss": "min",
    "val_accuracy_ema": "max", "val_loss_ema": "min",  # the EMA weights' (runs with an EMA)
}
WITHOUT_VALIDATION = "train_loss"


def metric_mode(name: str) -> str:
    """'max' or 'min': which direction improves metric `name`."""
    if name not in METRIC_MODES:
        raise ValueError(f"unknown metric {name!r}; valid metrics: {', '.join(METRIC_MODES)}")
    return METRIC_MODES[name]
