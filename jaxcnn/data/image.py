"""The per-image transform base classes (Grain maps over `{"image": uint8 (H, W, C), ...}` records)
and the numpy <-> Pillow conversion the PIL-path transforms share."""

from __future__ import annotations

import abc

import grain
import numpy as np
from PIL import Image


def to_pil(image: np.ndarray) -> Image.Image:
    """uint8 (H, W, 1) -> mode L, (H, W, 3) -> RGB; other layouts are a ValueError."""
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"expected a uint8 (H, W, C) image with C in (1, 3), got shape {image.shape}")
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def from_pil(image: Image.Image) -> np.ndarray:
    """A mode L or RGB image -> uint8 (H, W, C), keeping the channel axis for gray images."""
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


class ImageMap(grain.transforms.Map):
    """A deterministic transform of `record["image"]`; `apply` works on a bare image."""

    @abc.abstractmethod
    def apply(self, image: np.ndarray) -> np.ndarray: ...

    def map(self, record):
        return {**record, "image": self.apply(record["image"])}


class RandomImageMap(grain.transforms.RandomMap):
    """A random transform of `record["image"]` drawing only from the generator Grain passes."""

    @abc.abstractmethod
    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...

    def random_map(self, record, rng):
        return {**record, "image": self.apply(record["image"], rng)}
