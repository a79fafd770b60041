"""The run config and the one public builder: config in, everything a training run is made of out.

    config = jaxcnn.RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {"name": "demo"}})
    with jaxcnn.build(config) as run:            # data, loaders, model, optimizer, state, steps
        state = run.training.state
        for batch in run.train_loader.epoch(1):
            state, metrics = run.training.train_step(state, batch)

`build_training` is the half without data (model -> optimizer -> sharded state -> compiled
steps) for a given number of classes and input shape: the benchmarks time exactly what a run
trains with. The command line, the benchmarks and the README example all go through these two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import pathlib
from typing import Any, Callable

import jax

from jaxcnn.config import ConfigError, check_int, from_dict, option, to_dict
from jaxcnn.data.config import DataConfig
from jaxcnn.distributed import DistributedConfig
from jaxcnn.models.config import ModelConfig
from jaxcnn.train.loop import LoopConfig
from jaxcnn.train.metrics import WITHOUT_VALIDATION
from jaxcnn.train.finetune import FinetuneConfig
from jaxcnn.train.optim import OptimConfig

log = logging.getLogger("jaxcnn")


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
        check_int("seed", self.seed)
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
        """From a nested dict such as `config.json`'s; missing options keep their defaults."""
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


@dataclasses.dataclass
class Training:
    """What trains: the mesh, the model, the optimizer (with its plateau settings, if any), the
    state replicated on the mesh, and the jitted, sharded `train_step` / `eval_step`; with a
    frozen backbone also the step of epochs 1 to `frozen_epochs`, `frozen_train_step`."""

    mesh: jax.sharding.Mesh
    model: Any
    optimizer: Any
    plateau: Any
    state: Any
    train_step: Callable
    eval_step: Callable
    frozen_train_step: Callable | None = None
    frozen_epochs: int = 0


def build_training(config: RunConfig, *, num_classes: int, input_shape: tuple[int, int, int],
                   steps_per_epoch: int, mesh: jax.sharding.Mesh | None = None,
                   pretrained: bool = True) -> Training:
    """Model -> optimizer -> replicated initial state (from `finetune.pretrained` weights unless
    `pretrained=False`) -> compiled steps, for `num_classes` classes and (height, width,
    channels) inputs, on `mesh` (default: every visible device)."""
    from jaxcnn.train import compile_steps, create_train_state, make_mesh, replicate
    from jaxcnn.train.finetune import Freeze

    mesh = make_mesh() if mesh is None else mesh
    _check_batch_size(config.data.batch_size, mesh)
    model = config.model.build(num_classes)
    labels = _head_labels(model, input_shape) if config.finetune.splits_backbone else None
    optimizer = _optimizer(config, labels, steps_per_epoch=steps_per_epoch)
    state = create_train_state(jax.random.key(config.seed), model, optimizer, input_shape, ema=config.loop.ema())
    if pretrained and config.finetune.pretrained:
        state = load_pretrained_weights(config, state, num_classes=num_classes, input_shape=input_shape)
    settings = dict(label_smoothing=config.loop.label_smoothing, mixup=config.loop.mixup)
    train_step, eval_step = compile_steps(mesh, **settings)
    frozen_epochs, frozen_train_step = config.finetune.freeze_backbone_epochs, None
    if frozen_epochs:
        frozen = _optimizer(config, labels, steps_per_epoch=steps_per_epoch, frozen=True)
        frozen_train_step, _ = compile_steps(mesh, freeze=Freeze(labels, frozen), **settings)
    plateau = config.optim.plateau if config.optim.schedule == "plateau" else None
    return Training(mesh, model, optimizer, plateau, replicate(state, mesh), train_step, eval_step,
                    frozen_train_step, frozen_epochs)


def _check_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> None:
    """The global batch must split evenly over the mesh's devices (and so over the processes)."""
    if batch_size % mesh.size:
        raise ConfigError(
            "data.batch_size",
            f"{batch_size} is not divisible by the {mesh.size} devices; use a multiple of "
            f"{mesh.size} (each device gets batch_size / {mesh.size} images)",
        )


def _head_labels(model, input_shape: tuple[int, int, int]) -> dict:
    from jaxcnn.train.finetune import head_labels

    dummy = jax.numpy.zeros((1, *input_shape), jax.numpy.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, train=False))
    return head_labels(model, shapes["params"])


def _optimizer(config: RunConfig, labels, *, steps_per_epoch: int, frozen: bool = False):
    """The run's optimizer; with a frozen phase as head and backbone groups (the backbone's held
    when `frozen`: the same state structure either way), with the backbone's LR scale applied."""
    from jaxcnn.train import make_optimizer
    from jaxcnn.train.finetune import backbone_groups, scale_backbone_lr

    finetune = config.finetune
    groups = backbone_groups(labels, frozen=frozen) if finetune.freeze_backbone_epochs else None
    optimizer = make_optimizer(config.optim, steps_per_epoch=steps_per_epoch, epochs=config.loop.epochs,
                               groups=groups)
    return optimizer if labels is None else scale_backbone_lr(optimizer, labels, finetune.backbone_lr_scale)


