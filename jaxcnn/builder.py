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
import numpy as np

from jaxcnn.config import AUTO, ConfigError, check_int, from_dict, merge, nest, option, reraise_as, to_dict
from jaxcnn.data.config import DataConfig
from jaxcnn.data.presets import training_preset
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
                   pretrained: bool = True, normalize=None) -> Training:
    """Model -> optimizer -> replicated initial state (from `finetune.pretrained` weights unless
    `pretrained=False`) -> compiled steps, for `num_classes` classes and (height, width,
    channels) inputs, on `mesh` (default: every visible device). `normalize`
    (`jaxcnn.train.InputNormalization`): the statistics the steps normalize uint8 batches with,
    as the loaders deliver them; without it the steps take only normalized float batches."""
    from jaxcnn.train import compile_steps, create_train_state, make_mesh, replicate
    from jaxcnn.train.finetune import Freeze

    mesh = make_mesh() if mesh is None else mesh
    if config.data.batch_size == AUTO:
        raise ConfigError("data.batch_size", "auto is resolved from the data by jaxcnn.build (or resolve_batch_size); "
                                             "build_training needs a number")
    _check_batch_size(config.data.batch_size, mesh)
    model = config.model.build(num_classes)
    labels = _head_labels(model, input_shape) if config.finetune.splits_backbone else None
    optimizer = _optimizer(config, labels, steps_per_epoch=steps_per_epoch)
    state = create_train_state(jax.random.key(config.seed), model, optimizer, input_shape, ema=config.loop.ema())
    if pretrained and config.finetune.pretrained:
        state = load_pretrained_weights(config, state, num_classes=num_classes, input_shape=input_shape)
    settings = dict(label_smoothing=config.loop.label_smoothing, mixup=config.loop.mixup, normalize=normalize)
    train_step, eval_step = compile_steps(mesh, **settings)
    frozen_epochs, frozen_train_step = config.finetune.freeze_backbone_epochs, None
    if frozen_epochs:
        frozen = _optimizer(config, labels, steps_per_epoch=steps_per_epoch, frozen=True)
        frozen_train_step, _ = compile_steps(mesh, freeze=Freeze(labels, frozen), **settings)
    plateau = config.optim.plateau if config.optim.schedule == "plateau" else None
    return Training(mesh, model, optimizer, plateau, replicate(state, mesh), train_step, eval_step,
                    frozen_train_step, frozen_epochs)


