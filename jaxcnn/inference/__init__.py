"""Using a trained run: `load_run` (a `TrainedModel` that predicts), evaluation, prediction on
files, export to a serialized `jax.export` artifact, and comparison of runs."""

import importlib

# imported on first use: `jaxcnn.inference.inputs` (the input contract) is read without the model
_EXPORTS = {"InputSpec": "jaxcnn.inference.inputs", "TrainedModel": "jaxcnn.inference.run",
            "load_run": "jaxcnn.inference.run"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxcnn.inference' has no attribute {name!r}")
