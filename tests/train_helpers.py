"""Tiny models and batches shared by the training-core tests (fast to compile on 2 CPU cores)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_CLASSES = 3
INPUT_SHAPE = (8, 8, 2)
INPUT_MEAN, INPUT_STD = (0.45, 0.55), (0.22, 0.27)  # the statistics uint8 batches are normalized with


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


def make_uint8_batch(size: int, seed: int = 0, valid: int | None = None, erase: bool = False) -> dict:
    """A host batch as the loaders deliver it: uint8 images (the step normalizes them with
    INPUT_MEAN / INPUT_STD), int32 labels, the mask; with `erase`, RandomErasing boxes
    (top, left, height, width) on every other example, none on the rest."""
    rng = np.random.default_rng(seed)
    batch = make_batch(size, seed, valid)
    batch["image"] = rng.integers(0, 256, (size, *INPUT_SHAPE), np.uint8)
    if erase:
        boxes = np.zeros((size, 4), np.int32)
        for i in range(0, size, 2):
            height, width = rng.integers(1, INPUT_SHAPE[:2])
            top, left = rng.integers(0, INPUT_SHAPE[0] - height + 1), rng.integers(0, INPUT_SHAPE[1] - width + 1)
            boxes[i] = top, left, height, width
        batch["erase"] = boxes
    return batch


def normalized_on_host(batch: dict, mean=INPUT_MEAN, std=INPUT_STD) -> dict:
    """`batch` as the loaders delivered it before the step normalized: float32 images normalized on
    the host (`Normalize`), then each erase box set to 0 (torchvision's RandomErasing after Normalize)."""
    from jaxcnn.data.transforms import Normalize

    image = Normalize(mean, std).apply(batch["image"])
    for i, (top, left, height, width) in enumerate(batch.get("erase", ())):
        image[i, top : top + height, left : left + width] = 0.0
    return {"image": image, "label": batch["label"], "mask": batch["mask"]}


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
