"""`export_onnx`: a model's evaluation forward pass as an ONNX file; `export_run_onnx` for a run folder.

The forward pass is traced to a jaxpr with the convolutions' plain path (`conv_settings`
without the XLA:CPU rewrites: the single `conv_general_dilated` every other platform runs) and
converted (convert.py). The batch dimension is traced as `DYNAMIC_BATCH`, a prime no layer
size is a multiple of, so every dimension equal to it is the batch and is written as the
symbolic "batch"; a literal equal to it (the model using its batch size as a number) or a slice
of it is refused. A fixed `batch_size` is traced as it is.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from jaxcnn.onnx_export.errors import OnnxExportError, require_onnx

OPSET = 17  # ONNX Runtime >= 1.12, TensorRT >= 8.6, OpenVINO and onnxruntime-web all read it
IR_VERSION = 8  # the IR version of opset 17, so that runtimes of that age load the file
INPUT_LAYOUTS = ("nhwc-uint8", "nchw-float32")
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
ARTIFACT = "model.onnx"
DYNAMIC_BATCH = 1_000_003
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit on one message


def _contract(module, input_shape, mean, std, class_names, input_layout) -> dict:
    """The input contract as metadata_props (strings) and for tracing."""
    if input_layout not in INPUT_LAYOUTS:
        raise OnnxExportError(f"input_layout {input_layout!r}: expected one of {', '.join(INPUT_LAYOUTS)}")
    if input_shape is None or len(input_shape) != 3:
        raise OnnxExportError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    height, width, channels = (int(d) for d in input_shape)
    if input_layout == "nhwc-uint8" and (mean is None or std is None):
        raise OnnxExportError("a uint8 input is normalized inside the graph: pass mean= and std= "
                              "(per channel, on the 0..1 scale), or input_layout='nchw-float32'")
    num_classes = getattr(module, "num_classes", None)
    if class_names is None and num_classes is not None:
        class_names = [str(i) for i in range(num_classes)]
    return {"height": height, "width": width, "channels": channels, "layout": input_layout,
            "mean": None if mean is None else [float(m) for m in mean],
            "std": None if std is None else [float(s) for s in std],
            "class_names": None if class_names is None else [str(c) for c in class_names]}


def _metadata(contract: dict, arch: str, extra: dict) -> dict[str, str]:
    """metadata_props: the class names and the input contract, as strings (JSON for lists)."""
    uint8 = contract["layout"] == "nhwc-uint8"
    size = [contract["height"], contract["width"]]
    shape = ["N", *size, contract["channels"]] if uint8 else ["N", contract["channels"], *size]
    props = {
        "arch": arch,
        "class_names": json.dumps(contract["class_names"]),
        "input_layout": "NHWC" if uint8 else "NCHW",
        "input_dtype": "uint8" if uint8 else "float32",
        "input_shape": json.dumps(shape),
        "image_size": json.dumps(size),
        "channels": str(contract["channels"]),
        "mean": json.dumps(contract["mean"]),
        "std": json.dumps(contract["std"]),
        "normalization": ("inside the graph: (x / 255 - mean) / std per channel" if uint8 else
                          "by the caller: feed (x / 255 - mean) / std per channel"),
        "output": f"{OUTPUT_NAME}: float32 (N, classes), softmax of the logits",
    }
    return {**props, **{key: str(value) for key, value in extra.items()}}


def _trace(module, variables, contract: dict, batch: int):
    """The jaxpr of uint8/float images -> probabilities, the variables as its first inputs."""
    import jax
    import jax.numpy as jnp

    from jaxcnn.models.cpu_conv import conv_settings
    from jaxcnn.train.inputs import InputNormalization, normalize_images

    uint8 = contract["layout"] == "nhwc-uint8"
    normalize = InputNormalization(contract["mean"], contract["std"]) if uint8 else None

    def probabilities(variables, images):
        x = normalize_images(images, normalize) if uint8 else images
        logits = module.apply(variables, x, train=False)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    shape = (batch, contract["height"], contract["width"], contract["channels"])
    images = jax.ShapeDtypeStruct(shape, jnp.uint8 if uint8 else jnp.float32)
    abstract = jax.tree.map(lambda v: jax.ShapeDtypeStruct(np.shape(v), v.dtype), variables)
    with conv_settings(batch_chunk=0, small_map=False, backend="xla"):  # plain convolutions only
        return jax.make_jaxpr(probabilities)(abstract, images), images


def _variable_leaves(variables) -> list:
    """(label, host array) per leaf, in the order the jaxpr takes them: e.g. "params.fc.kernel"."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    return [(".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), np.asarray(jax.device_get(leaf)))
            for path, leaf in leaves]


def _resolve(model) -> tuple[Any, Any, str]:
    if isinstance(model, tuple) and len(model) == 2:
        module, variables = model
        return module, variables, getattr(module, "name", None) or type(module).__name__
    from jaxcnn.inference.run import TrainedModel

    if isinstance(model, TrainedModel):
        return model.model, model.variables, model.config.model.arch
    raise OnnxExportError(f"export_onnx takes a TrainedModel (jaxcnn.load_run) or a (model, variables) pair, "
                          f"got {type(model).__name__}")


