"""Optimizers and learning-rate schedules, with PyTorch's meaning for each setting.

- `sgd` (momentum, nesterov) and `adam` take `weight_decay` as torch does: L2 added to the
  gradient before the optimizer (`add_decayed_weights` first); `adamw` decays decoupled.
- Schedules are per optimizer update: `constant`; `cosine` to 0 at the last step; `step`
  multiplies by `gamma` at each milestone epoch (torch MultiStepLR); `onecycle` is torch's
  `OneCycleLR` (see `onecycle_schedule`); `plateau` keeps the LR constant and multiplies it by
  the `PlateauState` scale that `step_plateau` lowers once per epoch. `warmup_epochs` prepends
  a linear ramp from 0 to `learning_rate` to any of them but `onecycle` (which has its own).
- The learning rate is an injected hyperparameter (`optax.inject_hyperparams`), so the LR
  used by the last update can be read back from `opt_state` for logging.
- `clip_grad_norm` clips the raw gradient's global norm before weight decay and the optimizer
  (torch's `clip_grad_norm_` before `optimizer.step()`); `grad_accum_steps=K` wraps everything in
  `optax.MultiSteps`: K train steps average their gradients into one update (see
  `make_optimizer`).
"""

import collections
import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from jaxcnn.train.plateau import (
    PlateauConfig,
    find_plateau_state,
    scale_by_plateau,
    scheduled_learning_rate,
)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step", "onecycle", "plateau")


@dataclasses.dataclass(frozen=True)
class OneCycleConfig:
    """torch.optim.lr_scheduler.OneCycleLR arguments (anneal_strategy='cos', three_phase=False);
    its `max_lr` is the optimizer's `learning_rate`."""

    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self):
        if not 0.0 < self.pct_start < 1.0:
            raise ValueError(f"onecycle pct_start must be in (0, 1), got {self.pct_start}")
        if self.div_factor <= 0 or self.final_div_factor <= 0:
            raise ValueError(
                "onecycle div_factor and final_div_factor must be > 0, got "
                f"{self.div_factor}, {self.final_div_factor}"
            )


def onecycle_schedule(total_steps: int, max_lr: float, config: OneCycleConfig) -> optax.Schedule:
    """torch's OneCycleLR: cosine from max_lr / div_factor up to max_lr, reached at step
    pct_start * total_steps - 1, then cosine down to max_lr / div_factor / final_div_factor,
    reached at the last step, total_steps - 1 (then held).

    `optax.cosine_onecycle_schedule` is the same curve one step later with a truncated peak: it
    peaks at int(pct_start * total_steps) and ends at total_steps, where torch peaks at
    pct_start * total_steps - 1 (a float) and ends at total_steps - 1. The optax piece it is
    built from, `piecewise_interpolate_schedule('cosine', ...)`, interpolates exactly as torch's
    phases do (pct = (step - phase start) / (phase end - phase start)), so it is given torch's
    phase ends directly.
    """
    return optax.piecewise_interpolate_schedule(
        "cosine",
        max_lr / config.div_factor,
        {
            config.pct_start * total_steps - 1: config.div_factor,
            total_steps - 1: 1.0 / (config.div_factor * config.final_div_factor),
        },
    )


