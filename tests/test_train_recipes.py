"""Training recipes inside the pure step: top-5, EMA weights, MixUp/CutMix, gradient accumulation."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.train import (
    OptimConfig,
    Checkpointer,
    EmaConfig,
    MixupConfig,
    create_train_state,
    eval_step,
    evaluate,
    make_mesh,
    make_optimizer,
    train_step,
)
from jaxcnn.train.ema import init_ema
from jaxcnn.train.mixup import cutmix_box, mix_batch
from train_helpers import INPUT_SHAPE, TinyCNN, make_batch, tiny_state, trees_equal

H, W = INPUT_SHAPE[:2]
# One jitted function each, shared by the tests: each new static setting or state structure
# compiles once (Beta sampling and MultiSteps' two branches are slow to compile on 2 cores).
STEP = jax.jit(train_step, static_argnames=("label_smoothing", "mixup"))
EVAL = jax.jit(eval_step)
MIX = jax.jit(mix_batch, static_argnums=2)
MIXUP = MixupConfig(mixup_alpha=0.8)
CUTMIX = MixupConfig(mixup_alpha=0.0, cutmix_alpha=1.0)
BOTH = MixupConfig(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)


class TinyConvNet(nn.Module):
    """Conv -> ReLU -> mean -> Dense: no BatchNorm, no dropout (a batch is a plain mean of examples)."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)))(x)).mean(axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


def sgd(steps_per_epoch=1, **kw):
    return make_optimizer(OptimConfig(name="sgd", learning_rate=0.5, momentum=0.0, schedule="constant", **kw),
                          steps_per_epoch=steps_per_epoch, epochs=1)


@pytest.fixture(scope="module")
def cnn_state():
    """TinyCNN: BatchNorm and dropout."""
    return tiny_state(sgd())


@pytest.fixture(scope="module")
def conv_state():
    """TinyConvNet: neither, so a step is a plain function of the images."""
    return tiny_state(sgd(), model=TinyConvNet())


def batch_with_labels(size, seed, num_classes):
    batch = make_batch(size, seed=seed)
    batch["label"] = np.random.default_rng(seed).integers(0, num_classes, size).astype(np.int32)
    return batch


# ---------------------------------------------------------------- top-5


def test_top5_is_a_masked_sum_from_six_classes_up():
    state = tiny_state(sgd(), model=TinyConvNet(num_classes=7))
    batch = batch_with_labels(8, seed=2, num_classes=7)
    batch["mask"][6:] = 0.0
    metrics = jax.device_get(EVAL(state, batch))
    logits = np.asarray(jax.jit(state.apply_fn, static_argnames="train")({"params": state.params}, batch["image"],
                                                                         train=False))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    expected = sum(batch["label"][i] in top5[i] for i in range(6))
    assert metrics["correct_top5"] == expected and metrics["correct"] <= expected < 6
    _, train_metrics = STEP(state, batch)
    assert train_metrics["correct_top5"] <= 6

    result = evaluate(EVAL, state, [batch], make_mesh())
    assert result.top5_accuracy == pytest.approx(expected / 6)
    assert result.as_dict([str(c) for c in range(7)])["top5_accuracy"] == result.top5_accuracy
    three = tiny_state(sgd(), model=TinyConvNet())
    assert "correct_top5" not in EVAL(three, make_batch(4))
    assert evaluate(EVAL, three, [make_batch(4)], make_mesh()).top5_accuracy is None


# ---------------------------------------------------------------- EMA


def test_ema_decay_follows_timm_model_ema_v3():
    plain = EmaConfig(decay=0.99)
    warm = EmaConfig(decay=0.6, use_warmup=True, min_decay=0.3)
    decays = {u: (float(plain.decay_at(u)), float(warm.decay_at(u))) for u in (1, 2, 3, 10)}
    # timm get_decay(step): t = step - 1; 0 when t <= 0; warm-up 1 - (1 + t) ** (-2/3), clamped
    assert decays[1] == (0.0, 0.0)
    assert decays[2] == pytest.approx((0.99, max(1 - 2 ** (-2 / 3), 0.3)))  # 0.370
    assert decays[3] == pytest.approx((0.99, 1 - 3 ** (-2 / 3)))  # 0.519
    assert decays[10] == pytest.approx((0.99, 0.6))  # 1 - 10 ** (-2/3) = 0.785, capped
    assert float(EmaConfig(decay=0.9, use_warmup=True, min_decay=0.5).decay_at(2)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="min_decay <= decay"):
        EmaConfig(decay=0.5, min_decay=0.6)


def _train(state, batches, **step_kw):
    for batch in batches:
        state, _ = STEP(state, batch, **step_kw)
    return state


def test_ema_with_decay_zero_is_the_raw_model_bit_for_bit():
    state = create_train_state(jax.random.key(0), TinyCNN(), sgd(), INPUT_SHAPE, ema=EmaConfig(decay=0.0))
    state = _train(state, [make_batch(8, seed=s) for s in range(3)])
    assert trees_equal(state.ema.params, state.params)
    assert trees_equal(state.ema.batch_stats, state.batch_stats)


