"""Reduce the learning rate on a plateau, with torch `ReduceLROnPlateau` semantics.

Two halves: `scale_by_plateau` is an optax transformation whose state (a `PlateauState` of
arrays, so it is checkpointed with the rest of `opt_state`) carries the LR scale; inside the
jitted step it only multiplies the updates by that scale. `step_plateau` runs host-side once
per epoch with the validation metric and rewrites that state.

Why not `optax.contrib.reduce_on_plateau` itself: its state update is optax's rule, not
torch's, and two of the differences cannot be mapped away by choosing its arguments:
- it is minimise-only; negating a max-mode metric turns torch's `m > best * (1 + threshold)`
  into `m > best * (1 - threshold)`, so an epoch that merely repeats the best accuracy would
  count as an improvement and a flat accuracy plateau would never reduce the LR;
- it rejects threshold == 0 (rtol = atol = 0), which torch allows.
The rest would map (torch `num_bad_epochs > patience` == optax `plateau_count == patience + 1`;
torch `min_lr` == optax `min_scale = min_lr / lr`; cooldown and the best-value update agree),
but a rule split between optax's min mode and our own max mode is worse than torch's rule
written once, below, line for line (~20 lines, host-side, in float64 like torch's).
"""

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcnn.config import check_choice, check_float, check_int, option
from jaxcnn.train.metrics import METRIC_MODES, metric_mode

# torch's ReduceLROnPlateau(eps=1e-8): a reduction smaller than this (in LR units) is skipped.
_MIN_LR_CHANGE = 1e-8


@dataclasses.dataclass(frozen=True)
class PlateauConfig:
    """torch.optim.lr_scheduler.ReduceLROnPlateau arguments (threshold_mode='rel'), and the metric
    it watches; torch's `mode` follows from the metric (max for accuracies, min for losses)."""

    metric: str = option("val_loss", "metric the plateau schedule watches", choices=list(METRIC_MODES))
    factor: float = option(0.1, "LR multiplier at each reduction")
    patience: int = option(10, "epochs without improvement tolerated before reducing (torch semantics)")
    threshold: float = option(1e-4, "relative improvement that counts")
    cooldown: int = option(0, "epochs to wait after a reduction")
    min_lr: float = option(0.0, "LR floor")

    def __post_init__(self):
        check_choice("metric", self.metric, METRIC_MODES)
        check_float("factor", self.factor, low=0.0, high=1.0, low_open=True, high_open=True)
        check_int("patience", self.patience, minimum=0)
        check_int("cooldown", self.cooldown, minimum=0)
        check_float("threshold", self.threshold, low=0.0)
        check_float("min_lr", self.min_lr, low=0.0)

    @property
    def mode(self) -> Literal["min", "max"]:
        return metric_mode(self.metric)


class PlateauState(NamedTuple):
    """torch ReduceLROnPlateau's bookkeeping; the LR in use is (scheduled LR) * scale."""

    scale: jax.Array  # float32
    best: jax.Array  # float32; +inf (min mode) or -inf (max mode) before the first epoch
    num_bad_epochs: jax.Array  # int32
    cooldown_counter: jax.Array  # int32


def scale_by_plateau(mode: Literal["min", "max"] = "min") -> optax.GradientTransformation:
    """Multiply updates by the plateau scale; the state only changes in `step_plateau`."""

    def init_fn(params):
        del params
        return PlateauState(
            scale=jnp.ones((), jnp.float32),
            best=jnp.asarray(jnp.inf if mode == "min" else -jnp.inf, jnp.float32),
            num_bad_epochs=jnp.zeros((), jnp.int32),
            cooldown_counter=jnp.zeros((), jnp.int32),
        )

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def _is_plateau_state(node) -> bool:
    return isinstance(node, PlateauState)


def find_plateau_state(opt_state) -> PlateauState | None:
    """The `PlateauState` inside `opt_state`, or None when there is none."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau_state) if _is_plateau_state(s)]
    return found[0] if found else None


def scheduled_learning_rate(opt_state) -> float:
    """The `learning_rate` hyperparameter injected by `make_optimizer` (before the plateau
    scale): the value the schedule gave the most recent update."""
    return float(optax.tree.get(opt_state, "hyperparams")["learning_rate"])


def _is_better(metric: float, best: float, config: PlateauConfig) -> bool:
    # torch `_is_better` with threshold_mode="rel"; NaN is never better.
    if config.mode == "min":
        return metric < best * (1.0 - config.threshold)
    return metric > best * (1.0 + config.threshold)


def step_plateau(opt_state, metric: float, config: PlateauConfig) -> tuple[optax.OptState, bool]:
    """Feed one epoch's metric; returns the new opt_state and whether the LR was reduced.

    `config` must be the one given to `make_optimizer` (its mode set the initial `best`).

    Follows torch's `ReduceLROnPlateau.step` exactly (in float64 on the host; `best` is kept
    in float32). The LR it reduces is the scheduled LR now in use (the `learning_rate`
    hyperparameter that `make_optimizer` injects) times the current scale.
    """
    state = find_plateau_state(opt_state)
    if state is None:
        raise ValueError("step_plateau needs an optimizer made with schedule='plateau'")
    metric = float(metric)
    best, scale = float(state.best), float(state.scale)
    num_bad, cooldown = int(state.num_bad_epochs), int(state.cooldown_counter)

    if _is_better(metric, best, config):
        best, num_bad = metric, 0
    else:
        num_bad += 1
    if cooldown > 0:  # torch: ignore bad epochs while cooling down
        cooldown -= 1
        num_bad = 0

    reduced = False
    if num_bad > config.patience:
        scheduled_lr = scheduled_learning_rate(opt_state)
        old_lr = scheduled_lr * scale
        new_lr = max(old_lr * config.factor, config.min_lr)
        if old_lr - new_lr > _MIN_LR_CHANGE:
            scale = new_lr / scheduled_lr
            reduced = True
        cooldown, num_bad = config.cooldown, 0

    new_state = PlateauState(
        scale=_like(state.scale, scale),
        best=_like(state.best, best),
        num_bad_epochs=_like(state.num_bad_epochs, num_bad),
        cooldown_counter=_like(state.cooldown_counter, cooldown),
    )
    opt_state = jax.tree.map(
        lambda s: new_state if _is_plateau_state(s) else s, opt_state, is_leaf=_is_plateau_state
    )
    return opt_state, reduced


def _like(old: jax.Array, value) -> jax.Array:
    """`value` with `old`'s dtype, on `old`'s devices and sharding (so jit sees no change).
    Not `jax.device_put`: in a multi-process run the sharding spans other processes' devices."""
    new = jnp.asarray(value, dtype=old.dtype)
    if not isinstance(old, jax.Array):
        return new
    return jax.make_array_from_callback(new.shape, old.sharding, lambda index: new[index])
