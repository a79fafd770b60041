"""A whole training run from one config: the recipe behind `scripts/train.py`, readable top to bottom.

data -> model -> optimizer -> sharded state -> `fit` -> best/last checkpoints tested -> run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import pathlib
import platform
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jaxcnn.data import Loader, load_data
from jaxcnn.data.transforms import EVAL_CROP_FRACTION, parse_augment
from jaxcnn.models import create_model
from jaxcnn.report.run_log import RunLogger, write_json
from jaxcnn.train import (
    Checkpointer,
    EarlyStopping,
    LoopState,
    NonFiniteLossError,
    PlateauConfig,
    compile_steps,
    create_train_state,
    evaluate,
    fit,
    make_mesh,
    make_optimizer,
    replicate,
)
from jaxcnn.train.loop import METRIC_MODES


@dataclasses.dataclass
class TrainConfig:
    """Every choice of a run; saved as `config.json` and reloaded by `--resume`.

    Defaults reproduce the VGG16 cat-and-dog tutorial (Adam 1e-4, batch 16, ReduceLROnPlateau
    0.1/4 on the validation loss, early stopping after 7 epochs without a better validation
    accuracy, 80/20 split with seed 42). `None` means "the dataset's default".
    """

    arch: str
    data: str
    data_dir: str | None = None
    image_size: int | None = None
    epochs: int = 55
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "plateau"
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    plateau_metric: str = "val_loss"
    plateau_factor: float = 0.1
    plateau_patience: int = 4
    plateau_threshold: float = 1e-4
    plateau_cooldown: int = 0
    plateau_min_lr: float = 0.0
    early_stop_patience: int = 7
    early_stop_min_delta: float = 0.0
    best_metric: str = "val_accuracy"
    augment: str | None = None
    hflip: float | None = None
    val_split: float = 0.2
    label_mode: str | None = None
    download: bool = False
    cache: bool = False
    workers: int = 0
    dtype: str = "float32"
    label_smoothing: float = 0.0
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 42
    out: str | None = None
    progress: bool = True

    def run_dir(self) -> pathlib.Path:
        if self.out:
            return pathlib.Path(self.out)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        data = pathlib.Path(self.data).name or "data"
        return pathlib.Path("runs") / f"{stamp}-{self.arch}-{data}"


def environment() -> dict:
    """Versions and devices, recorded in config.json so a run can be reproduced and compared."""
    import flax
    import grain
    import optax
    import orbax.checkpoint

    from jaxcnn import __version__

    return {
        "jaxcnn": __version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax-checkpoint": orbax.checkpoint.__version__,
        "grain": getattr(grain, "__version__", "unknown"),
        "python": platform.python_version(),
        "devices": [str(d) for d in jax.devices()],
    }


def _decode_size(config: TrainConfig) -> int | None:
    """The size image folders decode to: the input size, or for random-resized-crop recipes the
    larger 1/0.875 frame they crop from (256 for 224), as torchvision's ImageNet recipe does."""
    if config.image_size and config.augment and any(op == "rrc" for op, _ in parse_augment(config.augment)):
        return math.floor(config.image_size / EVAL_CROP_FRACTION)
    return config.image_size


def load_config(run_dir) -> TrainConfig:
    saved = json.loads((pathlib.Path(run_dir) / "config.json").read_text())["config"]
    saved["milestones"] = tuple(saved.get("milestones", ()))
    return TrainConfig(**saved)


