"""Export a trained model's evaluation forward pass as a serialized `jax.export` artifact.

The artifact maps a uint8 NHWC batch *already at the model's input size* to float32 class
probabilities; normalization (x / 255 - mean) / std, the network (variables embedded as
constants) and the softmax are inside. Resizing stays outside because it runs on images of
any size (Pillow's antialiased resize); `model.json` says the size and how the run resized.
It runs with plain `jax` (+ `flatbuffers`, which jax's serialization needs) — no jaxcnn, no flax:

    import json, numpy as np
    from jax import export
    spec = json.load(open("export/model.json"))
    with open("export/model.jaxexport", "rb") as f:
        forward = export.deserialize(bytearray(f.read()))
    probabilities = forward.call(images)   # uint8 (N, H, W, C) at spec["input"]["shape"][1:]

The batch dimension is symbolic (any N) unless a batch size is fixed. The artifact is lowered for
CPU and CUDA, so it runs on either.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp

from jaxcnn.config import ConfigError
from jaxcnn.errors import MissingDependencyError
from jaxcnn.inference.run import TrainedModel
from jaxcnn.models.cpu_conv import conv_settings
from jaxcnn.output import atomic_folder, check_writable
from jaxcnn.train.inputs import InputNormalization, normalize_images

ARTIFACT, SPEC = "model.jaxexport", "model.json"
PLATFORMS = ("cpu", "cuda")


def serving_function(model: TrainedModel):
    """uint8 (N, H, W, C) -> float32 (N, classes) probabilities, the variables closed over as constants."""
    variables = jax.device_get(model.variables)  # host arrays: embedded in the artifact
    normalize = InputNormalization.of(model.inputs)

    def serve(images):
        logits = model.model.apply(variables, normalize_images(images, normalize), train=False)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return serve


def export_model(model: TrainedModel, out_dir, *, batch_size: int | None = None,
                 platforms: tuple[str, ...] = PLATFORMS) -> dict:
    """Write `out_dir/model.jaxexport` and `out_dir/model.json`; returns the latter's content.

    `batch_size` fixes the batch dimension; None leaves it symbolic (any batch size). `out_dir` is
    checked before the export work and written whole or not at all: the files go to a temporary
    folder beside it that then takes its place (`jaxcnn.output.atomic_folder`; other files an
    existing `out_dir` holds are kept).
    """
    try:
        import flatbuffers  # noqa: F401  (jax's Exported.serialize needs it but does not depend on it)
    except ImportError:
        raise MissingDependencyError("exporting needs the 'flatbuffers' package: pip install flatbuffers") from None
    height, width, channels = model.input_shape
    if batch_size is not None and batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    out_dir = check_writable(out_dir, what="export", folder=True)
    batch = jax.export.symbolic_shape("batch")[0] if batch_size is None else batch_size
    argument = jax.ShapeDtypeStruct((batch, height, width, channels), jnp.uint8)
    with conv_settings(backend="xla"):  # an artifact must run where jaxcnn's oneDNN extension is absent
        exported = jax.export.export(jax.jit(serving_function(model)), platforms=platforms)(argument)
    spec = describe_export(model, batch_size, artifact=ARTIFACT,
                           format="jax.export (load with jax.export.deserialize; needs jax and flatbuffers)")
    spec["platforms"] = list(platforms)
    with atomic_folder(out_dir) as folder:
        (folder / ARTIFACT).write_bytes(exported.serialize())
        (folder / SPEC).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return spec


def describe_export(model: TrainedModel, batch_size: int | None, *, artifact: str, format: str) -> dict:
    """model.json: the artifact, the class names, the input contract and the run it comes from."""
    height, width, channels = model.input_shape
    inputs = model.inputs
    return {
        "format": format,
        "artifact": artifact,
        "class_names": list(inputs.class_names),
        "input": {"shape": [batch_size, height, width, channels], "dtype": "uint8", "layout": "NHWC",
                  "note": "images already resized to the input size; a null batch means any batch size"},
        "output": {"shape": [batch_size, inputs.num_classes], "dtype": "float32", "meaning": "class probabilities"},
        "preprocessing_inside": {"scale": "x / 255", "mean": list(inputs.mean), "std": list(inputs.std)},
        "preprocessing_outside": {"decode_size": inputs.decode_size, "augment": inputs.augment,
                                  "note": "evaluation resized images as jaxcnn.data.transforms.build_transforms"
                                          "(augment, train=False) does, after decoding to decode_size when set"},
        "run": str(model.run_dir), "arch": model.config.model.arch, "checkpoint": model.checkpoint,
        "ema_weights": model.ema,
        "epoch": model.epoch, "jax": jax.__version__,
    }
