"""torch's `OneCycleLR` as optax schedules: the learning rate and (optionally) the momentum."""

import dataclasses

import optax

from jaxcnn.config import check_float, option


@dataclasses.dataclass(frozen=True)
class OneCycleConfig:
    """torch.optim.lr_scheduler.OneCycleLR arguments (anneal_strategy='cos', three_phase=False);
    its `max_lr` is the optimizer's `learning_rate`.

    `cycle_momentum` (sgd only) cycles the momentum inversely to the LR, from `max_momentum`
    down to `base_momentum` and back, in place of the optimizer's `momentum` -- torch's default
    (True) for SGD; here it is off by default, so that the optimizer's momentum (or Adam's
    beta1, which torch would cycle too) stays as set.
    """

    pct_start: float = option(0.3, "onecycle: fraction of the steps spent raising the LR to its peak")
    div_factor: float = option(25.0, "onecycle: initial LR = lr / div_factor")
    final_div_factor: float = option(1e4, "onecycle: final LR = initial LR / final_div_factor")
    cycle_momentum: bool = option(False, "onecycle, sgd only: cycle the momentum inversely to the LR (torch's default)")
    base_momentum: float = option(0.85, "onecycle: the lowest cycled momentum")
    max_momentum: float = option(0.95, "onecycle: the highest cycled momentum")

    def __post_init__(self):
        check_float("pct_start", self.pct_start, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float("div_factor", self.div_factor, low=0.0, low_open=True)
        check_float("final_div_factor", self.final_div_factor, low=0.0, low_open=True)
        check_float("base_momentum", self.base_momentum, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float("max_momentum", self.max_momentum, low=self.base_momentum, high=1.0, high_open=True)


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
