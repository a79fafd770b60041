"""Optimizers and schedules with PyTorch's semantics, and torch ReduceLROnPlateau on optax state."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.train import (OptimConfig, PlateauConfig, current_learning_rate, make_optimizer, make_schedule,
                          step_plateau)

PARAMS = {"w": jnp.array([1.0, -2.0, 0.5])}
GRADS = [np.array([0.5, 0.1, -0.3]), np.array([-0.2, 0.4, 0.1]), np.array([0.3, -0.6, 0.2])]


def _run(tx, steps=len(GRADS)):
    params, state = PARAMS, tx.init(PARAMS)
    for grad in GRADS[:steps]:
        updates, state = tx.update({"w": jnp.asarray(grad, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params["w"]), state


def _torch_sgd(lr, momentum, nesterov, weight_decay):
    """torch.optim.SGD.step (dampening 0), written out in float64."""
    p, buf = np.asarray(PARAMS["w"], np.float64), None
    for g in GRADS:
        d = g + weight_decay * p
        if momentum:
            buf = d if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def _torch_adam(lr, weight_decay, decoupled, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam (L2 in the gradient) / AdamW (decoupled decay), written out in float64."""
    p = np.asarray(PARAMS["w"], np.float64)
    m = v = np.zeros_like(p)
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_torch(momentum, nesterov):
    tx = make_optimizer(
        OptimConfig(name="sgd", learning_rate=0.1, momentum=momentum, nesterov=nesterov, weight_decay=0.05, schedule="constant"),
        steps_per_epoch=1, epochs=1)
    np.testing.assert_allclose(_run(tx)[0], _torch_sgd(0.1, momentum, nesterov, 0.05), rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_and_adamw_decay_weights_like_torch(name):
    tx = make_optimizer(
        OptimConfig(name=name, learning_rate=0.01, weight_decay=0.1, schedule="constant"),
        steps_per_epoch=1, epochs=1)
    np.testing.assert_allclose(_run(tx)[0], _torch_adam(0.01, 0.1, decoupled=name == "adamw"), rtol=1e-6)
    assert not np.allclose(_torch_adam(0.01, 0.1, True), _torch_adam(0.01, 0.1, False))  # they do differ


def test_cosine_schedule_with_warmup_is_per_step():
    schedule = make_schedule("cosine", learning_rate=0.1, steps_per_epoch=10, epochs=5, warmup_epochs=1)
    values = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    np.testing.assert_allclose(values, [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7)
    half = make_schedule("cosine", learning_rate=0.1, steps_per_epoch=10, epochs=5, warmup_epochs=0.5)
    np.testing.assert_allclose([float(half(step)) for step in (0, 5, 50)], [0.0, 0.1, 0.0], atol=1e-7)


def test_step_schedule_counts_milestone_epochs_from_the_start():
    schedule = make_schedule("step", learning_rate=1.0, steps_per_epoch=3, epochs=8,
                             milestones=(2, 4, 4), gamma=0.5)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 6, 11, 12, 23)],
                               [1.0, 1.0, 0.5, 0.5, 0.125, 0.125])  # a repeated milestone applies gamma twice
    warm = make_schedule("step", learning_rate=1.0, steps_per_epoch=3, epochs=8,
                         milestones=(2,), warmup_epochs=1)
    np.testing.assert_allclose([float(warm(s)) for s in (0, 3, 5, 6)], [0.0, 1.0, 1.0, 0.1])


def test_current_learning_rate_is_the_one_of_the_last_update():
    tx = make_optimizer(
        OptimConfig(name="adam", learning_rate=0.1, schedule="cosine"),
        steps_per_epoch=2, epochs=2)
    schedule = make_schedule("cosine", learning_rate=0.1, steps_per_epoch=2, epochs=2)
    assert math.isclose(current_learning_rate(tx.init(PARAMS)), 0.1, rel_tol=1e-6)
    for steps in (1, 3):
        used = float(schedule(steps - 1))
        assert math.isclose(current_learning_rate(_run(tx, steps)[1]), used, rel_tol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(name="rmsprop"), "name: unknown value 'rmsprop'. Valid: adam, adamw, sgd"),
        (dict(name="sgd", schedule="linear"), "schedule: unknown value 'linear'. Valid: constant, cosine, step, plateau"),
        (dict(name="adam", nesterov=True), "nesterov: needs the 'sgd' optimizer"),
        (dict(name="sgd", schedule="cosine", milestones=(2,)), "milestones: apply to the 'step' schedule"),
        (dict(name="sgd", schedule="step"), "needs milestones"),
        (dict(name="sgd", learning_rate=float("nan")), "learning_rate: must be a finite number"),
        (dict(name="sgd", learning_rate=-1.0), r"learning_rate: must be > 0\.0, got -1\.0"),
        (dict(name="sgd", warmup_epochs=3), "warmup_epochs must be in"),
    ],
)
def test_bad_settings_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(OptimConfig(**{"learning_rate": 0.1, **call}), steps_per_epoch=2, epochs=3)


