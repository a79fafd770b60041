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
  `optax.MultiSteps`: K train steps average their gradients into one update, the last update of
  an epoch the train steps left (see `make_optimizer`).
"""

import collections
import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxcnn.config import ConfigError, check_choice, check_float, check_int, option
from jaxcnn.train.onecycle import OneCycleConfig, onecycle_momentum_schedule, onecycle_schedule
from jaxcnn.train.plateau import (
    PlateauConfig,
    find_plateau_state,
    scale_by_plateau,
    scheduled_learning_rate,
)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step", "onecycle", "plateau")


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
    onecycle: OneCycleConfig = option(OneCycleConfig(), "onecycle schedule settings", flag="--onecycle-")
    clip_grad_norm: float | None = option(None, "clip the global gradient norm to this before weight decay "
                                                "and the optimizer (torch clip_grad_norm_)")
    grad_accum_steps: int = option(1, "average the gradients of this many batches into one update "
                                      "(optax.MultiSteps); an epoch's last update averages the batches left")

    def __post_init__(self):
        check_choice("name", self.name, OPTIMIZERS)
        check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_float("momentum", self.momentum, low=0.0)
        check_float("weight_decay", self.weight_decay, low=0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_float("warmup_epochs", self.warmup_epochs, low=0.0)
        check_float("gamma", self.gamma, low=0.0, low_open=True)
        cycle_momentum = self.schedule == "onecycle" and self.onecycle.cycle_momentum
        if self.nesterov and (self.name != "sgd" or not (self.momentum or cycle_momentum)):
            raise ConfigError("nesterov", "needs the 'sgd' optimizer with momentum > 0")
        if cycle_momentum and self.name != "sgd":
            raise ConfigError("onecycle.cycle_momentum", f"applies to the 'sgd' optimizer only, not {self.name!r}")
        if self.schedule == "onecycle" and self.warmup_epochs:
            raise ConfigError("warmup_epochs", "the 'onecycle' schedule has its own warm-up (onecycle.pct_start); use 0")
        check_float("clip_grad_norm", self.clip_grad_norm, low=0.0, low_open=True, optional=True)
        check_int("grad_accum_steps", self.grad_accum_steps, minimum=1)
        for milestone in self.milestones:
            check_int("milestones", milestone, minimum=1)
        if self.milestones and self.schedule != "step":
            raise ConfigError("milestones", f"apply to the 'step' schedule only, not {self.schedule!r}")
        if self.schedule == "step" and not self.milestones:
            raise ConfigError("milestones", "the 'step' schedule needs milestones (epochs >= 1)")


def make_optimizer(config: OptimConfig, *, steps_per_epoch: int, epochs: int,
                   groups: Callable[[Callable[[], optax.GradientTransformation]], optax.GradientTransformation]
                   | None = None) -> optax.GradientTransformation:
    """The optax optimizer of `config` (see the module docstring), its LR schedule laid over
    `epochs` of `steps_per_epoch` train steps (batches).

    With `grad_accum_steps=K` the optimizer (clipping, decay, schedule, plateau scale: all of it)
    runs on the mean of several train steps' gradients (`optax.MultiSteps`); in between it
    returns zero updates. As in timm, an epoch of S train steps makes U = ceil(S / K) updates
    (`updates_per_epoch`): each averages K train steps' gradients but the epoch's last, which
    averages the S - K*(U-1) left (all S when K >= S). Every epoch thus ends on an update (its checkpoint and validation
    see no half-accumulated gradient, and a resumed run continues exactly), and the schedule
    counts updates, U per epoch. The gradients are each a masked mean over their batch, so K
    full batches average exactly as one batch of K*B; a batch holding masked slots (read
    failures) weighs in as a whole batch.

    `groups` (e.g. `jaxcnn.train.finetune.backbone_groups`) combines copies of the optimizer
    proper (SGD / Adam / AdamW with its weight decay) into one, e.g. per parameter group; they
    share the schedule, the clipping, the plateau scale and the accumulation around them.
    """
    accumulate = config.grad_accum_steps
    onecycle = config.onecycle if config.schedule == "onecycle" else None
    cycle_momentum = onecycle is not None and onecycle.cycle_momentum
    updates = updates_per_epoch(steps_per_epoch, accumulate)
    hyperparams = {
        "learning_rate": make_schedule(
            config.schedule, learning_rate=config.learning_rate, steps_per_epoch=updates,
            epochs=epochs, warmup_epochs=config.warmup_epochs, milestones=config.milestones,
            gamma=config.gamma, onecycle=onecycle,
        )
    }
    if cycle_momentum:
        hyperparams["momentum"] = onecycle_momentum_schedule(epochs * updates, onecycle)

    def grouped(learning_rate, momentum):
        if groups is None:
            return _base_optimizer(config, learning_rate, momentum)
        return groups(lambda: _base_optimizer(config, learning_rate, momentum))

    def optimizer(learning_rate):
        return grouped(learning_rate, config.momentum or None)

    def cycled_momentum_optimizer(learning_rate, momentum):
        return grouped(learning_rate, momentum)

    tx = optax.inject_hyperparams(cycled_momentum_optimizer if cycle_momentum else optimizer)(**hyperparams)
    if config.clip_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.clip_grad_norm), tx)
    if config.schedule == "plateau":
        tx = optax.chain(tx, scale_by_plateau(config.plateau.mode))
    if accumulate > 1:
        micro_steps = _micro_steps_per_update(steps_per_epoch, accumulate)
        tx = optax.MultiSteps(tx, every_k_schedule=micro_steps).gradient_transformation()
    return tx


def updates_per_epoch(steps_per_epoch: int, grad_accum_steps: int) -> int:
    """Optimizer updates in an epoch of `steps_per_epoch` train steps: ceil(S / K), the last
    one over the train steps left."""
    return math.ceil(steps_per_epoch / grad_accum_steps)


def _micro_steps_per_update(steps_per_epoch: int, accumulate: int) -> Callable[[jax.Array], jax.Array]:
    """MultiSteps' `every_k_schedule`: the train steps averaged into update `g` (counted from 0
    over the whole run), `accumulate` but for each epoch's last update, which takes those left.

    optax 0.2.8's MultiSteps evaluates this with its `gradient_step` (updates applied so far),
    which moves only when an update is emitted, so k holds through each accumulation; it emits
    when `mini_step == k - 1`, then resets `mini_step` and the accumulator to 0; the accumulator
    is a running mean (acc + (grad - acc) / (mini_step + 1)), so an update of k micro-steps
    averages exactly those k gradients, whatever k is.
    """
    updates = updates_per_epoch(steps_per_epoch, accumulate)
    last = steps_per_epoch - accumulate * (updates - 1)

    def micro_steps(gradient_step: jax.Array) -> jax.Array:
        return jnp.where(gradient_step % updates < updates - 1, accumulate, last)

    return micro_steps


def _base_optimizer(config: OptimConfig, learning_rate, momentum) -> optax.GradientTransformation:
    """torch's SGD/Adam (L2 added to the gradient first) or AdamW (decoupled decay); `momentum`
    None: plain SGD without a trace."""
    if config.name == "adamw":
        return optax.adamw(learning_rate, weight_decay=config.weight_decay)
    if config.name == "adam":
        base = optax.adam(learning_rate)
    else:
        base = optax.sgd(learning_rate, momentum=momentum, nesterov=config.nesterov)
    return optax.chain(optax.add_decayed_weights(config.weight_decay), base) if config.weight_decay else base


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