def test_ema_update_by_hand_params_and_batch_stats(cnn_state):
    state = cnn_state.replace(ema=init_ema(cnn_state.params, cnn_state.batch_stats, EmaConfig(decay=0.75)))
    after_one = _train(state, [make_batch(8, seed=0)])
    model_one = jax.device_get((after_one.params, after_one.batch_stats))
    assert trees_equal(after_one.ema.params, after_one.params)  # the first update copies (timm decay 0)
    after_two = _train(after_one, [make_batch(8, seed=1)])
    expected = jax.tree.map(lambda one, two: 0.75 * one + 0.25 * np.asarray(two),
                            model_one, (after_two.params, after_two.batch_stats))
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7),
                 (after_two.ema.params, after_two.ema.batch_stats), expected)
    ema_mean, model_mean = after_two.ema.batch_stats["BatchNorm_0"]["mean"], after_two.batch_stats["BatchNorm_0"]["mean"]
    assert not np.allclose(ema_mean, model_mean)

    view = after_two.ema_view()
    assert trees_equal((view.params, view.batch_stats), (after_two.ema.params, after_two.ema.batch_stats))
    with pytest.raises(ValueError, match="keeps no EMA"):
        cnn_state.ema_view()


def test_ema_counts_optimizer_updates_under_accumulation():
    config = EmaConfig(decay=0.5)
    state = create_train_state(jax.random.key(0), TinyCNN(), sgd(steps_per_epoch=2, grad_accum_steps=2),
                               INPUT_SHAPE, ema=config)
    batches = [make_batch(8, seed=s) for s in range(4)]
    after_micro = _train(state, batches[:1])
    assert trees_equal(after_micro.ema.params, state.ema.params)  # no update yet: EMA untouched
    after_update = _train(after_micro, batches[1:2])
    assert trees_equal(after_update.ema.params, after_update.params)  # update 1: copy
    after_two = _train(after_update, batches[2:])
    expected = jax.tree.map(lambda a, b: 0.5 * np.asarray(a) + 0.5 * np.asarray(b),
                            after_update.params, after_two.params)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7), after_two.ema.params, expected)


def test_a_restored_checkpoint_continues_the_recipe_exactly(tmp_path):
    """EMA, MixUp/CutMix keys, accumulated gradients, one-cycle position: all live in the state."""
    optimizer = make_optimizer(
        OptimConfig(name="sgd", learning_rate=0.1, schedule="onecycle", clip_grad_norm=1.0, grad_accum_steps=2),
        steps_per_epoch=4, epochs=2)
    untrained = create_train_state(jax.random.key(0), TinyCNN(), optimizer, INPUT_SHAPE,
                                   ema=EmaConfig(decay=0.9, use_warmup=True))
    batches = [make_batch(8, seed=s) for s in range(6)]
    straight = _train(untrained, batches, mixup=BOTH, label_smoothing=0.1)
    halfway = _train(untrained, batches[:3], mixup=BOTH, label_smoothing=0.1)  # mid-accumulation
    with Checkpointer(tmp_path / "ckpt") as checkpointer:
        checkpointer.save(1, halfway, meta={}, metrics={"val_accuracy": 0.5})
        restored, _ = checkpointer.restore(untrained)
    assert restored.ema.config == halfway.ema.config and trees_equal(restored, halfway)
    assert trees_equal(_train(restored, batches[3:], mixup=BOTH, label_smoothing=0.1), straight)


# ---------------------------------------------------------------- MixUp / CutMix


def test_inactive_mixup_is_the_unmixed_step_bit_for_bit(cnn_state):
    state, batch = cnn_state, make_batch(8, seed=5)
    reference = _train(state, [batch])
    for config in (MixupConfig(prob=0.0), MixupConfig(mixup_alpha=0.0, cutmix_alpha=0.0)):
        assert not config.active
        assert trees_equal(_train(state, [batch], mixup=config), reference)


def test_a_batch_drawn_unmixed_trains_exactly_as_no_mixing(conv_state):
    state, batch = conv_state, make_batch(8, seed=5)
    reference, reference_metrics = STEP(state, batch)
    never = MixupConfig(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1e-12)  # active, but lam = 1 drawn
    mixed, metrics = STEP(state, batch, mixup=never)
    assert trees_equal((mixed.params, metrics), (reference.params, reference_metrics))