def _plateau_lrs(config, metrics, learning_rate):
    """The LR after each epoch's `step_plateau`, and the epochs (1-based) where it was reduced."""
    tx = make_optimizer(
        OptimConfig(name="sgd", learning_rate=learning_rate, schedule="plateau", plateau=config),
        steps_per_epoch=1, epochs=1)
    state, lrs, reduced_at = tx.init(PARAMS), [], []
    for epoch, metric in enumerate(metrics, start=1):
        state, reduced = step_plateau(state, metric, config)
        lrs.append(current_learning_rate(state))
        if reduced:
            reduced_at.append(epoch)
    return lrs, reduced_at


def test_plateau_min_mode_patience_threshold_cooldown_min_lr():
    # torch rules: better iff m < best * (1 - threshold); reduce when num_bad_epochs > patience;
    # during cooldown bad epochs are ignored; new lr = max(lr * factor, min_lr), skipped if no change.
    # Below: num_bad_epochs after each epoch; R = reduced, c = cooldown zeroed it.
    config = PlateauConfig(metric="val_loss", factor=0.5, patience=2, threshold=0.1, cooldown=1, min_lr=0.02)
    metrics = [1.0, 0.95, 0.89, 0.89, 0.85, 0.85, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    # bad:      0    1     0     1     2     3:R   0c   1    2    3:R  0c   1    2    3:R  0c   1    2    3:min_lr
    expected = [0.1] * 5 + [0.05] * 4 + [0.025] * 4 + [0.02] * 5
    lrs, reduced_at = _plateau_lrs(config, metrics, learning_rate=0.1)
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    assert reduced_at == [6, 10, 14]


def test_plateau_max_mode_repeats_and_nan_are_bad_epochs():
    config = PlateauConfig(metric="val_accuracy", factor=0.1, patience=1, threshold=0.0)
    metrics = [0.5, 0.5, 0.5, 0.6, float("nan"), 0.59, 0.61]
    #   bad:    0    1    2->R 0    1             2->R  0
    lrs, reduced_at = _plateau_lrs(config, metrics, learning_rate=1.0)
    np.testing.assert_allclose(lrs, [1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    assert reduced_at == [3, 6]


def test_plateau_max_mode_relative_threshold():
    # better iff m > best * (1 + threshold): 1.005 is not > 1.01; 1.02 is not > 1.011 * 1.01 = 1.02111
    config = PlateauConfig(metric="val_accuracy", factor=0.5, patience=0, threshold=0.01)
    lrs, reduced_at = _plateau_lrs(config, [1.0, 1.005, 1.011, 1.02], learning_rate=1.0)
    np.testing.assert_allclose(lrs, [1.0, 0.5, 0.5, 0.25], rtol=1e-6)
    assert reduced_at == [2, 4]


def test_plateau_scale_multiplies_the_updates():
    config = PlateauConfig(metric="val_loss", factor=0.1, patience=0)
    tx = make_optimizer(
        OptimConfig(name="sgd", learning_rate=1.0, momentum=0.0, schedule="plateau", plateau=config),
        steps_per_epoch=1, epochs=1)
    state = tx.init(PARAMS)
    for metric in (1.0, 2.0):  # the second epoch is bad: LR 1.0 -> 0.1
        state, _ = step_plateau(state, metric, config)
    updates, _ = tx.update({"w": jnp.ones(3)}, state, PARAMS)
    np.testing.assert_allclose(updates["w"], -0.1 * np.ones(3), rtol=1e-6)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_plateau_agrees_with_torch(mode):
    torch = pytest.importorskip("torch")
    metrics = np.round(np.random.default_rng(0).uniform(0.5, 0.6, 60), 2).tolist()  # many ties
    metrics[20] = float("nan")
    config = PlateauConfig(metric={"min": "val_loss", "max": "val_accuracy"}[mode], factor=0.5, patience=2, threshold=0.01, cooldown=2, min_lr=1e-3)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=0.5, patience=2, threshold=0.01, cooldown=2, min_lr=1e-3
    )
    expected = []
    for metric in metrics:
        scheduler.step(metric)
        expected.append(optimizer.param_groups[0]["lr"])
    lrs, _ = _plateau_lrs(config, metrics, learning_rate=0.1)
    assert len(set(expected)) > 3  # the sequence exercises several reductions and min_lr
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
