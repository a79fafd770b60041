"""Orbax best + latest checkpoints: what is kept, bit-exact restore, and exact resume."""

import os

import jax
import pytest

from jaxcnn.train import (
    OptimConfig,
    Checkpointer,
    PlateauConfig,
    compile_steps,
    make_mesh,
    make_optimizer,
    replicate,
    shard_batch,
    step_plateau,
)
from train_helpers import make_batch, tiny_state, trees_equal

PLATEAU = PlateauConfig(metric="val_accuracy", patience=0)


def _optimizer():
    return make_optimizer(
        OptimConfig(name="adamw", learning_rate=1e-2, weight_decay=1e-4, schedule="plateau", plateau=PLATEAU),
        steps_per_epoch=2, epochs=4)


@pytest.fixture(scope="module")
def steps():
    mesh = make_mesh()
    train_step, _ = compile_steps(mesh, label_smoothing=0.1)
    return mesh, train_step


def _train(state, steps, first_batch, count):
    mesh, train_step = steps
    for i in range(first_batch, first_batch + count):
        state, _ = train_step(state, shard_batch(make_batch(8, seed=i), mesh))
    return state


def _saved_epochs(directory):
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


@pytest.mark.parametrize(
    "metric, mode, values, best",
    [
        ("val_accuracy", "max", [0.5, 0.7, 0.6, float("nan"), 0.7, 0.65], 2),  # tie: the earlier stays best
        ("val_loss", "min", [1.0, 0.8, float("-inf"), 0.9, 0.8, 0.85], 2),
    ],
)
def test_keeps_the_best_and_the_latest_only(tmp_path, metric, mode, values, best):
    state = tiny_state(_optimizer())
    with Checkpointer(tmp_path, best_metric=metric, best_mode=mode) as checkpointer:
        for epoch, value in enumerate(values, start=1):
            checkpointer.save(epoch, state, {"epoch": epoch}, {metric: value, "train_loss": 1.0})
        checkpointer.wait()
        assert _saved_epochs(tmp_path) == [best, len(values)]
        assert (checkpointer.best_epoch, checkpointer.latest_epoch) == (best, len(values))
        assert (checkpointer.path(best) / "state").is_dir()
    with Checkpointer(tmp_path, best_metric=metric, best_mode=mode) as reopened:  # e.g. after a kill
        assert (reopened.best_epoch, reopened.latest_epoch) == (best, len(values))


def test_restore_is_bit_exact_and_resume_continues_identically(tmp_path, steps):
    mesh, _ = steps
    state = replicate(tiny_state(_optimizer()), mesh)
    state = _train(state, steps, 0, 2)
    opt_state, _ = step_plateau(state.opt_state, 0.4, PLATEAU)
    opt_state, reduced = step_plateau(opt_state, 0.4, PLATEAU)  # no improvement: LR reduced
    assert reduced
    state = state.replace(opt_state=opt_state)
    meta = {"epoch": 1, "history": [{"val_accuracy": 0.4}], "early_stopping": {"bad_epochs": 1}}
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(1, state, meta, {"val_accuracy": 0.4})
        checkpointer.wait()
        saved = jax.device_get(state)
        uninterrupted = jax.device_get(_train(state, steps, 2, 2))  # donates `state`

    # A fresh process would build the target state from scratch, with any seed.
    target = replicate(tiny_state(_optimizer(), seed=123), mesh)
    with Checkpointer(tmp_path) as checkpointer:
        restored, restored_meta = checkpointer.restore(target)
    assert type(restored) is type(target) and restored_meta == meta
    assert trees_equal(restored, saved)
    assert restored.tx is target.tx and restored.apply_fn == target.apply_fn
    resumed = jax.device_get(_train(restored, steps, 2, 2))
    assert trees_equal(resumed, uninterrupted)
    assert not trees_equal(resumed, saved)


def test_abstract_target_from_eval_shape(tmp_path):
    state = tiny_state(_optimizer())
    with Checkpointer(tmp_path, best_metric="val_loss", best_mode="min") as checkpointer:
        checkpointer.save(3, state, {}, {"val_loss": 0.5})
        restored, meta = checkpointer.restore(jax.eval_shape(lambda: state), epoch=3)
    assert meta == {} and trees_equal(restored, state)


def test_clear_errors(tmp_path):
    state = tiny_state(_optimizer())
    with pytest.raises(ValueError, match="best_mode must be 'max' or 'min'"):
        Checkpointer(tmp_path, best_mode="highest")
    with Checkpointer(tmp_path) as checkpointer:
        with pytest.raises(FileNotFoundError, match="no checkpoint to restore"):
            checkpointer.restore(state)
        with pytest.raises(ValueError, match="'val_accuracy'.*got \\['val_loss'\\]"):
            checkpointer.save(1, state, {}, {"val_loss": 0.3})
        checkpointer.save(1, state, {}, {"val_accuracy": 0.3})
        with pytest.raises(FileNotFoundError, match="epoch 2 .*available: \\[1\\]"):
            checkpointer.restore(state, epoch=2)
