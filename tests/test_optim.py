"""Optimizers and schedules with PyTorch's semantics, and torch ReduceLROnPlateau on optax state."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.train import (
    OneCycleConfig,
    OptimConfig,
    PlateauConfig,
    current_learning_rate,
    make_optimizer,
    make_schedule,
    step_plateau,
)

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
        (dict(name="sgd", schedule="linear"),
         "schedule: unknown value 'linear'. Valid: constant, cosine, step, onecycle, plateau"),
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


def _torch_onecycle_lrs(total_steps, max_lr, pct_start, div_factor, final_div_factor):
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start, div_factor=div_factor,
        final_div_factor=final_div_factor, anneal_strategy="cos", three_phase=False, cycle_momentum=False,
    )
    lrs = []
    for _ in range(total_steps):  # the LR each optimizer.step() uses
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "steps_per_epoch, epochs, pct_start, div_factor, final_div_factor",
    [(10, 10, 0.3, 25.0, 1e4), (37, 1, 0.25, 10.0, 100.0), (3, 2, 0.5, 25.0, 1e4), (23, 1, 0.05, 25.0, 1e4)],
)
def test_onecycle_matches_torch_step_by_step(steps_per_epoch, epochs, pct_start, div_factor, final_div_factor):
    expected = _torch_onecycle_lrs(steps_per_epoch * epochs, 0.4, pct_start, div_factor, final_div_factor)
    config = OneCycleConfig(pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor)
    schedule = make_schedule("onecycle", learning_rate=0.4, steps_per_epoch=steps_per_epoch, epochs=epochs,
                             onecycle=config)
    ours = [float(schedule(step)) for step in range(steps_per_epoch * epochs)]
    # float32 vs torch's float64: near the end cos(pi * pct) + 1 loses digits (abs error ~1e-8)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)


def test_onecycle_hand_computed_values():
    # 50 steps, pct_start 0.3: torch's warm-up ends at step 0.3 * 50 - 1 = 14, the anneal at 49.
    schedule = make_schedule("onecycle", learning_rate=1.0, steps_per_epoch=10, epochs=5)
    initial, final = 1.0 / 25, 1.0 / 25 / 1e4
    cos_anneal = lambda start, end, pct: end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)  # noqa: E731
    expected = {0: initial, 7: (initial + 1.0) / 2, 14: 1.0, 24: cos_anneal(1.0, final, 10 / 35), 49: final,
                60: final}  # held after the last step
    for step, value in expected.items():
        assert math.isclose(float(schedule(step)), value, rel_tol=1e-5), step
    # optax's cosine_onecycle_schedule peaks one step later (int(pct_start * total) = 15): not torch's
    assert float(optax.cosine_onecycle_schedule(50, 1.0)(14)) < 0.999


def test_onecycle_counts_optimizer_updates_under_accumulation():
    tx = make_optimizer(
        OptimConfig(name="sgd", learning_rate=1.0, schedule="onecycle", grad_accum_steps=2),
        steps_per_epoch=20, epochs=5)  # 10 updates per epoch, 50 in all, as above
    schedule = make_schedule("onecycle", learning_rate=1.0, steps_per_epoch=10, epochs=5)
    params, state, update = PARAMS, tx.init(PARAMS), jax.jit(tx.update)
    for micro_step in range(1, 31):  # 15 updates
        updates, state = update({"w": jnp.ones(3)}, state, params)
        params = optax.apply_updates(params, updates)
        last_update = max(micro_step // 2 - 1, 0)  # the LR reported is the last update's
        assert math.isclose(current_learning_rate(state), float(schedule(last_update)), rel_tol=1e-6)


def test_clip_grad_norm_clips_the_raw_gradient_before_weight_decay():
    tx = make_optimizer(
        OptimConfig(name="sgd", learning_rate=1.0, momentum=0.0, weight_decay=0.1, clip_grad_norm=0.5, schedule="constant"),
        steps_per_epoch=1, epochs=1)
    grad = np.array([3.0, 0.0, 4.0])  # norm 5 -> scaled by 0.1
    updates, _ = tx.update({"w": jnp.asarray(grad, jnp.float32)}, tx.init(PARAMS), PARAMS)
    expected = -(grad * 0.5 / 5.0 + 0.1 * np.asarray(PARAMS["w"]))  # torch: clip_grad_norm_, then SGD
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-6)
    small, _ = tx.update({"w": jnp.full(3, 0.1)}, tx.init(PARAMS), PARAMS)  # under the limit: unclipped
    np.testing.assert_allclose(small["w"], -(0.1 + 0.1 * np.asarray(PARAMS["w"])), rtol=1e-6)


def test_grad_accumulation_averages_k_gradients_into_one_update_with_plateau():
    config = PlateauConfig(metric="val_loss", factor=0.5, patience=0)
    tx = make_optimizer(
        OptimConfig(name="sgd", learning_rate=1.0, momentum=0.0, schedule="plateau", plateau=config, grad_accum_steps=3),
        steps_per_epoch=3, epochs=1)
    state = tx.init(PARAMS)
    for metric in (1.0, 2.0):  # halve the LR through the state MultiSteps wraps
        state, _ = step_plateau(state, metric, config)
    assert math.isclose(current_learning_rate(state), 0.5)
    params, seen = PARAMS, []
    for grad in GRADS:
        updates, state = tx.update({"w": jnp.asarray(grad, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
        seen.append(np.asarray(params["w"]))
    np.testing.assert_array_equal(seen[0], PARAMS["w"])  # micro-steps change nothing
    np.testing.assert_array_equal(seen[1], PARAMS["w"])
    np.testing.assert_allclose(seen[2], np.asarray(PARAMS["w"]) - 0.5 * np.mean(GRADS, axis=0), rtol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(schedule="onecycle", warmup_epochs=1), "has its own warm-up"),
        (dict(clip_grad_norm=0.0), r"clip_grad_norm: must be > 0\.0, got 0\.0"),
        (dict(grad_accum_steps=0), "grad_accum_steps: must be >= 1"),
    ],
)
def test_bad_recipe_settings_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(OptimConfig(name="sgd", learning_rate=0.1, **call), steps_per_epoch=6, epochs=3)
    with pytest.raises(ValueError, match=r"pct_start: must be in \(0\.0, 1\.0\)"):
        OneCycleConfig(pct_start=1.0)
    with pytest.raises(ValueError, match="onecycle settings apply to the 'onecycle'"):
        make_schedule("cosine", learning_rate=0.1, steps_per_epoch=6, epochs=3, onecycle=OneCycleConfig())


@pytest.mark.parametrize("nesterov", [False, True])
def test_onecycle_cycled_momentum_trains_like_torch_sgd(nesterov):
    torch = pytest.importorskip("torch")
    grads = np.random.default_rng(0).normal(size=(12, 3))
    weight = torch.tensor(np.asarray(PARAMS["w"]), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=12)  # cycle_momentum=True
    for grad in grads:
        weight.grad = torch.tensor(grad)
        optimizer.step()
        scheduler.step()

    config = OneCycleConfig(cycle_momentum=True)
    tx = make_optimizer(
        OptimConfig(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01, schedule="onecycle", onecycle=config),
        steps_per_epoch=6, epochs=2)
    params, state = PARAMS, tx.init(PARAMS)
    for grad in grads:
        updates, state = tx.update({"w": jnp.asarray(grad, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["w"], weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_onecycle_momentum_runs_inverse_to_the_lr():
    from jaxcnn.train.onecycle import onecycle_momentum_schedule

    momentum = onecycle_momentum_schedule(50, OneCycleConfig(cycle_momentum=True))  # phase ends 14 and 49
    values = [float(momentum(step)) for step in (0, 7, 14, 49)]
    np.testing.assert_allclose(values, [0.95, 0.90, 0.85, 0.95], rtol=1e-6)
    with pytest.raises(ValueError, match="cycle_momentum: applies to the 'sgd' optimizer only"):
        OptimConfig(name="adam", learning_rate=0.1, schedule="onecycle", onecycle=OneCycleConfig(cycle_momentum=True))
