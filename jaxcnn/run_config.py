"""`RunConfig`: every choice of a training run, composed from the sections each part of jaxcnn
declares beside its code (`jaxcnn.config` is the machinery); saved as a run folder's
`config.json` and read back by `jaxcnn.run_record.load_config`."""

from __future__ import annotations

import dataclasses
import datetime
import pathlib

from jaxcnn.config import ConfigError, check_int, from_dict, merge, nest, option, to_dict
from jaxcnn.data.config import DataConfig
from jaxcnn.data.presets import training_preset
from jaxcnn.distributed import DistributedConfig
from jaxcnn.models.config import ModelConfig
from jaxcnn.train.finetune import FinetuneConfig
from jaxcnn.train.loop_config import LoopConfig
from jaxcnn.train.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every choice of a training run; saved as the run folder's `config.json`.

    Defaults reproduce the VGG16 cat-and-dog tutorial (Adam 1e-4, batch 16, ReduceLROnPlateau
    0.1/4 on the validation loss, early stopping after 7 epochs without a better validation
    accuracy, 80/20 split with seed 42). `model.arch` and `data.name` have no default: a run
    needs both (`require_complete`), `build_training` only the first.
    """

    model: ModelConfig = option(ModelConfig(), "the network")
    data: DataConfig = option(DataConfig(), "the dataset, its split, augmentation and batching")
    optim: OptimConfig = option(OptimConfig(), "the optimizer and LR schedule")
    loop: LoopConfig = option(LoopConfig(), "epochs, what to watch, the training loss")
    finetune: FinetuneConfig = option(FinetuneConfig(), "start from pretrained weights; freeze or slow the backbone")
    seed: int = option(42, "seed of the split, initialisation, shuffling and augmentation")
    out: str | None = option(None, "run folder (default: runs/<time>-<arch>-<data>)")
    progress: bool = option(True, "show a per-step progress bar", resume=True)
    distributed: DistributedConfig = option(DistributedConfig(), "one run over several processes (hosts): "
                                                                 "jax.distributed, see jaxcnn.distributed")

    def __post_init__(self):
        check_int("seed", self.seed, minimum=0)
        if self.optim.plateau.metric.endswith("_ema") and self.loop.ema_decay is None:
            raise ConfigError("optim.plateau.metric", f"{self.optim.plateau.metric} needs an EMA (loop.ema_decay)")
        if self.optim.warmup_epochs >= self.loop.epochs:
            raise ConfigError("optim.warmup_epochs", f"must be < loop.epochs ({self.loop.epochs}), "
                                                     f"got {self.optim.warmup_epochs}")

    def require_complete(self) -> RunConfig:
        """`self`, or a ConfigError naming the first required option that is not set."""
        if self.model.arch is None:
            raise ConfigError("model.arch", "is required")
        if self.data.name is None:
            raise ConfigError("data.name", "is required")
        return self

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """From a nested dict such as `config.json`'s; a missing option takes its dataset's training
        preset where there is one (`jaxcnn.data.presets.training_preset`), else its default."""
        for path, value in training_preset(values).items():
            values = merge(nest(path, value), values)
        return from_dict(cls, values)

    def to_dict(self) -> dict:
        return to_dict(self)

    def run_dir(self) -> pathlib.Path:
        """`out`, or a new `runs/<time>-<arch>-<data>`."""
        if self.out:
            return pathlib.Path(self.out)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        data = pathlib.Path(self.data.name).name or "data"
        return pathlib.Path("runs") / f"{stamp}-{self.model.arch}-{data}"


def default_values() -> dict:
    """The nested dict of every option's default (required options are None)."""
    return RunConfig().to_dict()


def recorded_config(config: RunConfig) -> dict:
    """The config as config.json records it: without the launch (`distributed`: defaults), which
    belongs to one start of the run, not to the run; a resume or `--config` names its own."""
    return dataclasses.replace(config, distributed=DistributedConfig()).to_dict()
