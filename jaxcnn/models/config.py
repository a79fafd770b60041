"""`ModelConfig`: which network to build, with which options and computation dtype."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from jaxcnn.config import ConfigError, check_choice, option
from jaxcnn.models.registry import create_model, list_models, model_options

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str | None = option(None, "model (required)", choices=list_models())
    options: dict[str, Any] = option(
        default_factory=dict, flag="--model-opt", metavar="KEY=VALUE",
        help="model option, repeatable; e.g. stem=cifar (ResNet-18..152 on 32 px), head=classic (VGG), "
             "aux_logits=False (GoogLeNet)")
    dtype: str = option("float32", "computation dtype (parameters and optimizer state stay float32)",
                        choices=DTYPES)

    def __post_init__(self):
        check_choice("arch", self.arch, list_models(), optional=True)
        check_choice("dtype", self.dtype, DTYPES)
        if not isinstance(self.options, dict):
            raise ConfigError("options", f"must be a mapping of option names to values, got {self.options!r}")
        if self.arch is not None:
            valid = model_options(self.arch)
            for name in self.options:
                if name in ("dtype", "num_classes"):
                    raise ConfigError("options", f"{name!r} is set by its own option, not a model option")
                check_choice("options", name, valid)

    def build(self, num_classes: int):
        """The Flax module for `num_classes` classes."""
        if self.arch is None:
            raise ConfigError("arch", "is required")
        return create_model(self.arch, num_classes, dtype=jnp.dtype(self.dtype), **self.options)
