"""Optimizers and learning-rate schedules, with PyTorch's meaning for each setting.

- `sgd` (momentum, nesterov) and `adam` take `weight_decay` as torch does: L2 added to the
  gradient before the optimizer (`add_decayed_weights` first); `adamw` decays decoupled.
- Schedules are per step: `constant`; `cosine` to 0 at the last step; `step` multiplies by
  `gamma` at each milestone epoch (torch MultiStepLR); `plateau` keeps the LR constant and
  multiplies it by the `PlateauState` scale that `step_plateau` lowers once per epoch.
  `warmup_epochs` prepends a linear ramp from 0 to `learning_rate` to any of them.
- The learning rate is an injected hyperparameter (`optax.inject_hyperparams`), so the LR
  used by the last update can be read back from `opt_state` for logging.
"""

import collections
from typing import Sequence

import optax

from jaxcnn.train.plateau import (
    PlateauConfig,
    find_plateau_state,
    scale_by_plateau,
    scheduled_learning_rate,
)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step", "plateau")


def make_schedule(
    name: str,
    *,
    learning_rate: float,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> optax.Schedule:
    """The scheduled LR as a function of the optimizer step (`plateau` is constant here)."""
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
) -> optax.GradientTransformation:
    """An optax optimizer `name` driven by the LR `schedule` (see the module docstring).

    `momentum` and `nesterov` apply to sgd only; `plateau` (default `PlateauConfig()`) to the
    'plateau' schedule only.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if nesterov and (name != "sgd" or not momentum):
        raise ValueError("nesterov needs the 'sgd' optimizer with momentum > 0")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if plateau is not None and schedule != "plateau":
        raise ValueError(f"plateau settings apply to the 'plateau' schedule only, not {schedule!r}")
    lr_schedule = make_schedule(
        schedule,
        learning_rate=learning_rate,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        milestones=milestones,
        gamma=gamma,
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
    if schedule == "plateau":
        tx = optax.chain(tx, scale_by_plateau((plateau or PlateauConfig()).mode))
    return tx


def current_learning_rate(opt_state: optax.OptState) -> float:
    """The LR of the most recent update (before any: of the first), plateau scale included."""
    lr = scheduled_learning_rate(opt_state)
    plateau_state = find_plateau_state(opt_state)
    return lr if plateau_state is None else lr * float(plateau_state.scale)
