"""jaxcnn: classic image-classification CNNs trained with pure, sharded JAX functions.

    import jaxcnn
    model = jaxcnn.create_model("resnet20", num_classes=10)
    config = jaxcnn.RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {"name": "demo"}})
    jaxcnn.run(config)            # the whole `jaxcnn train` recipe; or: with jaxcnn.build(config) as run: ...
    jaxcnn.export_onnx(jaxcnn.load_run("runs/demo"), "demo.onnx")   # needs the `onnx` extra
"""

from jaxcnn.lazy import lazy_exports

__version__ = "0.1.0"

# name -> module; imported lazily, so that importing `jaxcnn.data` in a grain worker process does
# not pay for jax and flax. (No name here may be a submodule's: `jaxcnn.train` is the package.)
_EXPORTS = {
    "create_model": "jaxcnn.models",
    "list_models": "jaxcnn.models",
    "RunConfig": "jaxcnn.run_config",
    "build": "jaxcnn.builder",
    "build_training": "jaxcnn.builder",
    "run": "jaxcnn.experiment",
    "load_config": "jaxcnn.run_record",
    "load_run": "jaxcnn.inference",
    "TrainedModel": "jaxcnn.inference",
    "export_onnx": "jaxcnn.onnx_export",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__ = lazy_exports(__name__, _EXPORTS)
