"""The training state: everything a step needs, and everything exact resume needs."""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxcnn.train.ema import EmaConfig, EmaState, init_ema


class TrainState(struct.PyTreeNode):
    """Model variables, optimizer state, dropout/mixing RNG and the optional EMA as one pytree.

    `apply_fn` and `tx` are static (not leaves), so the state can be jitted, donated,
    sharded and checkpointed as a whole; restoring its leaves resumes a run exactly.
    """

    step: jax.Array  # int32 scalar: train steps (batches) taken, not updates (see optim.updates_per_epoch)
    params: Any
    batch_stats: Any  # {} for models without BatchNorm
    opt_state: optax.OptState  # holds the plateau scale when schedule == "plateau"
    rng: jax.Array  # split once per train step for dropout (and MixUp/CutMix)
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    ema: EmaState | None = None  # moving average of params and batch_stats, when configured

    def ema_view(self) -> "TrainState":
        """This state with the EMA's params and batch_stats in place of the model's: evaluate
        the average with the same compiled eval step."""
        if self.ema is None:
            raise ValueError("this TrainState keeps no EMA; create it with create_train_state(..., ema=EmaConfig())")
        return self.replace(params=self.ema.params, batch_stats=self.ema.batch_stats)


def create_train_state(
    rng: jax.Array,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    input_shape: tuple[int, int, int],
    *,
    ema: EmaConfig | None = None,
) -> TrainState:
    """Initialise `model` on a dummy (1, H, W, C) batch and `optimizer` on its params; with
    `ema`, also an average of params and batch_stats that starts as their copy.

    Init runs with train=False (BatchNorm uses, and creates, running statistics; no dropout
    rng is needed). `rng` may be a raw uint32 key or a typed key; it is stored as given.
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    init_rng, state_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    variables = jax.jit(lambda key: model.init({"params": key}, dummy, train=False))(init_rng)
    return train_state_from_variables(variables, state_rng, model, optimizer, ema=ema)


def train_state_from_variables(variables: dict, rng: jax.Array, model: nn.Module,
                               optimizer: optax.GradientTransformation, *,
                               ema: EmaConfig | None = None) -> TrainState:
    """The state of step 0 around `variables` ({"params", "batch_stats"}): the optimizer
    initialised on the params, `rng` for the steps. Works on shapes too (under `jax.eval_shape`)."""
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=optimizer.init(params),
        rng=rng,
        apply_fn=model.apply,
        tx=optimizer,
        ema=None if ema is None else init_ema(params, batch_stats, ema),
    )
