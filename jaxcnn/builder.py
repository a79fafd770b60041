"""The one public builder: a `RunConfig` in, everything a training run is made of out.

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
import logging
import time
from typing import Any, Callable

import jax
import numpy as np

from jaxcnn.config import AUTO, ConfigError, reraise_as
from jaxcnn.data import Loader, load_data
from jaxcnn.data.device import DeviceLoader, DeviceStore, choose_pipeline, resident_bytes
from jaxcnn.data.workers import auto_workers
from jaxcnn.distributed import initialize
from jaxcnn.models.cpu_conv import cpu_backend
from jaxcnn.run_config import RunConfig
from jaxcnn.train.batch_size import auto_batch_size, check_batch_fits, memory_budget
from jaxcnn.train.inputs import InputNormalization
from jaxcnn.train.metrics import WITHOUT_VALIDATION
from jaxcnn.train.sharding import make_mesh
from jaxcnn.train.spec import Steps, TrainingSpec

log = logging.getLogger("jaxcnn")


@dataclasses.dataclass
class Training:
    """What trains: the run's `TrainingSpec` (mesh, model, optimizer, abstract state: derived
    once), its compiled `Steps` (train, eval, and with a frozen backbone the step of epochs 1 to
    `frozen_epochs`) and the initial state, replicated on the mesh."""

    spec: TrainingSpec
    steps: Steps
    state: Any

    @property
    def mesh(self) -> jax.sharding.Mesh:
        return self.spec.mesh

    @property
    def model(self):
        return self.spec.model

    @property
    def optimizer(self):
        return self.spec.optimizer

    @property
    def train_step(self) -> Callable:
        return self.steps.train_step

    @property
    def eval_step(self) -> Callable:
        return self.steps.eval_step


def build_training(config: RunConfig, *, num_classes: int, input_shape: tuple[int, int, int],
                   steps_per_epoch: int, mesh: jax.sharding.Mesh | None = None,
                   pretrained: bool = True, normalize=None, check_memory: bool = False) -> Training:
    """The run's `TrainingSpec` -> initial state (from `finetune.pretrained` weights unless
    `pretrained=False`) -> compiled steps, for `num_classes` classes and (height, width,
    channels) inputs, on `mesh` (default: every visible device). `normalize`
    (`jaxcnn.train.InputNormalization`): the statistics the steps normalize uint8 batches with,
    as the loaders deliver them; without it the steps take only normalized float batches.
    `check_memory`: compile the train step for the run's batch first and refuse a batch whose
    step does not fit the device's memory (`check_batch_fits`; the compiled step is reused)."""
    mesh = make_mesh() if mesh is None else mesh
    if config.data.batch_size == AUTO:
        raise ConfigError("data.batch_size", "auto is resolved from the data by jaxcnn.build (or resolve_batch_size); "
                                             "build_training needs a number")
    _check_batch_size(config.data.batch_size, mesh)
    spec = TrainingSpec.derive(config, num_classes=num_classes, input_shape=input_shape, mesh=mesh,
                               steps_per_epoch=steps_per_epoch)
    steps = spec.compile_steps(normalize)
    if check_memory:
        check_batch_fits(steps.train_step, spec.abstract_state, batch_size=config.data.batch_size,
                         input_shape=spec.input_shape, mesh=mesh)
    return Training(spec, steps, spec.initial_state(pretrained=pretrained))


def resolve_batch_size(config: RunConfig, *, num_classes: int, input_shape: tuple[int, int, int],
                       mesh: jax.sharding.Mesh, max_examples: int | None = None,
                       budget: tuple[int, str] | None = None, cap: int | None = None) -> tuple[RunConfig, Any]:
    """`config` with `data.batch_size="auto"` replaced by the global batch `auto_batch_size`
    chooses from XLA's memory analysis of this run's train step (compiled, not run, on the
    spec's abstract state), and the `BatchSizeChoice`; `max_examples`: the training split's
    size; `budget` and `cap` as `auto_batch_size`'s."""
    spec = TrainingSpec.derive(config, num_classes=num_classes, input_shape=input_shape, mesh=mesh)
    unit = (0.5,) * input_shape[-1]  # any statistics: the step's memory does not depend on their values
    steps = spec.compile_steps(InputNormalization(unit, unit))
    with reraise_as("data.batch_size"):
        choice = auto_batch_size(steps.train_step, spec.abstract_state, input_shape=spec.input_shape, mesh=mesh,
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

    @property
    def steps(self) -> Steps:
        return self.training.steps

    @property
    def mesh(self) -> jax.sharding.Mesh:
        return self.training.mesh

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
    initialize(config.distributed)  # when it asks for several processes and they are not started yet
    config.require_complete()
    mesh = make_mesh() if mesh is None else mesh
    log.info(f"Reading the data ({config.data.name})...")
    data = load_data(
        config.data.name, config.data.dir, val_split=config.data.val_split, split_seed=config.seed,
        image_size=config.data.decode_size(), download=config.data.download,
        label_mode=config.data.label_mode, cache=config.data.cache,
    )
    config = _watch_training_metrics(config) if len(data.val) == 0 else config
    image_size = config.data.image_size or data.default_image_size
    recipe = dict(augment=config.data.augment or data.default_augment,
                  hflip=data.default_hflip if config.data.hflip is None else config.data.hflip)
    splits = {"train": data.train, "val": data.val if len(data.val) else None, "test": data.test}
    pipeline, why = choose_pipeline(config.data.input_pipeline, splits, image_size=image_size, mesh=mesh, **recipe)
    sizes = f"{len(data.train)} train / {len(data.val)} val" + (f" / {len(data.test)} test" if data.test else "")
    log.info(f"Data: {data.num_classes} classes, {sizes} images; input pipeline: {pipeline}",
             extra={"details": why})
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
        log.info(f"Building {config.model.arch} and compiling its train step (the first compile takes a while)...")
        if mesh.devices.flat[0].platform == "cpu":
            log.info(f"CPU convolutions: {cpu_backend()}")
        started = time.perf_counter()
        training = build_training(config, num_classes=data.num_classes,
                                  input_shape=(image_size, image_size, data.channels),
                                  steps_per_epoch=len(train_loader), mesh=mesh, pretrained=pretrained,
                                  normalize=InputNormalization.of(train_loader.normalize), check_memory=True)
        log.info(f"Built and compiled in {time.perf_counter() - started:.1f} s.")
    except BaseException:
        cleanup.close()
        raise
    return Experiment(config, data, image_size, train_loader, val_loader, test_loader, training, cleanup)


def _resolve_auto(config: RunConfig, data, input_shape: tuple[int, int, int], mesh, *,
                  resident_bytes: int = 0) -> RunConfig:
    """`config` with `data.workers` and `data.batch_size` "auto" resolved (and logged once); the
    batch's memory budget leaves out `resident_bytes`, the data set the device input path holds."""
    if config.data.workers == AUTO:
        workers, why = auto_workers(data.train, platform=mesh.devices.flat[0].platform)
        log.info(f"--workers auto: {workers}", extra={"details": why})
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