def make_schedule(
    name: str,
    *,
    learning_rate: float,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    onecycle: OneCycleConfig | None = None,
) -> optax.Schedule:
    """The scheduled LR as a function of the optimizer update (`plateau` is constant here).

    `steps_per_epoch` counts optimizer updates; `onecycle` (default `OneCycleConfig()`) applies
    to the 'onecycle' schedule only, whose peak LR is `learning_rate`.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    if learning_rate <= 0 or steps_per_epoch < 1 or epochs < 1:
        raise ValueError(
            "learning_rate must be > 0 and steps_per_epoch, epochs >= 1; got "
            f"{learning_rate}, {steps_per_epoch}, {epochs}"
        )
    if not 0 <= warmup_epochs < epochs:
        raise ValueError(f"warmup_epochs must be in [0, epochs={epochs}), got {warmup_epochs}")
    if milestones and name != "step":
        raise ValueError(f"milestones apply to the 'step' schedule only, not {name!r}")
    if name == "step" and (not milestones or any(int(m) != m or m < 1 for m in milestones)):
        raise ValueError(f"the 'step' schedule needs milestones (epochs >= 1), got {milestones!r}")
    if onecycle is not None and name != "onecycle":
        raise ValueError(f"onecycle settings apply to the 'onecycle' schedule only, not {name!r}")
    if name == "onecycle":
        if warmup_epochs:
            raise ValueError("the 'onecycle' schedule has its own warm-up (pct_start); use warmup_epochs=0")
        return onecycle_schedule(epochs * steps_per_epoch, learning_rate, onecycle or OneCycleConfig())

    warmup_steps = round(warmup_epochs * steps_per_epoch)  # a fractional epoch is fine
    if name == "cosine":
        after_warmup = optax.cosine_decay_schedule(
            learning_rate, decay_steps=epochs * steps_per_epoch - warmup_steps
        )
    elif name == "step":
        # Milestones count epochs from the start of training, like torch's MultiStepLR;
        # a repeated milestone applies gamma twice, as there.
        after_warmup = optax.piecewise_constant_schedule(
            learning_rate,
            {
                milestone * steps_per_epoch - warmup_steps: gamma**repeats
                for milestone, repeats in collections.Counter(milestones).items()
            },
        )
    else:
        after_warmup = optax.constant_schedule(learning_rate)
    if not warmup_steps:
        return after_warmup
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, after_warmup], [warmup_steps])


def make_optimizer(
    name: str,
    *,
    learning_rate: float,
    schedule: str = "constant",
    steps_per_epoch: int,
    epochs: int,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    warmup_epochs: float = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    plateau: PlateauConfig | None = None,
    onecycle: OneCycleConfig | None = None,
    clip_grad_norm: float | None = None,
    grad_accum_steps: int = 1,
) -> optax.GradientTransformation:
    """An optax optimizer `name` driven by the LR `schedule` (see the module docstring).

    `momentum` and `nesterov` apply to sgd only; `plateau` (default `PlateauConfig()`) to the
    'plateau' schedule only, `onecycle` to 'onecycle' only.

    `steps_per_epoch` counts train steps (batches). With `grad_accum_steps=K` the optimizer
    (clipping, decay, schedule, plateau scale: all of it) runs once per K train steps on the
    mean of their K gradients (`optax.MultiSteps`); in between it returns zero updates. The
    schedule therefore counts updates, `steps_per_epoch // K` per epoch, and K must divide
    `steps_per_epoch` so that every epoch ends on an update (its checkpoint and validation see
    no half-accumulated gradient).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if nesterov and (name != "sgd" or not momentum):
        raise ValueError("nesterov needs the 'sgd' optimizer with momentum > 0")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if plateau is not None and schedule != "plateau":
        raise ValueError(f"plateau settings apply to the 'plateau' schedule only, not {schedule!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0 (or None for no clipping), got {clip_grad_norm}")
    if int(grad_accum_steps) != grad_accum_steps or grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be an integer >= 1, got {grad_accum_steps}")
    if steps_per_epoch % grad_accum_steps:
        raise ValueError(
            f"grad_accum_steps={grad_accum_steps} must divide the {steps_per_epoch} train steps per "
            "epoch, so that every epoch ends on an optimizer update; choose another "
            "grad_accum_steps or batch size"
        )
    lr_schedule = make_schedule(
        schedule,
        learning_rate=learning_rate,
        steps_per_epoch=steps_per_epoch // grad_accum_steps,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        milestones=milestones,
        gamma=gamma,
        onecycle=onecycle,
    )

    def optimizer(learning_rate):
        if name == "adamw":
            return optax.adamw(learning_rate, weight_decay=weight_decay)
        if name == "adam":
            base = optax.adam(learning_rate)
        else:
            base = optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)
        return optax.chain(optax.add_decayed_weights(weight_decay), base) if weight_decay else base

    tx = optax.inject_hyperparams(optimizer)(learning_rate=lr_schedule)
    if clip_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx)
    if schedule == "plateau":
        tx = optax.chain(tx, scale_by_plateau((plateau or PlateauConfig()).mode))
    if grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=grad_accum_steps).gradient_transformation()
    return tx


def _is_multi_steps_state(node) -> bool:
    return isinstance(node, optax.MultiStepsState)


def optimizer_updates(opt_state: optax.OptState, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(whether the train step that produced `opt_state` applied an update, updates applied
    so far) -- for use inside the step, after `tx.update`; `step` is the new train-step count.

    Without gradient accumulation every train step is an update; with it (`optax.MultiSteps`)
    an update happens when its mini-step counter wraps to 0.
    """
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_multi_steps_state) if _is_multi_steps_state(s)]
    if not found:
        return jnp.asarray(True), step
    return found[0].mini_step == 0, found[0].gradient_step


def current_learning_rate(opt_state: optax.OptState) -> float:
    """The LR of the most recent update (before any: of the first), plateau scale included."""
    lr = scheduled_learning_rate(opt_state)
    plateau_state = find_plateau_state(opt_state)
    return lr if plateau_state is None else lr * float(plateau_state.scale)
