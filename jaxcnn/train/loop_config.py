"""`LoopConfig`: the options of the epoch loop (`jaxcnn.train.loop.fit`) and the recipe around the step."""

from __future__ import annotations

import dataclasses

from jaxcnn.config import ConfigError, check_choice, check_float, check_int, option
from jaxcnn.train.early_stopping import EarlyStopping
from jaxcnn.train.ema import EmaConfig
from jaxcnn.train.metrics import METRIC_MODES, metric_mode
from jaxcnn.train.mixup import MixupConfig


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long to train, what to watch, and the training recipe around the step (label
    smoothing, MixUp/CutMix, an EMA of the weights). Defaults: the cat-and-dog tutorial's 55
    epochs, best checkpoint by validation accuracy, early stopping after 7 epochs, no mixing,
    no EMA."""

    epochs: int = option(55, "epochs to train (with --resume: extend a finished or stopped run)", resume=True)
    best_metric: str = option("val_accuracy", "selects the best checkpoint and drives early stopping",
                              choices=list(METRIC_MODES))
    early_stop_patience: int = option(7, "stop after this many epochs without a better best metric (0: never)")
    early_stop_min_delta: float = option(0.0, "smallest change of the best metric that counts as better")
    label_smoothing: float = option(0.0, "torch-style label smoothing of the training loss")
    mixup: MixupConfig = option(MixupConfig(mixup_alpha=0.0), "MixUp / CutMix of the training batches (timm)")
    # The run's switch for `EmaConfig` (None: no EMA); its other settings keep timm's defaults.
    ema_decay: float | None = option(None, "keep an EMA of the weights and BatchNorm statistics with this decay "
                                           "(timm ModelEmaV3), evaluated each epoch too", flag="--ema")
    ema_warmup: bool = option(False, "warm the EMA decay up as timm's use_warmup (1 - (1 + t)^-2/3)")

    def __post_init__(self):
        check_int("epochs", self.epochs, minimum=1)
        check_choice("best_metric", self.best_metric, METRIC_MODES)
        check_int("early_stop_patience", self.early_stop_patience, minimum=0)
        check_float("early_stop_min_delta", self.early_stop_min_delta, low=0.0)
        check_float("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        check_float("ema_decay", self.ema_decay, low=0.0, high=1.0, optional=True)
        if self.best_metric.endswith("_ema") and self.ema_decay is None:
            raise ConfigError("best_metric", f"{self.best_metric} needs an EMA (ema_decay)")

    def early_stopping(self) -> EarlyStopping:
        return EarlyStopping(self.early_stop_patience, metric_mode(self.best_metric), self.early_stop_min_delta)

    def ema(self) -> EmaConfig | None:
        return None if self.ema_decay is None else EmaConfig(decay=self.ema_decay, use_warmup=self.ema_warmup)
