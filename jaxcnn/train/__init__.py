"""Training: a pure, sharded train/eval step on a TrainState pytree (uint8 batches normalized on
the device, optionally with an EMA of the weights and MixUp/CutMix there too), optax optimizers
and schedules (incl. torch-style reduce-on-plateau and one-cycle, gradient clipping and
accumulation), fine-tuning (a frozen or slower backbone), Orbax best/latest checkpoints, and the
epoch loop (`fit`) that drives them."""

from jaxcnn.train.checkpoints import CheckpointError, Checkpointer, Restored, UnreadableCheckpointError
from jaxcnn.train.ema import EmaConfig, EmaState
from jaxcnn.train.early_stopping import EarlyStopping
from jaxcnn.train.evaluate import EvalResult, evaluate
from jaxcnn.train.finetune import FinetuneConfig, Freeze, backbone_groups, head_labels, scale_backbone_lr
from jaxcnn.train.inputs import InputNormalization, prepare_inputs
from jaxcnn.train.loop import LogLogger, LoopConfig, LoopRun, LoopState, NonFiniteLossError, fit
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
from jaxcnn.train.spec import Steps, TrainingSpec, inference_target
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.steps import cross_entropy, eval_step, mixed_cross_entropy, train_step

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "EarlyStopping",
    "EmaConfig",
    "EmaState",
    "EvalResult",
    "FinetuneConfig",
    "InputNormalization",
    "Freeze",
    "LogLogger",
    "LoopConfig",
    "LoopRun",
    "LoopState",
    "METRIC_MODES",
    "NonFiniteLossError",
    "OPTIMIZERS",
    "MixupConfig",
    "OneCycleConfig",
    "OptimConfig",
    "PlateauConfig",
    "PlateauState",
    "Restored",
    "SCHEDULES",
    "Steps",
    "TrainState",
    "TrainingSpec",
    "UnreadableCheckpointError",
    "backbone_groups",
    "compile_steps",
    "create_train_state",
    "cross_entropy",
    "current_learning_rate",
    "eval_step",
    "evaluate",
    "fit",
    "head_labels",
    "inference_target",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "metric_mode",
    "mixed_cross_entropy",
    "onecycle_schedule",
    "prepare_inputs",
    "replicate",
    "scale_backbone_lr",
    "scale_by_plateau",
    "shard_batch",
    "step_plateau",
    "train_step",
]
