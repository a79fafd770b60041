"""Tiny models and batches shared by the training-core tests (fast to compile on 2 CPU cores)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_CLASSES = 3
INPUT_SHAPE = (8, 8, 2)


class TinyCNN(nn.Module):
    """Conv -> BatchNorm -> ReLU -> Dropout -> Dense: every collection and rng the step handles.

    With `aux_logits=True` it also sows an auxiliary head's logits (train only), like GoogLeNet.
    """

    num_classes: int = NUM_CLASSES
    aux_logits: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        if self.aux_logits and (train or self.is_initializing()):  # params exist after init(train=False)
            aux = nn.Dense(self.num_classes, name="aux_head")(x).astype(jnp.float32)
            if train:
                self.sow("aux_logits", "aux1", aux)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


def make_batch(size: int, seed: int = 0, valid: int | None = None) -> dict:
    """A host batch in the loaders' layout; the examples past `valid` are padding (mask 0)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(size, np.float32)
    mask[: size if valid is None else valid] = 1.0
    return {
        "image": rng.normal(size=(size, *INPUT_SHAPE)).astype(np.float32),
        "label": rng.integers(0, NUM_CLASSES, size).astype(np.int32),
        "mask": mask,
    }


def tiny_state(optimizer, *, seed: int = 0, model: nn.Module | None = None):
    from jaxcnn.train import create_train_state

    return create_train_state(jax.random.key(seed), model or TinyCNN(), optimizer, INPUT_SHAPE)


def trees_equal(a, b) -> bool:
    """Same leaf paths, dtypes and bits (static fields such as `tx` are not compared)."""
    def bits(x):
        return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)

    leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    return [path for path, _ in leaves_a] == [path for path, _ in leaves_b] and all(
        x.dtype == y.dtype and np.array_equal(bits(x), bits(y)) for (_, x), (_, y) in zip(leaves_a, leaves_b)
    )
