"""jaxcnn: classic image-classification CNNs trained with pure, sharded JAX functions.

    import jaxcnn
    model = jaxcnn.create_model("resnet20", num_classes=10)
"""

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name):
    # Lazy, so that importing `jaxcnn.data` in a grain worker process does not pay for jax and flax.
    if name in ("create_model", "list_models"):
        from jaxcnn import models

        return getattr(models, name)
    raise AttributeError(f"module 'jaxcnn' has no attribute {name!r}")
