"""The pure train/eval steps: data parallelism, masked metrics, aux losses, mixed precision."""

import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.train import (
    OptimConfig,
    compile_steps,
    cross_entropy,
    eval_step,
    make_mesh,
    make_optimizer,
    replicate,
    shard_batch,
    train_step,
)
from train_helpers import INPUT_SHAPE, NUM_CLASSES, TinyCNN, make_batch, tiny_state

TESTS = pathlib.Path(__file__).parent


def _run_on_devices(count: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent), str(TESTS), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(TESTS / "data_parallel_run.py")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_and_four_devices_train_and_evaluate_alike():
    one, four = _run_on_devices(1), _run_on_devices(4)
    assert (one["devices"], four["devices"]) == (1, 4)
    assert one["lr_scale"] == four["lr_scale"] == 0.5
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=0, atol=1e-5)
    for a, b in zip(four["variables"], one["variables"], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert four["eval"]["count"] == one["eval"]["count"] == 5
    assert four["eval"]["confusion"] == one["eval"]["confusion"]
    np.testing.assert_allclose(four["eval"]["loss_sum"], one["eval"]["loss_sum"], atol=1e-5)
    assert one["batch_error"] is None
    assert "batch size 6" in four["batch_error"] and "4 devices" in four["batch_error"]
    # EMA + MixUp/CutMix + clipping + accumulation: the same numbers on 1 and 4 devices
    np.testing.assert_allclose(four["recipe"]["losses"], one["recipe"]["losses"], rtol=0, atol=1e-5)
    for a, b in zip(four["recipe"]["variables"], one["recipe"]["variables"], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    np.testing.assert_allclose(four["recipe"]["ema_eval_loss_sum"], one["recipe"]["ema_eval_loss_sum"], atol=1e-5)
    # a frozen backbone (head-only gradient, backbone BatchNorm in inference mode), then unfrozen
    np.testing.assert_allclose(four["frozen"]["losses"], one["frozen"]["losses"], rtol=0, atol=1e-5)
    for a, b in zip(four["frozen"]["variables"], one["frozen"]["variables"], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def sgd_state():
    optimizer = make_optimizer(
        OptimConfig(name="sgd", learning_rate=1.0, momentum=0.0, schedule="constant"),
        steps_per_epoch=1, epochs=1)
    return tiny_state(optimizer)


def test_padded_eval_batch_counts_each_example_once(sgd_state):
    full = make_batch(5, seed=3)
    padded = make_batch(8, seed=4)  # other examples in the 3 padding rows...
    padded = {name: np.concatenate([full[name], padded[name][5:]]) for name in full}
    padded["mask"] = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32)  # ...masked out
    step = jax.jit(eval_step)
    exact, masked = jax.device_get(step(sgd_state, full)), jax.device_get(step(sgd_state, padded))

    logits = sgd_state.apply_fn({"params": sgd_state.params, "batch_stats": sgd_state.batch_stats},
                                full["image"], train=False)
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    predicted = log_probs.argmax(-1)
    assert masked["count"] == exact["count"] == 5
    np.testing.assert_allclose(masked["loss_sum"], -log_probs[np.arange(5), full["label"]].sum(), rtol=1e-6)
    np.testing.assert_allclose(masked["loss_sum"], exact["loss_sum"], rtol=1e-6)
    assert masked["correct"] == exact["correct"] == (predicted == full["label"]).sum()
    expected_confusion = np.zeros((NUM_CLASSES, NUM_CLASSES))
    np.add.at(expected_confusion, (full["label"], predicted), 1)
    np.testing.assert_array_equal(masked["confusion"], expected_confusion)
    true_counts = np.bincount(full["label"], minlength=NUM_CLASSES)
    np.testing.assert_array_equal(masked["confusion"].sum(1), true_counts)
    assert np.trace(masked["confusion"]) == masked["correct"]


def test_cross_entropy_matches_torch_label_smoothing_formula():
    logits = jnp.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]], jnp.bfloat16)
    labels = jnp.array([0, 2])
    smoothing = 0.2
    log_probs = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)))
    targets = (1 - smoothing) * np.eye(3)[labels] + smoothing / 3  # torch CrossEntropyLoss(label_smoothing)
    loss = cross_entropy(logits, labels, smoothing)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, -(targets * log_probs).sum(-1), rtol=1e-6)