def pretrained_file(config: RunConfig) -> pathlib.Path:
    """The existing file `finetune.pretrained` names, or a ConfigError naming the option."""
    path = pathlib.Path(config.finetune.pretrained).expanduser()
    if not path.is_file():
        raise ConfigError("finetune.pretrained", f"no weights file at {path}")
    return path


def load_pretrained_weights(config: RunConfig, state, *, num_classes: int, input_shape: tuple[int, int, int]):
    """`state` (as `create_train_state` made it) starting from the run's pretrained weights
    (`jaxcnn.train.finetune.load_pretrained`; the load report goes to the log); not replicated."""
    from jaxcnn.train.finetune import load_pretrained

    state, _ = load_pretrained(state, config.model.arch, pretrained_file(config), num_classes=num_classes,
                               input_shape=input_shape, rng=jax.random.key(config.seed),
                               model_options=config.model.options)
    return state


@dataclasses.dataclass
class Experiment:
    """A built run: its config (with the watched metrics resolved), data splits, loaders (no
    `val_loader` without a validation set, no `test_loader` without a test split) and `training`.
    Close it (or use it as a context manager) to stop the loaders' worker processes."""

    config: RunConfig
    data: Any
    image_size: int
    train_loader: Any
    val_loader: Any
    test_loader: Any
    training: Training
    _cleanup: contextlib.ExitStack

    def close(self) -> None:
        self._cleanup.close()

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def build(config: RunConfig, *, mesh: jax.sharding.Mesh | None = None, pretrained: bool = True) -> Experiment:
    """Load the data of `config`, make its loaders and build its training (`build_training`).

    Without a validation set (`data.val_split=0` on a dataset without its own), the best
    checkpoint, the plateau schedule and early stopping watch the training loss; the returned
    `config` says so and it is logged once. `pretrained=False`: do not read the weights of
    `finetune.pretrained` (a resumed run restores its checkpoint instead). In a multi-process run
    (`config.distributed`, started here unless it is already) the loaders read this process's
    slot of every batch: feed them through `jaxcnn.train.shard_batch` / `prefetch_to_mesh`.
    """
    from jaxcnn.data import Loader, load_data
    from jaxcnn.distributed import initialize
    from jaxcnn.train import make_mesh

    initialize(config.distributed)  # when it asks for several processes and they are not started yet
    config.require_complete()
    data = load_data(
        config.data.name, config.data.dir, val_split=config.data.val_split, split_seed=config.seed,
        image_size=_decode_size(config.data), download=config.data.download,
        label_mode=config.data.label_mode, cache=config.data.cache,
    )
    config = _watch_training_metrics(config) if len(data.val) == 0 else config
    mesh = make_mesh() if mesh is None else mesh
    _check_batch_size(config.data.batch_size, mesh)  # before the loaders split it over the processes
    image_size = config.data.image_size or data.default_image_size
    cleanup = contextlib.ExitStack()

    def loader(source, train: bool):
        return cleanup.enter_context(Loader(
            source, batch_size=config.data.batch_size, train=train, image_size=image_size,
            mean=data.mean, std=data.std, augment=config.data.augment or data.default_augment,
            hflip=data.default_hflip if config.data.hflip is None else config.data.hflip,
            seed=config.seed, workers=config.data.workers, channels=data.channels,
            process_index=jax.process_index(), process_count=jax.process_count(),
        ))

    try:
        train_loader = loader(data.train, True)
        val_loader = loader(data.val, False) if len(data.val) else None
        test_loader = loader(data.test, False) if data.test is not None else None
        training = build_training(config, num_classes=data.num_classes,
                                  input_shape=(image_size, image_size, data.channels),
                                  steps_per_epoch=len(train_loader), mesh=mesh, pretrained=pretrained)
    except BaseException:
        cleanup.close()
        raise
    return Experiment(config, data, image_size, train_loader, val_loader, test_loader, training, cleanup)


def _watch_training_metrics(config: RunConfig) -> RunConfig:
    """The config of a run without validation: every watched val_* metric becomes train_loss."""
    loop, plateau = config.loop, config.optim.plateau
    if loop.best_metric.startswith("val_"):
        loop = dataclasses.replace(loop, best_metric=WITHOUT_VALIDATION)
    if plateau.metric.startswith("val_"):
        plateau = dataclasses.replace(plateau, metric=WITHOUT_VALIDATION)
    log.info(f"No validation set (val_split 0): the best checkpoint, early stopping and the plateau "
             f"schedule watch {loop.best_metric}; the test split is used only at the end.")
    return dataclasses.replace(config, loop=loop, optim=dataclasses.replace(config.optim, plateau=plateau))


def _decode_size(data: DataConfig) -> int | None:
    """The size image folders decode to: the input size, or for random-resized-crop recipes the
    larger 1/0.875 frame they crop from (256 for 224), as torchvision's ImageNet recipe does."""
    from jaxcnn.data.transforms import EVAL_CROP_FRACTION, parse_augment

    if data.image_size and data.augment and any(op == "rrc" for op, _ in parse_augment(data.augment)):
        return math.floor(data.image_size / EVAL_CROP_FRACTION)
    return data.image_size
