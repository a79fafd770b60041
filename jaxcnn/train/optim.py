"""Optimizers and learning-rate schedules, with PyTorch's meaning for each setting.

- `sgd` (momentum, nesterov) and `adam` take `weight_decay` as torch does: L2 added to the
  gradient before the optimizer (`add_decayed_weights` first); `adamw` decays decoupled.
- Schedules are per optimizer update: `constant`; `cosine` to 0 at the last step; `step`
  multiplies by `gamma` at each milestone epoch (torch MultiStepLR); `onecycle` is torch's
  `OneCycleLR` (`OneCycleConfig`; momentum cycling optional, sgd only); `plateau` keeps the LR
  constant and multiplies it by the `PlateauState` scale that `step_plateau` lowers once per
  epoch. `warmup_epochs` prepends a linear ramp from 0 to `learning_rate` to any of them but
  `onecycle` (which has its own).
- The learning rate is an injected hyperparameter (`optax.inject_hyperparams`), so the LR
  used by the last update can be read back from `opt_state` for logging.
- `clip_grad_norm` clips the raw gradient's global norm before weight decay and the optimizer
  (torch's `clip_grad_norm_` before `optimizer.step()`; optax scales by max_norm / norm, torch
  by max_norm / (norm + 1e-6): a relative difference of 1e-6 / norm); `grad_accum_steps=K` wraps everything in
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
    its `max_lr` is the optimizer's `learning_rate`.

    `cycle_momentum` (sgd only) cycles the momentum inversely to the LR, from `max_momentum`
    down to `base_momentum` and back, in place of the optimizer's `momentum` -- torch's default
    (True) for SGD; here it is off by default, so that the optimizer's momentum (or Adam's
    beta1, which torch would cycle too) stays as set.
    """

    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    cycle_momentum: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self):
        if not 0.0 < self.pct_start < 1.0:
            raise ValueError(f"onecycle pct_start must be in (0, 1), got {self.pct_start}")
        if self.div_factor <= 0 or self.final_div_factor <= 0:
            raise ValueError(
                "onecycle div_factor and final_div_factor must be > 0, got "
                f"{self.div_factor}, {self.final_div_factor}"
            )
        if not 0.0 < self.base_momentum <= self.max_momentum < 1.0:
            raise ValueError(
                "onecycle momenta must satisfy 0 < base_momentum <= max_momentum < 1, got "
                f"{self.base_momentum}, {self.max_momentum}"
            )


def _onecycle_phases(total_steps: int, config: OneCycleConfig, start, peak, end) -> optax.Schedule:
    """Cosine from `start` to `peak` at step pct_start * total_steps - 1, then to `end` at step
    total_steps - 1 (then held): torch OneCycleLR's two phases, with its float phase ends.

    `optax.cosine_onecycle_schedule` peaks one step later, at int(pct_start * total_steps), and
    ends one step later, at total_steps. The optax piece it is built from,
    `piecewise_interpolate_schedule('cosine', ...)`, interpolates exactly as torch's phases do
    (pct = (step - phase start) / (phase end - phase start)), so it is given torch's phase ends.
    """
    return optax.piecewise_interpolate_schedule(
        "cosine", start, {config.pct_start * total_steps - 1: peak / start, total_steps - 1: end / peak}
    )


def onecycle_schedule(total_steps: int, max_lr: float, config: OneCycleConfig) -> optax.Schedule:
    """torch's OneCycleLR learning rate: max_lr / div_factor -> max_lr -> that / final_div_factor."""
    initial = max_lr / config.div_factor
    return _onecycle_phases(total_steps, config, initial, max_lr, initial / config.final_div_factor)


def onecycle_momentum_schedule(total_steps: int, config: OneCycleConfig) -> optax.Schedule:
    """torch's OneCycleLR momentum (cycle_momentum=True): max -> base -> max momentum."""
    return _onecycle_phases(total_steps, config, config.max_momentum, config.base_momentum, config.max_momentum)


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

    `momentum` and `nesterov` apply to sgd only (a `onecycle` with `cycle_momentum` replaces
    `momentum` by its cycle, as torch does); `plateau` (default `PlateauConfig()`) applies to the
    'plateau' schedule only, `onecycle` (default `OneCycleConfig()`) to 'onecycle' only.

    `steps_per_epoch` counts train steps (batches). With `grad_accum_steps=K` the optimizer
    (clipping, decay, schedule, plateau scale: all of it) runs once per K train steps on the
    mean of their K gradients (`optax.MultiSteps`); in between it returns zero updates. The
    schedule therefore counts updates, `steps_per_epoch // K` per epoch, and K must divide
    `steps_per_epoch` so that every epoch ends on an update (its checkpoint and validation see
    no half-accumulated gradient). The K gradients are each a masked mean over their batch, so
    K full batches average exactly as one batch of K*B; a batch holding masked slots (read
    failures) weighs in as a whole batch.
    """
    cycle_momentum = onecycle is not None and onecycle.cycle_momentum
    _check_optimizer_settings(
        name, nesterov=nesterov, momentum=momentum, cycle_momentum=cycle_momentum, weight_decay=weight_decay,
        schedule=schedule, plateau=plateau, clip_grad_norm=clip_grad_norm, grad_accum_steps=grad_accum_steps,
        steps_per_epoch=steps_per_epoch,
    )
    updates_per_epoch = steps_per_epoch // grad_accum_steps
    hyperparams = {
        "learning_rate": make_schedule(
            schedule, learning_rate=learning_rate, steps_per_epoch=updates_per_epoch, epochs=epochs,
            warmup_epochs=warmup_epochs, milestones=milestones, gamma=gamma, onecycle=onecycle,
        )
    }
    if cycle_momentum:
        hyperparams["momentum"] = onecycle_momentum_schedule(epochs * updates_per_epoch, onecycle)

    def optimizer(learning_rate):
        return _base_optimizer(name, learning_rate, momentum or None, nesterov, weight_decay)

    def cycled_momentum_optimizer(learning_rate, momentum):
        return _base_optimizer(name, learning_rate, momentum, nesterov, weight_decay)

    tx = optax.inject_hyperparams(cycled_momentum_optimizer if cycle_momentum else optimizer)(**hyperparams)
    if clip_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx)
    if schedule == "plateau":
        tx = optax.chain(tx, scale_by_plateau((plateau or PlateauConfig()).mode))
    if grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=grad_accum_steps).gradient_transformation()
    return tx


def _base_optimizer(name, learning_rate, momentum, nesterov, weight_decay) -> optax.GradientTransformation:
    """torch's SGD/Adam (L2 added to the gradient first) or AdamW (decoupled decay); `momentum`
    None: plain SGD without a trace."""
    if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay)
    if name == "adam":
        base = optax.adam(learning_rate)
    else:
        base = optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)
    return optax.chain(optax.add_decayed_weights(weight_decay), base) if weight_decay else base


def _check_optimizer_settings(
    name, *, nesterov, momentum, cycle_momentum, weight_decay, schedule, plateau, clip_grad_norm,
    grad_accum_steps, steps_per_epoch,
) -> None:
    """`make_optimizer`'s settings that the schedule does not check: one clear message each."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if nesterov and (name != "sgd" or not (momentum or cycle_momentum)):
        raise ValueError("nesterov needs the 'sgd' optimizer with momentum > 0")
    if cycle_momentum and name != "sgd":
        raise ValueError(f"onecycle cycle_momentum applies to the 'sgd' optimizer only, not {name!r}")
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
