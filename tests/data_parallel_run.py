"""Run a few sharded train/eval steps on every visible device and print the results as JSON.

Run as a subprocess by tests/test_train_core.py with
XLA_FLAGS=--xla_force_host_platform_device_count=N, which must be set before jax is imported.
"""

import json

import jax
import numpy as np
import optax

from jaxcnn.train import (
    EmaConfig,
    InputNormalization,
    MixupConfig,
    OptimConfig,
    PlateauConfig,
    compile_steps,
    create_train_state,
    make_mesh,
    make_optimizer,
    replicate,
    shard_batch,
    step_plateau,
)
from jaxcnn.train.finetune import Freeze, backbone_groups
from train_helpers import INPUT_MEAN, INPUT_SHAPE, INPUT_STD, TinyCNN, make_batch, make_uint8_batch, tiny_state


def recipe_run(mesh) -> dict:
    """EMA + MixUp/CutMix + clipping + accumulation + one-cycle on uint8 batches with erase boxes
    (normalized and erased in the step): the mixing pairs examples across devices, the EMA and
    the accumulator are replicated state."""
    optimizer = make_optimizer(
        OptimConfig(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4, schedule="onecycle", clip_grad_norm=1.0, grad_accum_steps=2),
        steps_per_epoch=4, epochs=1)
    state = create_train_state(jax.random.key(1), TinyCNN(), optimizer, INPUT_SHAPE,
                               ema=EmaConfig(decay=0.9, use_warmup=True))
    state = replicate(state, mesh)
    train_step, eval_step = compile_steps(
        mesh, label_smoothing=0.1, mixup=MixupConfig(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5),
        normalize=InputNormalization(INPUT_MEAN, INPUT_STD),
    )
    losses = []
    for step in range(4):
        state, metrics = train_step(state, shard_batch(make_uint8_batch(8, seed=20 + step, erase=True), mesh))
        losses.append(float(metrics["loss_sum"] / metrics["count"]))
    evaluation = jax.device_get(eval_step(state.ema_view(), shard_batch(make_uint8_batch(8, seed=9), mesh)))
    return {
        "losses": losses,
        "variables": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves((state.params, state.ema))],
        "ema_eval_loss_sum": float(evaluation["loss_sum"]),
    }


def frozen_run(mesh) -> dict:
    """Two steps with the backbone (conv, BatchNorm) frozen, then one unfrozen (jaxcnn.train.finetune);
    SGD, as Adam would blow the conv bias's zero gradient (BatchNorm follows) up to noise-signed steps."""
    params = tiny_state(optax.sgd(0.1)).params
    labels = {name: jax.tree.map(lambda _, head=name.startswith("Dense"): "head" if head else "backbone", tree)
              for name, tree in params.items()}
    make = lambda frozen: make_optimizer(OptimConfig(name="sgd", learning_rate=0.1), steps_per_epoch=3,  # noqa: E731
                                         epochs=1, groups=backbone_groups(labels, frozen=frozen))
    state = replicate(tiny_state(make(False)), mesh)
    frozen_step, _ = compile_steps(mesh, label_smoothing=0.1, freeze=Freeze(labels, make(True)))
    full_step, _ = compile_steps(mesh, label_smoothing=0.1)
    losses = []
    for step, train_step in enumerate((frozen_step, frozen_step, full_step)):
        state, metrics = train_step(state, shard_batch(make_batch(8, seed=30 + step), mesh))
        losses.append(float(metrics["loss_sum"] / metrics["count"]))
    return {"losses": losses,
            "variables": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves((state.params, state.batch_stats))]}


def main():
    mesh = make_mesh()
    plateau = PlateauConfig(metric="val_loss", patience=0, factor=0.5)
    optimizer = make_optimizer(
        OptimConfig(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="plateau", plateau=plateau),
        steps_per_epoch=2, epochs=3)
    state = replicate(tiny_state(optimizer), mesh)
    train_step, eval_step = compile_steps(mesh, label_smoothing=0.1)
    losses = []
    for step in range(4):
        state, metrics = train_step(state, shard_batch(make_batch(8, seed=step), mesh))
        losses.append(float(metrics["loss_sum"] / metrics["count"]))
        if step == 1:  # two "epochs" end, the second without improvement: the LR halves
            for metric in (1.0, 1.0):
                opt_state, _ = step_plateau(state.opt_state, metric, plateau)
                state = state.replace(opt_state=opt_state)
    evaluation = jax.device_get(eval_step(state, shard_batch(make_batch(8, seed=9, valid=5), mesh)))
    try:
        shard_batch(make_batch(6), mesh)
        batch_error = None
    except ValueError as error:
        batch_error = str(error)
    print(json.dumps({
        "devices": jax.device_count(),
        "losses": losses,
        "variables": [
            np.asarray(x).ravel().tolist() for x in jax.tree.leaves((state.params, state.batch_stats))
        ],
        "eval": {name: np.asarray(value).tolist() for name, value in evaluation.items()},
        "batch_error": batch_error,
        "lr_scale": float(state.opt_state[1].scale),
        "recipe": recipe_run(mesh),
        "frozen": frozen_run(mesh),
    }))


if __name__ == "__main__":
    main()
