"""What crosses to the devices, and how the step turns it into the model's input.

Loaders hand the steps uint8 batches,

    {"image": uint8 (B, H, W, C), "label": int32 (B,), "mask": float32 (B,)}

plus `"erase": int32 (B, 4)` when the recipe ends in RandomErasing: a quarter of float32's bytes
on the way to the device and no float math on the host. `prepare_inputs`, the first thing the
jitted train and eval steps do, normalizes them there, in float32 before any bfloat16 cast of
the model: `(x / 255 - mean) / std` per channel with the same float32 constants the host
`jaxcnn.data.transforms.Normalize` uses, then zeroes each image's erase box, as torchvision's
`RandomErasing(value=0)` does after `Normalize`. A float image batch (already normalized by its
maker) passes through unchanged, so `train_step(state, batch)` works on either.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.autoaugment import ERASE_KEY
from jaxcnn.data.transforms import Normalize


@dataclasses.dataclass(frozen=True)
class InputNormalization:
    """Per-channel input statistics on the 0..1 scale (uint8 x -> `(x / 255 - mean) / std`).

    Hashable by value, so it is a static setting of the compiled steps (`compile_steps(mesh,
    normalize=...)`); `InputNormalization.of(loader.normalize)` takes a loader's statistics.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        Normalize(self.mean, self.std)  # the one check: per-channel, same length, std > 0

    @classmethod
    def of(cls, stats) -> InputNormalization:
        """The statistics of anything with per-channel `mean` and `std` (a `Normalize`, an `InputSpec`)."""
        return cls(stats.mean, stats.std)

    @property
    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 (scale, offset) with normalized = x * scale + offset, the host `Normalize`'s own."""
        return Normalize(self.mean, self.std).affine


def normalize_images(images: jax.Array, normalize: InputNormalization | None) -> jax.Array:
    """uint8 (..., C) images -> float32 `(x / 255 - mean) / std`; float images are returned as they are."""
    if jnp.issubdtype(images.dtype, jnp.floating):
        return images
    if images.dtype != jnp.uint8:
        raise TypeError(f"batch images must be uint8 (0..255) or already-normalized floats, got {images.dtype}")
    if normalize is None:
        raise ValueError("a uint8 image batch needs the input statistics to normalize it: pass "
                         "normalize=InputNormalization(mean, std) to compile_steps, build_training or the step")
    scale, offset = normalize.affine
    if images.shape[-1] != scale.shape[0]:
        raise ValueError(f"the images have {images.shape[-1]} channels, the input statistics {scale.shape[0]}")
    return images.astype(jnp.float32) * scale + offset


def erase_boxes(images: jax.Array, boxes: jax.Array) -> jax.Array:
    """Zero box `boxes[i]` = (top, left, height, width) of image i of (B, H, W, C) `images`; a
    box of zero height or width erases nothing."""
    top, left, height, width = (boxes[:, k, None] for k in range(4))  # each (B, 1)
    rows, cols = jnp.arange(images.shape[1]), jnp.arange(images.shape[2])
    in_rows = (rows >= top) & (rows < top + height)  # (B, H)
    in_cols = (cols >= left) & (cols < left + width)  # (B, W)
    inside = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return jnp.where(inside, jnp.zeros((), images.dtype), images)


def prepare_inputs(batch: dict, normalize: InputNormalization | None = None) -> dict:
    """A loader batch -> the step's batch: float32 images normalized (`normalize_images`), the
    RandomErasing boxes under "erase" zeroed after that and the key dropped; labels and mask as given."""
    image = normalize_images(batch["image"], normalize)
    if ERASE_KEY in batch:
        image = erase_boxes(image, batch[ERASE_KEY])
    return {**{key: value for key, value in batch.items() if key != ERASE_KEY}, "image": image}
