"""Using a trained run: `load_run` (a `TrainedModel` that predicts), evaluation, prediction on
files, export to a serialized `jax.export` artifact, and comparison of runs."""

from jaxcnn.inference.inputs import InputSpec
from jaxcnn.inference.run import TrainedModel, load_run

__all__ = ["InputSpec", "TrainedModel", "load_run"]
