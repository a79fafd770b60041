"""Training: a pure, sharded train/eval step on a TrainState pytree, optax optimizers and
schedules (incl. torch-style reduce-on-plateau), Orbax best/latest checkpoints, and the epoch
loop (`fit`) that drives them."""

from jaxcnn.train.checkpoints import CheckpointError, Checkpointer, Restored, UnreadableCheckpointError
from jaxcnn.train.early_stopping import EarlyStopping
from jaxcnn.train.evaluate import EvalResult, evaluate
from jaxcnn.train.loop import LoopState, NonFiniteLossError, fit
from jaxcnn.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    current_learning_rate,
    make_optimizer,
    make_schedule,
)
from jaxcnn.train.plateau import PlateauConfig, PlateauState, scale_by_plateau, step_plateau
from jaxcnn.train.sharding import compile_steps, make_mesh, replicate, shard_batch
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.steps import cross_entropy, eval_step, train_step

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "EarlyStopping",
    "EvalResult",
    "LoopState",
    "NonFiniteLossError",
    "OPTIMIZERS",
    "PlateauConfig",
    "PlateauState",
    "Restored",
    "SCHEDULES",
    "TrainState",
    "UnreadableCheckpointError",
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
    "replicate",
    "scale_by_plateau",
    "shard_batch",
    "step_plateau",
    "train_step",
]
