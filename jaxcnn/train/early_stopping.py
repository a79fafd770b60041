"""Early stopping on a validation metric, as Keras and the PyTorch tutorials do it.

Written here rather than taken from `flax.training.early_stopping.EarlyStopping` because flax
checks its counter before incrementing it and so stops one epoch later than Keras /
`pytorchtools.EarlyStopping` (which the tutorials used), and it only minimises.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop once `patience` epochs in a row failed to improve the best value by more than `min_delta`.

    A plain frozen dataclass of numbers, so the loop stores it in the checkpoint's JSON metadata.
    `patience=0` disables it.
    """

    patience: int
    mode: str = "max"
    min_delta: float = 0.0
    best: float | None = None
    bad_epochs: int = 0

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.patience < 0 or self.min_delta < 0:
            raise ValueError("patience and min_delta must be >= 0")

    def is_improvement(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        gain = value - self.best if self.mode == "max" else self.best - value
        return gain > self.min_delta

    def update(self, value: float) -> EarlyStopping:
        if self.is_improvement(value):
            return dataclasses.replace(self, best=float(value), bad_epochs=0)
        return dataclasses.replace(self, bad_epochs=self.bad_epochs + 1)

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience
