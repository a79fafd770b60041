"""The frozen-backbone train step: only the head learns, the backbone's BatchNorm runs in inference
mode, no backward pass goes through the backbone, and at unfreezing the backbone's optimizer
state starts afresh under the run's one learning-rate schedule."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from jaxcnn.models.layers import BatchNorm
from jaxcnn.train import OptimConfig, compile_steps, create_train_state, make_mesh, make_optimizer, train_step
from jaxcnn.train.finetune import Freeze, backbone_groups
from train_helpers import INPUT_SHAPE, make_batch, trees_equal

BACKBONE, HEAD = ("conv", "norm"), ("fc1", "fc1_norm", "fc")


class HeadNormNet(nn.Module):
    """conv -> BN -> ReLU -> GAP (backbone); Dense -> BN -> ReLU -> Dropout -> Dense (head, as
    VGG's GAP head). `backbone_inference`: the reference with the backbone BN always in
    inference mode."""

    backbone_inference: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name="conv")(x)
        x = BatchNorm(use_running_average=not train or self.backbone_inference, name="norm")(x)
        x = nn.relu(x).mean(axis=(1, 2))
        x = BatchNorm(use_running_average=not train, name="fc1_norm")(nn.Dense(5, name="fc1")(x))
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
        return nn.Dense(3, name="fc")(x)


def labels_of(params) -> dict:
    return traverse_util.unflatten_dict({path: "head" if path[0] in HEAD else "backbone"
                                         for path in traverse_util.flatten_dict(params)})


def part(tree, names) -> dict:
    return {name: tree[name] for name in names if name in tree}


CONFIG = OptimConfig(name="adam", learning_rate=1e-2, weight_decay=1e-2, schedule="cosine")


def frozen_setup(steps_per_epoch=4, epochs=2, model=None):
    """A state with the (full) grouped optimizer, and the Freeze of the frozen phase."""
    model = model or HeadNormNet()
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *INPUT_SHAPE)), train=False))
    labels = labels_of(params["params"])
    make = lambda frozen: make_optimizer(CONFIG, steps_per_epoch=steps_per_epoch, epochs=epochs,  # noqa: E731
                                         groups=backbone_groups(labels, frozen=frozen))
    state = create_train_state(jax.random.key(0), model, make(False), INPUT_SHAPE)
    return state, Freeze(labels, make(True))


def host(tree):
    return jax.tree.map(np.asarray, tree)


def test_frozen_steps_keep_the_backbone_and_its_statistics_bit_for_bit():
    state, freeze = frozen_setup()
    before = host(state.replace(rng=None))  # a copy: the compiled step donates the state
    step, _ = compile_steps(make_mesh(), freeze=freeze)
    for seed in range(2):
        state, _ = step(state, make_batch(8, seed=seed))
    assert trees_equal(part(state.params, BACKBONE), part(before.params, BACKBONE))
    assert trees_equal(part(state.batch_stats, BACKBONE), part(before.batch_stats, BACKBONE))
    for name in HEAD:
        assert not trees_equal(state.params[name], before.params[name]), name
    assert not trees_equal(state.batch_stats["fc1_norm"], before.batch_stats["fc1_norm"])


def test_the_frozen_step_trains_the_head_as_with_the_backbone_batch_norm_in_inference_mode():
    state, freeze = frozen_setup()
    reference = state.replace(apply_fn=HeadNormNet(backbone_inference=True).apply,
                              tx=make_optimizer(CONFIG, steps_per_epoch=4, epochs=2))
    reference = reference.replace(opt_state=reference.tx.init(reference.params))
    batch = make_batch(8, seed=3)
    frozen, frozen_metrics = jax.jit(functools.partial(train_step, freeze=freeze))(state, batch)
    plain, plain_metrics = jax.jit(train_step)(reference, batch)  # Adam and weight decay act leaf by leaf
    np.testing.assert_allclose(frozen_metrics["loss_sum"], plain_metrics["loss_sum"], rtol=1e-6)
    for got, want in zip(jax.tree.leaves(part(frozen.params, HEAD)), jax.tree.leaves(part(plain.params, HEAD))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert trees_equal(frozen.batch_stats, plain.batch_stats)  # the head BN trained, the backbone's did not


def test_the_frozen_step_has_no_backward_pass_through_the_backbone():
    state, freeze = frozen_setup()
    batch = make_batch(8)

    def convolutions(**kw):
        return str(jax.make_jaxpr(lambda s, b: train_step(s, b, **kw))(state, batch)).count("conv_general_dilated")

    assert convolutions() == 2  # forward, and the kernel's gradient
    assert convolutions(freeze=freeze) == 1  # forward only


def test_unfreezing_starts_the_backbone_optimizer_afresh_at_the_scheduled_rate():
    steps_per_epoch, frozen_steps = 4, 4
    state, freeze = frozen_setup(steps_per_epoch=steps_per_epoch)
    fresh = host(state.opt_state)
    frozen_step, _ = compile_steps(make_mesh(), freeze=freeze)
    full_step, _ = compile_steps(make_mesh())
    for seed in range(frozen_steps):
        state, _ = frozen_step(state, make_batch(8, seed=seed))
    inner, initial = (optax.tree.get(s, "inner_states") for s in (state.opt_state, fresh))
    assert trees_equal(inner["backbone"], initial["backbone"])  # held: no moments, no count, no decay
    assert int(optax.tree.get(inner["head"], "count")) == frozen_steps

    before = host(state.params)
    state, _ = full_step(state, make_batch(8, seed=10))
    assert int(optax.tree.get(optax.tree.get(state.opt_state, "inner_states")["backbone"], "count")) == 1
    # Adam's first step is lr * g / (|g| + eps), i.e. |update| = lr, at the LR of update 5 of the cosine
    lr = optax.cosine_decay_schedule(CONFIG.learning_rate, 2 * steps_per_epoch)(frozen_steps)
    kernel = np.asarray(state.params["conv"]["kernel"]) - before["conv"]["kernel"]
    np.testing.assert_allclose(np.abs(kernel), lr, rtol=1e-3)
    assert float(optax.tree.get(state.opt_state, "hyperparams")["learning_rate"]) == pytest.approx(float(lr))
