"""Using a trained run: `load_run` (a `TrainedModel` that predicts), evaluation, prediction on
files, export to a serialized `jax.export` artifact, and comparison of runs."""

from jaxcnn.lazy import lazy_exports

# imported on first use: `jaxcnn.inference.inputs` (the input contract) is read without the model
_EXPORTS = {"InputSpec": "jaxcnn.inference.inputs", "TrainedModel": "jaxcnn.inference.run",
            "load_run": "jaxcnn.inference.run"}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