def export_onnx(model, path, *, input_layout: str = "nhwc-uint8", batch_size: int | None = None,
                input_shape=None, mean=None, std=None, class_names=None, metadata: dict | None = None):
    """Write `model`'s evaluation forward pass to the ONNX file `path`; returns the `onnx.ModelProto`.

    `model`: a `TrainedModel` (its input contract comes with it) or a `(flax_module, variables)`
    pair with `input_shape=(height, width, channels)` and, for uint8 input, the `mean` / `std`
    it was trained with. `input_layout`: "nhwc-uint8" (images 0..255, normalized inside the
    graph, as the jax.export artifact) or "nchw-float32" (normalized by the caller). The output
    is the class probabilities. `batch_size` fixes the batch; None leaves it dynamic. `metadata`
    adds string entries to the file's metadata_props.
    """
    onnx = require_onnx()
    from jaxcnn import __version__

    module, variables, arch = _resolve(model)
    if not isinstance(model, tuple):
        if any(v is not None for v in (input_shape, mean, std, class_names)):
            raise OnnxExportError("a TrainedModel brings its own input_shape, mean, std and class_names: "
                                  "pass them only with a (model, variables) pair")
        inputs = model.inputs
        input_shape, mean, std, class_names = model.input_shape, inputs.mean, inputs.std, inputs.class_names
    contract = _contract(module, input_shape, mean, std, class_names, input_layout)
    dtype = np.dtype(getattr(module, "dtype", None) or np.float32)
    if dtype != np.float32:
        raise OnnxExportError(f"ONNX export of {arch}: the model computes in {dtype.name} and the export is "
                              "float32: export (model.clone(dtype=jnp.float32), variables) from Python to run it in "
                              "float32 instead")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise OnnxExportError(f"batch_size must be a positive integer or None, got {batch_size!r}")

    graph = _graph(module, variables, contract, arch, batch_size)
    layout = "uint8 NHWC" if contract["layout"] == "nhwc-uint8" else "float32 NCHW"
    proto = onnx.helper.make_model(graph, producer_name="jaxcnn", producer_version=__version__,
                                   ir_version=IR_VERSION, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   doc_string=f"{arch}: {layout} images -> class probabilities")
    onnx.helper.set_model_props(proto, _metadata(contract, arch, metadata or {}))
    if proto.ByteSize() > MAX_PROTO_BYTES:
        raise OnnxExportError(f"ONNX export of {arch}: the model is over protobuf's 2 GiB limit for one file")
    onnx.checker.check_model(proto, full_check=True)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return proto


def _graph(module, variables, contract: dict, arch: str, batch_size: int | None):
    """The traced forward pass as an ONNX graph: input "images", output "probabilities"."""
    from jaxcnn.onnx_export.convert import JaxprConverter
    from jaxcnn.onnx_export.graph import Const, OnnxGraph, Tensor, identity

    closed, images = _trace(module, variables, contract, batch_size or DYNAMIC_BATCH)
    g = OnnxGraph(batch=None if batch_size else DYNAMIC_BATCH)
    layout = identity(4) if contract["layout"] == "nhwc-uint8" else (0, 3, 1, 2)
    image = g.add_input(INPUT_NAME, images.shape, images.dtype, layout)
    args = [Const(value, label) for label, value in _variable_leaves(variables)] + [image]
    (out,) = JaxprConverter(g, arch).convert(closed.jaxpr, closed.consts, args)
    if not isinstance(out, Tensor):
        raise OnnxExportError(f"ONNX export of {arch}: the output does not depend on the input images")
    name = g.input(out, identity(out.rank))
    if name not in g.value_infos:  # the output is the input itself: an Identity node to name it
        name = g.node("Identity", [name], out.shape, out.dtype).name
    g.rename(name, OUTPUT_NAME)
    return g.make_graph(arch, [Tensor(OUTPUT_NAME, identity(out.rank), out.shape, out.dtype)])


def export_run_onnx(model, out_dir, *, input_layout: str = "nhwc-uint8", batch_size: int | None = None) -> dict:
    """Write `out_dir/model.onnx` and `out_dir/model.json` for a `TrainedModel`; returns the latter's content."""
    onnx = require_onnx()
    from jaxcnn.inference.export import SPEC, describe_export

    run = {"run": str(model.run_dir), "checkpoint": model.checkpoint, "epoch": model.epoch, "ema_weights": model.ema}
    out_dir = pathlib.Path(out_dir)
    export_onnx(model, out_dir / ARTIFACT, input_layout=input_layout, batch_size=batch_size, metadata=run)
    spec = describe_export(model, batch_size, artifact=ARTIFACT,
                           format=f"ONNX (opset {OPSET}; run with onnxruntime or any ONNX runtime)")
    spec.update({"opset": OPSET, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "onnx": onnx.__version__})
    if input_layout == "nchw-float32":
        height, width, channels = model.input_shape
        spec["input"].update(shape=[batch_size, channels, height, width], dtype="float32", layout="NCHW",
                             note="images resized to the input size and normalized as preprocessing_outside says")
        spec["preprocessing_outside"]["normalize"] = spec.pop("preprocessing_inside")
        spec["preprocessing_inside"] = None
    (out_dir / SPEC).write_text(json.dumps(spec, indent=2) + "\n")
    return spec