def train(config: TrainConfig, *, resume: bool = False) -> dict:
    """Run (or, with `resume`, continue from `config.out`) a training run; returns `results.json`'s content."""
    run_dir = config.run_dir()
    config = dataclasses.replace(config, out=str(run_dir))
    for name in (config.best_metric, config.plateau_metric):
        if name not in METRIC_MODES:
            raise ValueError(f"unknown metric {name!r}; choose from {sorted(METRIC_MODES)}")
    mesh = make_mesh()
    if config.batch_size % mesh.size:
        raise ValueError(
            f"--batch-size {config.batch_size} is not divisible by the {mesh.size} devices; "
            f"use a multiple of {mesh.size} (each device gets batch_size / {mesh.size} images)"
        )

    data = load_data(
        config.data, config.data_dir, val_split=config.val_split, split_seed=config.seed,
        image_size=_decode_size(config), download=config.download, label_mode=config.label_mode,
        cache=config.cache,
    )
    image_size = config.image_size or data.default_image_size
    with contextlib.ExitStack() as cleanup:
        def loader(source, train: bool) -> Loader:
            return cleanup.enter_context(Loader(
                source, batch_size=config.batch_size, train=train, image_size=image_size,
                mean=data.mean, std=data.std, augment=config.augment or data.default_augment,
                hflip=data.default_hflip if config.hflip is None else config.hflip,
                seed=config.seed, workers=config.workers, channels=data.channels,
            ))

        train_loader, val_loader = loader(data.train, True), loader(data.val, False)
        test_loader = loader(data.test, False) if data.test is not None else None
        state, plateau = _initial_state(config, data, image_size, len(train_loader), mesh)
        train_step, eval_step = compile_steps(mesh, label_smoothing=config.label_smoothing)
        checkpointer = cleanup.enter_context(Checkpointer(
            run_dir / "checkpoints", best_metric=config.best_metric, best_mode=METRIC_MODES[config.best_metric]
        ))
        if resume and checkpointer.latest_epoch is not None:
            state, meta = checkpointer.restore(state)
            loop = LoopState.from_json(meta)
        else:
            loop = LoopState(early_stopping=EarlyStopping(
                config.early_stop_patience, METRIC_MODES[config.best_metric], config.early_stop_min_delta
            ))

        write_json(run_dir / "config.json", {"config": dataclasses.asdict(config), "environment": environment()})
        logger = RunLogger(run_dir, loop.history)
        cleanup.callback(logger.close)
        sizes = f"{len(data.train)} train / {len(data.val)} val" + (f" / {len(data.test)} test" if data.test else "")
        logger.message(
            f"{'Resuming' if loop.epoch else 'Training'} {config.arch} on {data.name}: "
            f"{data.num_classes} classes, {sizes} images at {image_size}x{image_size}x{data.channels}, "
            f"{mesh.size} {mesh.devices.flat[0].platform} device(s), run folder {run_dir}"
            + (f", from epoch {loop.epoch + 1}" if loop.epoch else "")
        )
        logger.skipped_files(data.skipped_files())

        abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)  # survives donation
        failure = None
        try:
            state, loop = fit(
                state, train_loader=train_loader, val_loader=val_loader, train_step=train_step,
                eval_step=eval_step, mesh=mesh, epochs=config.epochs, loop=loop,
                best_metric=config.best_metric, plateau=plateau, plateau_metric=config.plateau_metric,
                checkpointer=checkpointer, logger=logger, progress=config.progress,
            )
        except NonFiniteLossError as error:
            failure = error
        skipped = data.skipped_files()  # now including the files that failed when first read
        logger.skipped_files(skipped)

        split = "test" if test_loader else "val"
        results = _test_checkpoints(
            checkpointer, abstract_state, eval_step, test_loader or val_loader, split, mesh, data.class_names, logger
        )
        results.update(
            split=split, epochs_completed=loop.epoch, stop_reason=str(failure or loop.stop_reason or "completed"),
            skipped_files=len(skipped),
        )
        write_json(run_dir / "results.json", results)
    if failure:
        raise failure
    return results


def _initial_state(config: TrainConfig, data, image_size: int, steps_per_epoch: int, mesh):
    """Model, optimizer (with its plateau schedule, if any) and the replicated initial TrainState."""
    model = create_model(config.arch, data.num_classes, dtype=jnp.dtype(config.dtype), **config.model_options)
    plateau = None
    if config.schedule == "plateau":
        plateau = PlateauConfig(
            mode=METRIC_MODES[config.plateau_metric], factor=config.plateau_factor,
            patience=config.plateau_patience, threshold=config.plateau_threshold,
            cooldown=config.plateau_cooldown, min_lr=config.plateau_min_lr,
        )
    optimizer = make_optimizer(
        config.optimizer, learning_rate=config.lr, schedule=config.schedule,
        steps_per_epoch=steps_per_epoch, epochs=config.epochs, momentum=config.momentum,
        nesterov=config.nesterov, weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs,
        milestones=config.milestones, gamma=config.gamma, plateau=plateau,
    )
    state = create_train_state(
        jax.random.key(config.seed), model, optimizer, (image_size, image_size, data.channels)
    )
    return replicate(state, mesh), plateau


def _test_checkpoints(checkpointer, state, eval_step, loader, split, mesh, class_names, logger) -> dict:
    """Evaluate the best and the last checkpoint on the final split, as the tutorials report both."""
    results = {}
    for tag, epoch in (("best", checkpointer.best_epoch), ("last", checkpointer.latest_epoch)):
        if epoch is None:
            continue
        restored, _ = checkpointer.restore(state, epoch)
        result = evaluate(eval_step, restored, loader.epoch(0), mesh)
        results[tag] = {"epoch": epoch, "checkpoint": str(checkpointer.path(epoch)), **result.as_dict(class_names)}
        logger.message(
            f"{tag.capitalize()} checkpoint (epoch {epoch}, {checkpointer.path(epoch)}): "
            f"{split} loss {result.loss:.4f}, accuracy {result.accuracy:.4f}"
        )
    return results
