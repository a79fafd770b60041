"""The training state: everything a step needs, and everything exact resume needs."""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Model variables, optimizer state and dropout RNG as one pytree.

    `apply_fn` and `tx` are static (not leaves), so the state can be jitted, donated,
    sharded and checkpointed as a whole; restoring its leaves resumes a run exactly.
    """

    step: jax.Array  # int32 scalar: optimizer updates applied so far
    params: Any
    batch_stats: Any  # {} for models without BatchNorm
    opt_state: optax.OptState  # holds the plateau scale when schedule == "plateau"
    rng: jax.Array  # split once per train step for dropout
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)


def create_train_state(
    rng: jax.Array,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    input_shape: tuple[int, int, int],
) -> TrainState:
    """Initialise `model` on a dummy (1, H, W, C) batch and `optimizer` on its params.

    Init runs with train=False (BatchNorm uses, and creates, running statistics; no dropout
    rng is needed). `rng` may be a raw uint32 key or a typed key; it is stored as given.
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    init_rng, state_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    variables = jax.jit(lambda key: model.init({"params": key}, dummy, train=False))(init_rng)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(params),
        rng=state_rng,
        apply_fn=model.apply,
        tx=optimizer,
    )
