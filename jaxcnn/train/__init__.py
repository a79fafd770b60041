"""Training: a pure, sharded train/eval step on a TrainState pytree (optionally with an EMA of
the weights and MixUp/CutMix on the device), optax optimizers and schedules (incl. torch-style
reduce-on-plateau and one-cycle, gradient clipping and accumulation), Orbax best/latest
checkpoints, and the epoch loop (`fit`) that drives them."""

from jaxcnn.train.checkpoints import Checkpointer
from jaxcnn.train.ema import EmaConfig, EmaState
from jaxcnn.train.early_stopping import EarlyStopping
from jaxcnn.train.evaluate import EvalResult, evaluate
from jaxcnn.train.loop import LogLogger, LoopConfig, LoopState, NonFiniteLossError, fit
from jaxcnn.train.metrics import METRIC_MODES, metric_mode
from jaxcnn.train.mixup import MixupConfig
from jaxcnn.train.onecycle import OneCycleConfig, onecycle_schedule
from jaxcnn.train.optim import (
    OPTIMIZERS,
    OptimConfig,
    SCHEDULES,
    current_learning_rate,
    make_optimizer,
    make_schedule,
)
from jaxcnn.train.plateau import PlateauConfig, PlateauState, scale_by_plateau, step_plateau
from jaxcnn.train.sharding import compile_steps, make_mesh, replicate, shard_batch
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.steps import cross_entropy, eval_step, mixed_cross_entropy, train_step

__all__ = [
    "Checkpointer",
    "EarlyStopping",
    "EmaConfig",
    "EmaState",
    "EvalResult",
    "LogLogger",
    "LoopConfig",
    "LoopState",
    "METRIC_MODES",
    "NonFiniteLossError",
    "OPTIMIZERS",
    "MixupConfig",
    "OneCycleConfig",
    "OptimConfig",
    "PlateauConfig",
    "PlateauState",
    "SCHEDULES",
    "TrainState",
    "compile_steps",
    "create_train_state",
    "cross_entropy",
    "current_learning_rate",
    "eval_step",
    "evaluate",
    "fit",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "metric_mode",
    "mixed_cross_entropy",
    "onecycle_schedule",
    "replicate",
    "scale_by_plateau",
    "shard_batch",
    "step_plateau",
    "train_step",
]
