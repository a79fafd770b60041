"""Training: a pure, sharded train/eval step on a TrainState pytree (uint8 batches normalized on
the device, optionally with an EMA of the weights and MixUp/CutMix there too), optax optimizers
and schedules (incl. torch-style reduce-on-plateau and one-cycle, gradient clipping and
accumulation), fine-tuning (a frozen or slower backbone), Orbax best/latest checkpoints, and the
epoch loop (`fit`) that drives them."""

from jaxcnn.lazy import lazy_exports

# name -> module, imported on first use: `import jaxcnn.train.optim` (e.g. for a config section)
# does not pull in the checkpoints, steps and loop. (No name here may be a submodule's.)
_EXPORTS = {
    "backbone_groups": "jaxcnn.train.finetune",
    "Checkpointer": "jaxcnn.train.checkpoints",
    "CheckpointError": "jaxcnn.train.checkpoints",
    "compile_steps": "jaxcnn.train.sharding",
    "create_train_state": "jaxcnn.train.state",
    "cross_entropy": "jaxcnn.train.steps",
    "current_learning_rate": "jaxcnn.train.optim",
    "EarlyStopping": "jaxcnn.train.early_stopping",
    "EmaConfig": "jaxcnn.train.ema",
    "EmaState": "jaxcnn.train.ema",
    "eval_step": "jaxcnn.train.steps",
    "evaluate": "jaxcnn.train.evaluation",
    "EvalResult": "jaxcnn.train.evaluation",
    "FinetuneConfig": "jaxcnn.train.finetune",
    "fit": "jaxcnn.train.loop",
    "Freeze": "jaxcnn.train.finetune",
    "head_labels": "jaxcnn.train.finetune",
    "inference_target": "jaxcnn.train.spec",
    "InputNormalization": "jaxcnn.train.inputs",
    "LogLogger": "jaxcnn.train.loop",
    "LoopConfig": "jaxcnn.train.loop_config",
    "LoopRun": "jaxcnn.train.loop",
    "LoopState": "jaxcnn.train.loop",
    "make_mesh": "jaxcnn.train.sharding",
    "make_optimizer": "jaxcnn.train.optim",
    "make_schedule": "jaxcnn.train.optim",
    "metric_mode": "jaxcnn.train.metrics",
    "METRIC_MODES": "jaxcnn.train.metrics",
    "mixed_cross_entropy": "jaxcnn.train.steps",
    "MixupConfig": "jaxcnn.train.mixup",
    "NonFiniteLossError": "jaxcnn.train.loop",
    "onecycle_schedule": "jaxcnn.train.onecycle",
    "OneCycleConfig": "jaxcnn.train.onecycle",
    "OptimConfig": "jaxcnn.train.optim",
    "OPTIMIZERS": "jaxcnn.train.optim",
    "PlateauConfig": "jaxcnn.train.plateau",
    "PlateauState": "jaxcnn.train.plateau",
    "prepare_inputs": "jaxcnn.train.inputs",
    "replicate": "jaxcnn.train.sharding",
    "Restored": "jaxcnn.train.checkpoints",
    "scale_backbone_lr": "jaxcnn.train.finetune",
    "scale_by_plateau": "jaxcnn.train.plateau",
    "SCHEDULES": "jaxcnn.train.optim",
    "shard_batch": "jaxcnn.train.sharding",
    "step_plateau": "jaxcnn.train.plateau",
    "Steps": "jaxcnn.train.spec",
    "train_step": "jaxcnn.train.steps",
    "TrainingSpec": "jaxcnn.train.spec",
    "TrainState": "jaxcnn.train.state",
    "UnreadableCheckpointError": "jaxcnn.train.checkpoints",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