def test_aux_logits_add_weighted_loss_to_the_gradient_not_to_the_metric():
    optimizer = make_optimizer(
        OptimConfig(name="sgd", learning_rate=1.0, momentum=0.0, schedule="constant"),
        steps_per_epoch=1, epochs=1)
    state = tiny_state(optimizer, model=TinyCNN(aux_logits=True))
    batch = make_batch(8, seed=1)
    step = jax.jit(train_step, static_argnames=("aux_loss_weight",))
    weighted, weighted_metrics = step(state, batch, aux_loss_weight=0.3)
    unweighted, unweighted_metrics = step(state, batch, aux_loss_weight=0.0)

    def aux_loss(aux_params):
        params = {**state.params, "aux_head": aux_params}
        _, sown = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, batch["image"],
                                 train=True, rngs={"dropout": jax.random.key(0)},
                                 mutable=["batch_stats", "aux_logits"])
        (aux_logits,) = sown["aux_logits"]["aux1"]
        return 0.3 * cross_entropy(aux_logits, batch["label"]).mean()

    aux_grads = jax.jit(jax.grad(aux_loss))(state.params["aux_head"])  # the aux head sits before dropout
    expected = jax.tree.map(lambda p, g: p - 1.0 * g, state.params["aux_head"], aux_grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 weighted.params["aux_head"], expected)
    jax.tree.map(np.testing.assert_array_equal, unweighted.params["aux_head"], state.params["aux_head"])
    # the reported loss is the main head's alone
    np.testing.assert_allclose(weighted_metrics["loss_sum"], unweighted_metrics["loss_sum"], rtol=1e-6)


class TinyMLP(nn.Module):
    """No BatchNorm, no dropout; computes in `dtype`."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(NUM_CLASSES, dtype=self.dtype)(x.reshape((x.shape[0], -1)))


def test_bfloat16_compute_keeps_float32_params_state_and_loss():
    optimizer = make_optimizer(
        OptimConfig(name="adam", learning_rate=1e-3, schedule="constant"),
        steps_per_epoch=1, epochs=1)
    state = tiny_state(optimizer, model=TinyMLP(dtype=jnp.bfloat16))
    assert state.batch_stats == {}
    new_state, metrics = jax.jit(train_step)(state, make_batch(4))
    dtypes = {x.dtype for x in jax.tree.leaves((new_state.params, new_state.opt_state))}
    assert dtypes <= {np.dtype("float32"), np.dtype("int32")}
    assert metrics["loss_sum"].dtype == jnp.float32 and np.isfinite(metrics["loss_sum"])
    assert int(new_state.step) == 1
    assert not np.array_equal(jax.random.key_data(new_state.rng), jax.random.key_data(state.rng))


def test_compile_steps_donates_the_state(sgd_state):
    mesh = make_mesh()
    train, _ = compile_steps(mesh)
    state = jax.tree.map(jnp.copy, sgd_state)
    new_state, _ = train(state, make_batch(4))
    assert state.params["Dense_0"]["kernel"].is_deleted()
    assert not new_state.params["Dense_0"]["kernel"].is_deleted()


def test_each_step_compiles_once_from_a_fresh_state(sgd_state):
    """`replicate` commits a fresh state to the mesh as the steps return it: the first call and
    the later ones share one signature, so neither step is compiled twice."""
    mesh = make_mesh()
    train, evaluate = compile_steps(mesh)
    state = replicate(jax.tree.map(jnp.copy, sgd_state), mesh)
    batch = shard_batch(make_batch(4), mesh)
    for _ in range(3):
        state, _ = train(state, batch)
        evaluate(state, batch)
    assert (train._cache_size(), evaluate._cache_size()) == (1, 1)


def test_input_shape_must_be_hwc():
    optimizer = make_optimizer(
        OptimConfig(name="adam", learning_rate=1e-3, schedule="constant"),
        steps_per_epoch=1, epochs=1)
    from jaxcnn.train import create_train_state

    with pytest.raises(ValueError, match="height, width, channels"):
        create_train_state(jax.random.key(0), TinyMLP(), optimizer, INPUT_SHAPE[:2])