def test_mixup_blends_each_example_with_its_mirror():
    batch = make_batch(6, seed=1)
    mixed = MIX(jax.random.key(3), batch, MIXUP)
    lam = float(mixed.lam[0])
    assert 0.0 < lam < 1.0 and np.all(np.asarray(mixed.lam) == lam)
    expected = lam * batch["image"] + (1 - lam) * batch["image"][::-1]
    np.testing.assert_allclose(mixed.image, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(mixed.partner_label, batch["label"][::-1])


def test_cutmix_pastes_a_box_whose_area_is_one_minus_lam():
    image = np.arange(6 * H * W, dtype=np.float32).reshape(6, H, W, 1) + 1.0  # every pixel distinct
    batch = {"image": np.repeat(image, 2, axis=-1), "label": np.arange(6, dtype=np.int32),
             "mask": np.ones(6, np.float32)}
    seen_boxes = 0
    for seed in range(8):
        mixed = MIX(jax.random.key(seed), batch, CUTMIX)
        pasted = np.asarray(mixed.image) == batch["image"][::-1]
        kept = np.asarray(mixed.image) == batch["image"]
        assert np.all(pasted | kept)
        for i in (0, 1, 2):  # the middle pair are distinct images too
            rows, cols = np.nonzero(pasted[i, :, :, 0])
            area = len(rows)
            assert float(mixed.lam[i]) == pytest.approx(1 - area / (H * W))
            if area:
                seen_boxes += 1
                assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
    assert seen_boxes > 0


def test_cutmix_box_matches_timm_rand_bbox():
    lam = jnp.float32(0.64)  # sqrt(1 - lam) = 0.6: an 8-pixel side cuts int(4.8) = 4, half 2
    for seed in range(20):
        box, corrected = cutmix_box(jax.random.key(seed), lam, H, W)
        key_y, key_x = jax.random.split(jax.random.key(seed))
        cy, cx = int(jax.random.randint(key_y, (), 0, H)), int(jax.random.randint(key_x, (), 0, W))
        expected = np.zeros((H, W), bool)
        expected[np.clip(cy - 2, 0, H):np.clip(cy + 2, 0, H), np.clip(cx - 2, 0, W):np.clip(cx + 2, 0, W)] = True
        np.testing.assert_array_equal(box, expected)
        assert float(corrected) == pytest.approx(1 - expected.sum() / (H * W))


def test_padding_never_mixes_into_a_real_example():
    batch = make_batch(6, seed=2, valid=5)  # slot 5 is padding; its mirror is slot 0
    mixed = MIX(jax.random.key(0), batch, BOTH)
    np.testing.assert_array_equal(mixed.image[0], batch["image"][0])
    assert float(mixed.lam[0]) == 1.0 and float(mixed.lam[1]) < 1.0


def _mixed_loss_by_hand(state, batch, config, label_smoothing):
    """timm's mixup_target + SoftTargetCrossEntropy in numpy, on the images the step mixed."""
    _, _, mix_key = jax.random.split(state.rng, 3)  # the step's key split
    mixed = MIX(mix_key, batch, config)
    apply = jax.jit(state.apply_fn, static_argnames="train")
    logits = np.asarray(apply({"params": state.params}, mixed.image, train=True), np.float64)
    classes = logits.shape[-1]
    off, on = label_smoothing / classes, 1 - label_smoothing + label_smoothing / classes
    one_hot = lambda y: np.where(np.eye(classes)[y] > 0, on, off)  # noqa: E731
    lam = np.asarray(mixed.lam, np.float64)[:, None]
    targets = lam * one_hot(batch["label"]) + (1 - lam) * one_hot(batch["label"][::-1])
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    correct = (logits.argmax(-1) == batch["label"]).sum()  # against the original labels
    return -(targets * log_probs).sum(), correct, np.asarray(mixed.lam)


@pytest.mark.parametrize("config", [MIXUP, CUTMIX])
def test_mixed_step_loss_equals_hand_computed_mixed_cross_entropy(config, conv_state):
    state, batch = conv_state, make_batch(8, seed=7)
    _, metrics = STEP(state, batch, mixup=config, label_smoothing=0.1)
    loss, correct, lam = _mixed_loss_by_hand(state, batch, config, 0.1)
    assert np.all(lam < 1.0)  # this key does mix
    np.testing.assert_allclose(metrics["loss_sum"], loss, rtol=1e-5)
    assert metrics["correct"] == correct


# ---------------------------------------------------------------- gradient accumulation


def test_accumulating_k_batches_equals_one_batch_of_k_times_b():
    batches = [make_batch(4, seed=s) for s in range(6)]
    kw = dict(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, clip_grad_norm=0.05,
              schedule="constant")
    accumulated = tiny_state(make_optimizer(OptimConfig(grad_accum_steps=3, **kw), steps_per_epoch=6, epochs=1),
                             model=TinyConvNet())
    whole = tiny_state(make_optimizer(OptimConfig(**kw), steps_per_epoch=2, epochs=1), model=TinyConvNet())
    initial = jax.device_get(whole.params)
    accumulated = _train(accumulated, batches)
    joined = [{k: np.concatenate([b[k] for b in batches[i:i + 3]]) for k in batches[0]} for i in (0, 3)]
    whole = _train(whole, joined)
    assert int(accumulated.step) == 6 and int(whole.step) == 2
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=0, atol=1e-5), accumulated.params, whole.params)
    assert not np.allclose(whole.params["Dense_0"]["kernel"], initial["Dense_0"]["kernel"], atol=1e-3)
