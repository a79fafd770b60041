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
import dataclasses
from typing import Sequence

import optax

from jaxcnn.config import ConfigError, check_choice, check_float, check_int, option
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


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimizer and its LR schedule. Defaults: the cat-and-dog tutorial's Adam 1e-4 with
    ReduceLROnPlateau(factor 0.1, patience 4) on the validation loss."""

    name: str = option("adam", "optimizer", flag="--optimizer", choices=OPTIMIZERS)
    learning_rate: float = option(1e-4, "(initial, or peak) learning rate", flag="--lr")
    momentum: float = option(0.9, "SGD momentum")
    nesterov: bool = option(False, "SGD with Nesterov momentum")
    weight_decay: float = option(0.0, "L2 penalty as torch's weight_decay (decoupled for adamw)")
    schedule: str = option("plateau", "LR schedule; plateau = torch ReduceLROnPlateau, checked once per epoch",
                           choices=SCHEDULES)
    warmup_epochs: float = option(0.0, "linear warm-up from 0 over this many epochs (any schedule)")
    milestones: tuple[int, ...] = option((), "step schedule: epochs at which the LR is multiplied by gamma, "
                                             "e.g. 100,150", metavar="E1,E2,...")
    gamma: float = option(0.1, "step schedule: LR factor at each milestone")
    plateau: PlateauConfig = option(PlateauConfig(patience=4), "plateau schedule settings", flag="--plateau-")

    def __post_init__(self):
        check_choice("name", self.name, OPTIMIZERS)
        check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_float("momentum", self.momentum, low=0.0)
        check_float("weight_decay", self.weight_decay, low=0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_float("warmup_epochs", self.warmup_epochs, low=0.0)
        check_float("gamma", self.gamma, low=0.0, low_open=True)
        if self.nesterov and (self.name != "sgd" or not self.momentum):
            raise ConfigError("nesterov", "needs the 'sgd' optimizer with momentum > 0")
        for milestone in self.milestones:
            check_int("milestones", milestone, minimum=1)
        if self.milestones and self.schedule != "step":
            raise ConfigError("milestones", f"apply to the 'step' schedule only, not {self.schedule!r}")
        if self.schedule == "step" and not self.milestones:
            raise ConfigError("milestones", "the 'step' schedule needs milestones (epochs >= 1)")


def make_optimizer(config: OptimConfig, *, steps_per_epoch: int, epochs: int) -> optax.GradientTransformation:
    """The optax optimizer of `config`, its LR schedule laid over `epochs` of `steps_per_epoch`
    updates (see the module docstring)."""
    lr_schedule = make_schedule(
        config.schedule,
        learning_rate=config.learning_rate,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        warmup_epochs=config.warmup_epochs,
        milestones=config.milestones,
        gamma=config.gamma,
    )

    def optimizer(learning_rate):
        if config.name == "adamw":
            return optax.adamw(learning_rate, weight_decay=config.weight_decay)
        if config.name == "adam":
            base = optax.adam(learning_rate)
        else:
            base = optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov)
        return optax.chain(optax.add_decayed_weights(config.weight_decay), base) if config.weight_decay else base

    tx = optax.inject_hyperparams(optimizer)(learning_rate=lr_schedule)
    if config.schedule == "plateau":
        tx = optax.chain(tx, scale_by_plateau(config.plateau.mode))
    return tx


def current_learning_rate(opt_state: optax.OptState) -> float:
    """The LR of the most recent update (before any: of the first), plateau scale included."""
    lr = scheduled_learning_rate(opt_state)
    plateau_state = find_plateau_state(opt_state)
    return lr if plateau_state is None else lr * float(plateau_state.scale)
