"""Gradient accumulation over any number of train steps per epoch, as timm does it: an epoch of
S steps makes ceil(S / K) updates, each of K steps' gradients but the last, of those left."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.train import OptimConfig, current_learning_rate, make_optimizer
from jaxcnn.train.optim import optimizer_updates, updates_per_epoch

FEATURES, CLASSES, BATCH = 4, 3, 6
STEPS, ACCUMULATE = 5, 2  # three updates per epoch: of batches [0, 1], [2, 3] and [4]
GROUPS = ((0, 2), (2, 4), (4, 5))
RECIPES = {
    "sgd": dict(name="sgd", learning_rate=0.5, momentum=0.9, nesterov=True, weight_decay=1e-3, clip_grad_norm=0.5,
                schedule="cosine"),
    "adam": dict(name="adam", learning_rate=0.05, weight_decay=1e-3, schedule="step", milestones=(1,), gamma=0.5),
}


def _loss(params, image, label):
    logits = image @ params["kernel"] + params["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()


GRAD = jax.jit(jax.grad(_loss))


def _params():
    return {"kernel": jnp.asarray(np.random.default_rng(0).normal(size=(FEATURES, CLASSES)), jnp.float32),
            "bias": jnp.zeros(CLASSES, jnp.float32)}


def _epoch_batches(epoch, size=BATCH):
    rng = np.random.default_rng(100 + epoch)
    return [(jnp.asarray(rng.normal(size=(size, FEATURES)), jnp.float32), jnp.asarray(rng.integers(0, CLASSES, size)))
            for _ in range(STEPS)]


def _train(update, params, opt_state, batches):
    """One train step per batch: the gradient of the batch's mean loss, then the optimizer."""
    for image, label in batches:
        updates, opt_state = update(GRAD(params, image, label), opt_state, params)
        params = optax.apply_updates(params, updates)
    return params, opt_state


def _accumulating(recipe, steps=STEPS, epochs=2):
    tx = make_optimizer(OptimConfig(grad_accum_steps=ACCUMULATE, **RECIPES[recipe]), steps_per_epoch=steps,
                        epochs=epochs)
    return jax.jit(tx.update), tx.init(_params())


def _multi_steps_state(opt_state) -> optax.MultiStepsState:
    assert isinstance(opt_state, optax.MultiStepsState)
    return opt_state


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_epoch_equals_plain_training_on_the_joined_groups(recipe):
    update, opt_state = _accumulating(recipe)
    plain = make_optimizer(OptimConfig(**RECIPES[recipe]), steps_per_epoch=len(GROUPS), epochs=2)
    plain_update, plain_state = jax.jit(plain.update), plain.init(_params())
    params = plain_params = initial = _params()
    for epoch in range(2):
        batches = _epoch_batches(epoch)
        params, opt_state = _train(update, params, opt_state, batches)
        joined = [tuple(jnp.concatenate(part) for part in zip(*batches[start:stop])) for start, stop in GROUPS]
        plain_params, plain_state = _train(plain_update, plain_params, plain_state, joined)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), params, plain_params)
    assert int(_multi_steps_state(opt_state).gradient_step) == 2 * len(GROUPS)
    assert not np.allclose(params["kernel"], initial["kernel"], atol=1e-2)  # it did train


def _lr_and_updates(steps, accumulate, epochs=2):
    """(LR, update) after each train step of plain SGD whose gradient at train step i is i,
    under a step schedule that multiplies the LR by 0.1 at epoch 1."""
    config = OptimConfig(name="sgd", learning_rate=1.0, momentum=0.0, schedule="step", milestones=(1,),
                         grad_accum_steps=accumulate)
    tx = make_optimizer(config, steps_per_epoch=steps, epochs=epochs)
    update, params = jax.jit(tx.update), {"w": jnp.zeros(())}
    opt_state, seen = tx.init(params), []
    for step in range(steps * epochs):
        updates, opt_state = update({"w": jnp.asarray(step, jnp.float32)}, opt_state, params)
        seen.append((current_learning_rate(opt_state), float(updates["w"])))
    return seen


def test_the_schedule_counts_ceil_s_over_k_updates_per_epoch():
    lrs, updates = zip(*_lr_and_updates(STEPS, ACCUMULATE))
    # Train steps 0..4, then 5..9: updates after steps 1, 3, 4 | 6, 8, 9, the milestone at update 3.
    expected = [0, -(0 + 1) / 2, 0, -(2 + 3) / 2, -4.0, 0, -0.1 * (5 + 6) / 2, 0, -0.1 * (7 + 8) / 2, -0.1 * 9]
    np.testing.assert_allclose(updates, expected, rtol=1e-6)
    np.testing.assert_allclose(lrs, [1.0] * 6 + [0.1] * 4, rtol=1e-6)  # the LR of the last update made


def test_more_accumulation_steps_than_an_epoch_make_one_update_per_epoch():
    assert updates_per_epoch(3, 5) == 1
    _, updates = zip(*_lr_and_updates(steps=3, accumulate=5))
    np.testing.assert_allclose(updates, [0, 0, -(0 + 1 + 2) / 3, 0, 0, -0.1 * (3 + 4 + 5) / 3], rtol=1e-6)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_run_resumed_at_an_epoch_boundary_continues_exactly(recipe):
    update, opt_state = _accumulating(recipe)
    straight = _train(update, *_train(update, _params(), opt_state, _epoch_batches(0)), _epoch_batches(1))

    saved = jax.device_get(_train(update, _params(), opt_state, _epoch_batches(0)))  # checkpoint after epoch 0
    accumulation = _multi_steps_state(saved[1])
    assert int(accumulation.mini_step) == 0 and int(accumulation.gradient_step) == len(GROUPS)
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(accumulation.acc_grads))  # nothing half-accumulated
    resumed_update, _ = _accumulating(recipe)  # a new process: the optimizer rebuilt, the state restored
    resumed = _train(resumed_update, *jax.tree.map(jnp.asarray, saved), _epoch_batches(1))
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)


def test_37_batches_accumulated_by_2_make_19_updates_per_epoch():
    """The case once refused ('2 must divide the 37 train steps per epoch')."""
    assert updates_per_epoch(37, 2) == 19
    tx = make_optimizer(OptimConfig(name="adam", learning_rate=1e-3, schedule="onecycle", grad_accum_steps=2),
                        steps_per_epoch=37, epochs=2)
    params = {"w": jnp.ones(3)}

    @jax.jit
    def train_step(opt_state, step):
        _, opt_state = tx.update({"w": jnp.full(3, 0.1)}, opt_state, params)
        return opt_state, optimizer_updates(opt_state, step + 1)

    opt_state, applied_at = tx.init(params), []
    for step in range(2 * 37):
        opt_state, (applied, done) = train_step(opt_state, step)
        if applied:
            applied_at.append((step, int(done)))
    epoch = list(range(1, 36, 2)) + [36]  # the train steps (0-based) that end an update
    assert applied_at == [(step, n) for n, step in enumerate(epoch + [37 + s for s in epoch], start=1)]
