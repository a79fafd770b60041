"""`load_run`: a finished run folder back as a model that classifies images.

    model = jaxcnn.load_run("runs/fm", checkpoint="best")
    probabilities = model.predict(["shoe.png", pil_image, uint8_array])   # (N, classes)
    logits = model.apply(model.variables, model.inputs.prepare(images))   # research use (normalized floats)

Everything is rebuilt from the run's `config.json` (its `RunConfig` and recorded `InputSpec`) and
one Orbax checkpoint, restored onto the devices present *now*: the abstract target is built here
for the current mesh, so a run trained on 4 devices loads on 1 and the other way round.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcnn.run_config import RunConfig
from jaxcnn.run_record import load_config, read_inputs
from jaxcnn.inference.inputs import ImageLike, InputSpec
from jaxcnn.models.shapes import abstract_variables
from jaxcnn.run_folder import RunFolderError
from jaxcnn.train.inputs import InputNormalization, normalize_images
from jaxcnn.train.spec import inference_target

CHECKPOINT_CHOICES = "'best', 'last' or an epoch number"

log = logging.getLogger("jaxcnn")


@dataclasses.dataclass
class TrainedModel:
    """A trained network with its variables, classes and evaluation preprocessing.

    `variables` is the `{"params": ..., "batch_stats": ...}` dict Flax's `apply` takes (no
    "batch_stats" for models without BatchNorm), replicated on `mesh`.
    """

    run_dir: pathlib.Path
    config: RunConfig
    inputs: InputSpec
    model: Any
    variables: dict
    epoch: int
    checkpoint: str  # "best", "last" or the epoch asked for
    ema: bool  # the variables are the checkpoint's EMA weights
    mesh: jax.sharding.Mesh
    batch_size: int
    _forward: Callable = dataclasses.field(repr=False, default=None)

    def __post_init__(self):
        replicated, data = NamedSharding(self.mesh, P()), NamedSharding(self.mesh, P("data"))
        normalize = InputNormalization.of(self.inputs)

        def forward(variables, images):
            images = normalize_images(images, normalize)  # uint8 as the train steps do it; floats as given
            logits = self.model.apply(variables, images, train=False).astype(np.float32)
            return logits, jax.nn.softmax(logits)

        self._forward = jax.jit(forward, in_shardings=(replicated, data), out_shardings=replicated)

    @property
    def tag(self) -> str:
        """The checkpoint as files name it: "best", "last", "3", with "-ema" for EMA weights."""
        return self.checkpoint + ("-ema" if self.ema else "")

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.inputs.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the model's input."""
        return self.inputs.input_shape

    def apply(self, variables: dict, images, **kwargs):
        """The model's logits for a normalized float batch (`inputs.prepare`); evaluation mode."""
        return self.model.apply(variables, images, train=False, **kwargs)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, probabilities) of an (N, H, W, C) batch at the input size, in jitted fixed-size
        chunks: uint8 images (`inputs.resize`), normalized on the device as the train and eval
        steps normalize them, or already-normalized floats (`inputs.prepare`).

        Chunks are padded to `batch_size` (a multiple of the device count), so one compilation
        serves every call.
        """
        logits, probabilities = [], []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            padded = np.zeros((self.batch_size, *batch.shape[1:]), batch.dtype)
            padded[: len(chunk)] = chunk
            out = jax.device_get(self._forward(self.variables, padded))
            logits.append(out[0][: len(chunk)])
            probabilities.append(out[1][: len(chunk)])
        if not logits:
            empty = np.zeros((0, self.inputs.num_classes), np.float32)
            return empty, empty
        return np.concatenate(logits), np.concatenate(probabilities)

    def predict(self, images: ImageLike | Sequence[ImageLike] | np.ndarray) -> np.ndarray:
        """Class probabilities (N, num_classes) for paths, PIL images or uint8 arrays of any size.

        A 4-D array is a batch; a single path, PIL image or (H, W[, C]) array is one image. Each is
        resized / cropped and normalized exactly as the run's evaluation split was.
        """
        return np.concatenate([probs for _, probs in self.predict_batches(_as_list(images))] or
                              [np.zeros((0, self.inputs.num_classes), np.float32)])

    def predict_batches(self, images: Sequence[ImageLike]) -> Iterator[tuple[int, np.ndarray]]:
        """(start index, probabilities) per batch of `images`, loading only one batch at a time."""
        for start in range(0, len(images), self.batch_size):
            loaded = [self.inputs.load(image) for image in images[start:start + self.batch_size]]
            yield start, self.forward(self.inputs.resize(loaded))[1]


def _as_list(images) -> list:
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        return [images]
    return list(images)


def resolve_checkpoint(checkpointer, checkpoint: str | int) -> int:
    """The epoch of `checkpoint` ('best', 'last' or an epoch) among the run's saved checkpoints."""
    available = checkpointer.epochs
    if not available:
        raise RunFolderError(f"no checkpoint in {checkpointer.directory}: the run saved none")
    if checkpoint == "best":
        return checkpointer.best_epoch
    if checkpoint == "last":
        return checkpointer.latest_epoch
    try:
        epoch = int(checkpoint)
    except (TypeError, ValueError):
        raise RunFolderError(f"checkpoint must be {CHECKPOINT_CHOICES}, got {checkpoint!r}") from None
    if epoch not in available:
        raise RunFolderError(f"checkpoint {epoch}: the run kept epochs {available} only "
                         f"(it keeps the best and the last); use {CHECKPOINT_CHOICES}")
    return epoch


def load_run(run_dir, checkpoint: str | int = "best", *, ema: bool | None = None, batch_size: int | None = None,
             mesh: jax.sharding.Mesh | None = None) -> TrainedModel:
    """The model of run folder `run_dir` at `checkpoint` ('best', 'last' or an epoch number).

    `ema`: use the checkpoint's moving average of the weights (runs trained with an EMA); None
    does so for "best" when the run chose its best checkpoint by an EMA metric, as its
    `results.json` did. `batch_size` (default: the run's) is rounded up to a multiple of the
    devices of `mesh` (default: every visible device).
    """
    from jaxcnn.train import Checkpointer, make_mesh, metric_mode

    run_dir = pathlib.Path(run_dir)
    config = load_config(run_dir)
    inputs = read_inputs(run_dir, config)
    mesh = make_mesh() if mesh is None else mesh
    best_metric = config.loop.best_metric
    if ema is None:
        ema = checkpoint == "best" and best_metric.endswith("_ema")
    if ema and config.loop.ema_decay is None:
        raise RunFolderError(f"{run_dir} keeps no EMA weights: it was trained without an EMA (--ema DECAY)")
    model = config.model.build(inputs.num_classes)
    target = inference_target(abstract_variables(model, inputs.input_shape), mesh, ema=ema)
    with Checkpointer(run_dir / "checkpoints", best_metric=best_metric, best_mode=metric_mode(best_metric),
                      read_only=True) as ckpt:
        if checkpoint == "last":  # as --resume does: the newest checkpoint that reads back
            restored = ckpt.restore_newest_readable(target, partial=True)
            epoch, state = restored.epoch, restored.state
            for problem in restored.problems:
                log.warning(problem)
        else:
            epoch = resolve_checkpoint(ckpt, checkpoint)
            state, _ = ckpt.restore(target, epoch, partial=True)
    variables = state["ema"] if ema else {name: tree for name, tree in state.items() if name != "ema"}
    size = batch_size or config.data.batch_size
    size = -(-size // mesh.size) * mesh.size
    return TrainedModel(run_dir, config, inputs, model, variables, epoch, str(checkpoint), ema, mesh, size)
