"""Head / backbone labels per family, and the backbone learning-rate scale against separate
optimizers with the scaled learning rate (torch's parameter groups)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxcnn.config import ConfigError
from jaxcnn.models import create_model
from jaxcnn.train import EmaConfig, create_train_state
from jaxcnn.train.finetune import FinetuneConfig, head_labels, load_pretrained, scale_backbone_lr
from jaxcnn.train.optim import OptimConfig, make_optimizer
from jaxcnn.weights import save_torch_weights


def head_modules(arch, **options):
    model = create_model(arch, 4, **options)
    size = 32 if arch in ("lenet5", "resnet20") else 64
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                               train=False))["params"]
    labels = traverse_util.flatten_dict(head_labels(model, params))
    assert set(labels.values()) == {"head", "backbone"}
    return {path[0] for path, label in labels.items() if label == "head"}


@pytest.mark.parametrize("arch,options,head", [
    ("resnet50", {}, {"fc"}), ("resnet20", {}, {"fc"}),
    ("vgg11", {}, {"fc1", "fc1_norm", "fc"}), ("vgg11", {"head": "classic"}, {"fc1", "fc2", "fc"}),
    ("googlenet", {"aux_logits": True}, {"fc", "aux_head1", "aux_head2"}),
    ("lenet5", {}, {"fc1", "fc2", "fc"})])
def test_head_labels(arch, options, head):
    assert head_modules(arch, **options) == head


@pytest.mark.parametrize("name,weight_decay", [("sgd", 1e-2), ("adam", 1e-2), ("adamw", 1e-2)])
def test_backbone_lr_scale_equals_a_scaled_learning_rate(name, weight_decay):
    rng = np.random.default_rng(0)
    params = {"body": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
              "fc": {"kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)}}
    labels = {"body": {"kernel": "backbone"}, "fc": {"kernel": "head"}}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(3)]
    make = lambda lr: make_optimizer(OptimConfig(name=name, learning_rate=lr, schedule="cosine",
                                                 weight_decay=weight_decay), steps_per_epoch=3, epochs=2)

    def run(tx, p):
        state = tx.init(p)
        for g in grads:
            updates, state = tx.update(g, state, p)
            p = jax.tree.map(lambda a, u: a + u, p, updates)
        return p

    scaled = run(scale_backbone_lr(make(0.1), labels, 0.25), params)
    np.testing.assert_allclose(scaled["fc"]["kernel"], run(make(0.1), params)["fc"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(scaled["body"]["kernel"], run(make(0.025), params)["body"]["kernel"],
                               rtol=1e-5)


def test_backbone_lr_scale_must_be_positive():
    with pytest.raises(ValueError, match="must be > 0"):
        scale_backbone_lr(make_optimizer(OptimConfig(name="sgd", learning_rate=0.1), steps_per_epoch=1, epochs=1),
                          {}, 0.0)


def test_load_pretrained_starts_the_optimizer_and_the_ema_from_the_weights(tmp_path):
    model = create_model("lenet5", 10)
    weights = jax.jit(lambda key: model.init(key, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.key(1))
    path = save_torch_weights(weights, "lenet5", tmp_path / "lenet5.safetensors")
    tx = make_optimizer(OptimConfig(name="adam", learning_rate=0.1), steps_per_epoch=1, epochs=1)
    state = create_train_state(jax.random.key(0), model, tx, (32, 32, 3), ema=EmaConfig(decay=0.9))
    state = state.replace(opt_state=jax.tree.map(lambda x: x + 1, state.opt_state))  # not fresh

    loaded, report = load_pretrained(state, "lenet5", path, num_classes=10, input_shape=(32, 32, 3),
                                     rng=jax.random.key(0))
    assert not report.newly_initialized and not report.missing
    for tree in (loaded.params, loaded.ema.params):
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(weights["params"])))
    fresh = tx.init(loaded.params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded.opt_state), jax.tree.leaves(fresh)))


def test_finetune_config_checks_its_options():
    with pytest.raises(ConfigError, match=r"pretrained: must be a \.pth, \.pt, \.safetensors file"):
        FinetuneConfig(pretrained="weights.npz")
    with pytest.raises(ConfigError, match="backbone_lr_scale: must be > 0.0"):
        FinetuneConfig(backbone_lr_scale=-1.0)
    assert not FinetuneConfig(pretrained="w.pth").splits_backbone
    assert FinetuneConfig(freeze_backbone_epochs=2).splits_backbone
