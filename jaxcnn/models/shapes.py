"""A model's variables as shapes: the one trace of `model.init` that everything else reads.

The training state, the head/backbone split of fine-tuning, the inference restore target, the
torch key layout and `compare`'s parameter count all start from these shapes, so they cannot
disagree about what a model holds. Nothing is computed (`jax.eval_shape`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def abstract_variables(model: nn.Module, input_shape: tuple[int, int, int]) -> dict:
    """`{"params": ..., "batch_stats": ...}` of `model` for (height, width, channels) inputs, as
    `jax.ShapeDtypeStruct`s ({} batch_stats for models without BatchNorm). Initialized in
    evaluation mode (BatchNorm creates its running statistics, no dropout key is needed)."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    dummy = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), dummy)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def parameter_count(variables: dict) -> int:
    """The number of trainable parameters in `variables` (arrays or shapes)."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"])))