def resolve_batch_size(config: RunConfig, *, num_classes: int, input_shape: tuple[int, int, int],
                       mesh: jax.sharding.Mesh, max_examples: int | None = None,
                       budget: tuple[int, str] | None = None, cap: int | None = None) -> tuple[RunConfig, Any]:
    """`config` with `data.batch_size="auto"` replaced by the global batch `auto_batch_size`
    chooses from XLA's memory analysis of this run's train step (compiled, not run, on abstract
    state), and the `BatchSizeChoice`; `max_examples`: the training split's size; `budget` and
    `cap` as `auto_batch_size`'s."""
    from jaxcnn.train import InputNormalization, compile_steps, create_train_state
    from jaxcnn.train.batch_size import auto_batch_size

    model = config.model.build(num_classes)
    labels = _head_labels(model, input_shape) if config.finetune.splits_backbone else None
    # The schedule's values do not change the step's memory; any step count accumulation allows does.
    optimizer = _optimizer(config, labels, steps_per_epoch=config.optim.grad_accum_steps)
    state = jax.eval_shape(lambda: create_train_state(jax.random.key(config.seed), model, optimizer, input_shape,
                                                      ema=config.loop.ema()))
    unit = (0.5,) * input_shape[-1]  # any statistics: the step's memory does not depend on their values
    train_step, _ = compile_steps(mesh, label_smoothing=config.loop.label_smoothing, mixup=config.loop.mixup,
                                  normalize=InputNormalization(unit, unit))
    with reraise_as("data.batch_size"):
        choice = auto_batch_size(train_step, state, input_shape=input_shape, mesh=mesh,
                                 max_examples=max_examples, budget=budget, cap=cap)
    data = dataclasses.replace(config.data, batch_size=choice.global_batch)
    return dataclasses.replace(config, data=data), choice


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
    from jaxcnn.data.device import DeviceLoader, DeviceStore, choose_pipeline, resident_bytes
    from jaxcnn.distributed import initialize
    from jaxcnn.train import InputNormalization, make_mesh

    initialize(config.distributed)  # when it asks for several processes and they are not started yet
    config.require_complete()
    mesh = make_mesh() if mesh is None else mesh
    data = load_data(
        config.data.name, config.data.dir, val_split=config.data.val_split, split_seed=config.seed,
        image_size=_decode_size(config.data), download=config.data.download,
        label_mode=config.data.label_mode, cache=config.data.cache,
    )
    config = _watch_training_metrics(config) if len(data.val) == 0 else config
    image_size = config.data.image_size or data.default_image_size
    recipe = dict(augment=config.data.augment or data.default_augment,
                  hflip=data.default_hflip if config.data.hflip is None else config.data.hflip)
    splits = {"train": data.train, "val": data.val if len(data.val) else None, "test": data.test}
    pipeline, why = choose_pipeline(config.data.input_pipeline, splits, image_size=image_size, mesh=mesh, **recipe)
    log.info(f"Input pipeline: {pipeline} ({why}).")
    config = _resolve_auto(config, data, (image_size, image_size, data.channels), mesh,
                           resident_bytes=resident_bytes(splits) if pipeline == "device" else 0)
    _check_batch_size(config.data.batch_size, mesh)  # before the loaders split it over the processes
    cleanup = contextlib.ExitStack()
    store = DeviceStore(mesh) if pipeline == "device" else None

    def loader(source, train: bool):
        common = dict(batch_size=config.data.batch_size, train=train, image_size=image_size, mean=data.mean,
                      std=data.std, seed=config.seed, channels=data.channels, **recipe)
        if store is not None:
            return cleanup.enter_context(DeviceLoader(source, store=store, **common))
        return cleanup.enter_context(Loader(source, workers=config.data.workers, prefetch=config.data.prefetch,
                                            process_index=jax.process_index(),
                                            process_count=jax.process_count(), **common))

    try:
        train_loader = loader(data.train, True)
        val_loader = loader(data.val, False) if len(data.val) else None
        test_loader = loader(data.test, False) if data.test is not None else None
        training = build_training(config, num_classes=data.num_classes,
                                  input_shape=(image_size, image_size, data.channels),
                                  steps_per_epoch=len(train_loader), mesh=mesh, pretrained=pretrained,
                                  normalize=InputNormalization.of(train_loader.normalize))
    except BaseException:
        cleanup.close()
        raise
    return Experiment(config, data, image_size, train_loader, val_loader, test_loader, training, cleanup)


def _resolve_auto(config: RunConfig, data, input_shape: tuple[int, int, int], mesh, *,
                  resident_bytes: int = 0) -> RunConfig:
    """`config` with `data.workers` and `data.batch_size` "auto" resolved (and logged once); the
    batch's memory budget leaves out `resident_bytes`, the data set the device input path holds."""
    from jaxcnn.data.workers import auto_workers
    from jaxcnn.train.batch_size import memory_budget

    if config.data.workers == AUTO:
        workers, why = auto_workers(data.train, platform=mesh.devices.flat[0].platform)
        log.info(f"--workers auto: {workers} ({why})")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, workers=workers))
    if config.data.batch_size == AUTO:
        budget = None
        if resident_bytes:
            limit, source = memory_budget(mesh.devices.flat[0], len(mesh.local_devices))
            budget = (limit - resident_bytes, f"{source} less the {resident_bytes / 2**20:.0f} MiB data set on it")
        config, choice = resolve_batch_size(config, num_classes=data.num_classes, input_shape=input_shape,
                                            mesh=mesh, max_examples=len(data.train), budget=budget)
        log.info(choice.message())
        if jax.process_count() > 1:  # hosts may see different free memory: every process takes process 0's
            from jax.experimental import multihost_utils

            agreed = int(multihost_utils.broadcast_one_to_all(np.int32(config.data.batch_size)))
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, batch_size=agreed))
    return config


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
