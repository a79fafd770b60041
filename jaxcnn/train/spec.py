"""One derivation of a run's training: (config, classes, input shape, mesh) -> everything else.

    spec = TrainingSpec.derive(config, num_classes=10, input_shape=(32, 32, 3), mesh=mesh,
                               steps_per_epoch=390)
    state = spec.initial_state()              # replicated on the mesh, pretrained weights loaded
    steps = spec.compile_steps(normalize)     # jitted, sharded train / eval (/ frozen) steps

The model, the variables' shapes (one `eval_shape` of `model.init`), the head/backbone labels
of fine-tuning, the optimizer (parameter groups, backbone LR scale, schedule, plateau, EMA,
accumulation) and the abstract state with its sharding are derived here and nowhere else:
training, `--batch-size auto`, `--resume` and the benchmarks take them from a `TrainingSpec`,
and `load_run` takes its restore target from `inference_target`, which holds only what
inference reads (parameters, BatchNorm statistics, the EMA), so a run stays loadable whatever
optimizer it trained with. `config` is a `jaxcnn.RunConfig` (its model, optim, loop, finetune
and seed sections are read).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcnn.models.shapes import abstract_variables
from jaxcnn.train.finetune import Freeze, backbone_groups, head_labels, load_pretrained, scale_backbone_lr
from jaxcnn.train.inputs import InputNormalization
from jaxcnn.train.optim import make_optimizer
from jaxcnn.train.sharding import compile_steps, replicate
from jaxcnn.train.state import TrainState, create_train_state, train_state_from_variables


class Steps(NamedTuple):
    """The compiled steps of a run; `frozen_train_step` trains epochs 1..`frozen_epochs` (None
    without a frozen backbone)."""

    train_step: Callable
    eval_step: Callable
    frozen_train_step: Callable | None
    frozen_epochs: int


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingSpec:
    """What a run trains, derived once (`derive`); every field is a consequence of the first five."""

    config: Any
    num_classes: int
    input_shape: tuple[int, int, int]
    mesh: Mesh
    steps_per_epoch: int
    model: nn.Module
    variables: dict  # {"params", "batch_stats"} as shapes
    labels: dict | None  # "head" / "backbone" per parameter, when the optimizer tells them apart
    optimizer: optax.GradientTransformation
    frozen_optimizer: optax.GradientTransformation | None  # the backbone held (same state structure)
    abstract_state: TrainState  # shapes, replicated on `mesh`

    @classmethod
    def derive(cls, config, *, num_classes: int, input_shape: tuple[int, int, int], mesh: Mesh,
               steps_per_epoch: int = 1) -> TrainingSpec:
        """The spec of `config` for `num_classes` classes, (height, width, channels) inputs, on
        `mesh`, with `steps_per_epoch` batches per epoch (the schedule's length; the state's
        structure does not depend on it)."""
        input_shape = tuple(input_shape)
        model = config.model.build(num_classes)
        variables = abstract_variables(model, input_shape)
        finetune = config.finetune
        labels = head_labels(model, variables["params"]) if finetune.splits_backbone else None

        def optimizer(frozen: bool):
            groups = backbone_groups(labels, frozen=frozen) if finetune.freeze_backbone_epochs else None
            tx = make_optimizer(config.optim, steps_per_epoch=steps_per_epoch, epochs=config.loop.epochs,
                                groups=groups)
            return tx if labels is None else scale_backbone_lr(tx, labels, finetune.backbone_lr_scale)

        tx = optimizer(False)
        frozen = optimizer(True) if finetune.freeze_backbone_epochs else None
        _, state_rng = jax.random.split(jax.random.key(config.seed))  # as create_train_state splits it
        shapes = jax.eval_shape(lambda v, key: train_state_from_variables(v, key, model, tx, ema=config.loop.ema()),
                                variables, state_rng)
        replicated = NamedSharding(mesh, P())
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)
        return cls(config, num_classes, input_shape, mesh, steps_per_epoch, model, variables, labels, tx, frozen,
                   abstract)

    @property
    def frozen_epochs(self) -> int:
        return self.config.finetune.freeze_backbone_epochs

    def initial_state(self, *, pretrained: bool = True) -> TrainState:
        """The state of step 0, replicated on the mesh; starting from `finetune.pretrained`'s
        weights unless `pretrained=False` (a resumed run restores its checkpoint instead)."""
        config = self.config
        state = create_train_state(jax.random.key(config.seed), self.model, self.optimizer, self.input_shape,
                                   ema=config.loop.ema())
        if pretrained and config.finetune.pretrained:
            state, _ = load_pretrained(state, config.model.arch, config.finetune.pretrained,
                                       num_classes=self.num_classes, input_shape=self.input_shape,
                                       rng=jax.random.key(config.seed), model_options=config.model.options)
        return replicate(state, self.mesh)

    def compile_steps(self, normalize: InputNormalization | None = None) -> Steps:
        """The jitted, sharded steps (`jaxcnn.train.compile_steps`) with the run's loss settings;
        `normalize`: the statistics uint8 batches are normalized with on the device."""
        loop = self.config.loop
        settings = dict(label_smoothing=loop.label_smoothing, mixup=loop.mixup, normalize=normalize)
        train_step, eval_step = compile_steps(self.mesh, **settings)
        frozen_train_step = None
        if self.frozen_optimizer is not None:
            frozen_train_step, _ = compile_steps(self.mesh, freeze=Freeze(self.labels, self.frozen_optimizer),
                                                 **settings)
        return Steps(train_step, eval_step, frozen_train_step, self.frozen_epochs)


def inference_target(variables: dict, mesh: Mesh, *, ema: bool) -> dict:
    """The part of a checkpoint inference reads, as a restore target replicated on `mesh`:
    "params", "batch_stats" (models with BatchNorm) and, for runs that keep one, "ema" (the
    average's params and batch_stats). The optimizer state is not read: a run stays loadable
    whatever optimizer (groups, accumulation, schedule) it trained with."""
    replicated = NamedSharding(mesh, P())
    shapes = {name: tree for name, tree in variables.items() if tree}
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)
    return {**target, "ema": dict(target)} if ema else target
