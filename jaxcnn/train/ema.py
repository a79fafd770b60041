"""An exponential moving average of the parameters and BatchNorm statistics, as timm's ModelEmaV3.

The average lives inside the `TrainState` (`state.ema`), is updated by the train step after each
optimizer update, and is checkpointed with the rest of the state, so a resumed run continues
the same average. Evaluate it with `state.ema_view()` and the usual compiled eval step.

Why not `optax.ema`: it averages the *updates* it is given with one fixed decay; here the
average is of the parameters and the BatchNorm statistics (which no optimizer sees), with
timm's warm-up of the decay. The blend itself is optax's `incremental_update`.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@dataclasses.dataclass(frozen=True)
class EmaConfig:
    """timm `ModelEmaV3(decay, use_warmup, warmup_power, warmup_gamma, min_decay)`, updated with
    the optimizer-update count as timm's train script does (`update(model, step=num_updates)`)."""

    decay: float = 0.9998
    use_warmup: bool = False
    warmup_power: float = 2 / 3
    warmup_gamma: float = 1.0
    min_decay: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.min_decay <= self.decay <= 1.0:
            raise ValueError(
                f"EMA decays must satisfy 0 <= min_decay <= decay <= 1, got min_decay="
                f"{self.min_decay}, decay={self.decay}"
            )
        if self.warmup_power <= 0 or self.warmup_gamma <= 0:
            raise ValueError(
                f"EMA warmup_power and warmup_gamma must be > 0, got {self.warmup_power}, {self.warmup_gamma}"
            )

    def decay_at(self, update: jax.Array) -> jax.Array:
        """The decay used by the `update`-th optimizer update (1-based), as timm's `get_decay`:
        0 at the first (the average starts as a copy), then `decay`, or with warm-up
        max(min_decay, min(decay, 1 - (1 + t / gamma) ** -power)) with t = update - 1."""
        t = jnp.maximum(jnp.asarray(update, jnp.float32) - 1.0, 0.0)
        if self.use_warmup:
            warm = 1.0 - (1.0 + t / self.warmup_gamma) ** -self.warmup_power
            decay = jnp.maximum(jnp.minimum(warm, self.decay), self.min_decay)
        else:
            decay = jnp.asarray(self.decay, jnp.float32)
        return jnp.where(t <= 0, 0.0, decay)


class EmaState(struct.PyTreeNode):
    """The averaged `params` and `batch_stats`; `config` is static (not a leaf)."""

    params: Any
    batch_stats: Any
    config: EmaConfig = struct.field(pytree_node=False)


def init_ema(params, batch_stats, config: EmaConfig) -> EmaState:
    """An average that starts as a copy of the model (as timm's deepcopy)."""
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731 - own buffers, so donation is safe
    return EmaState(params=copy(params), batch_stats=copy(batch_stats), config=config)


def update_ema(ema: EmaState, params, batch_stats, *, applied: jax.Array, update: jax.Array) -> EmaState:
    """Blend the model into the average: `decay * average + (1 - decay) * model`, with the decay
    of optimizer update number `update`; unchanged when this train step `applied` no update (a
    gradient-accumulation micro-step). Decay 0 gives the model itself, bit for bit."""
    decay = ema.config.decay_at(update)

    def blend(average, model):
        mixed = optax.incremental_update(model, average, (1.0 - decay).astype(average.dtype))
        return jnp.where(applied, mixed, average)

    return ema.replace(
        params=jax.tree.map(blend, ema.params, params),
        batch_stats=jax.tree.map(blend, ema.batch_stats, batch_stats),
    )
