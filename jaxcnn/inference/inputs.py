"""What a trained model expects as input, and the evaluation preprocessing that produces it.

A run records an `InputSpec` in its `config.json` (key "inputs"): the class names, the model's
input size and channels, the normalization statistics and the augmentation recipe whose
*evaluation* side (`build_transforms(train=False)`) preprocesses. Any image then goes through
exactly the steps the run's evaluation loader applied to its split:

    file  -> decode_image(channels, decode_size)            (as the image-folder source decodes)
    array / PIL image -> to_mode(channels) -> Resize(decode_size)   (the same resize, in memory)
          -> build_transforms(augment, train=False) -> ToChannels -> stack -> Normalize

`decode_size` is the square size image-folder datasets decode every file to before the
transforms (None for array datasets such as MNIST or CIFAR, whose images are used as stored).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps

from jaxcnn.data.decode import decode_image, to_mode
from jaxcnn.data.transforms import Normalize, Resize, ToChannels, as_size, build_transforms

ImageLike = Any  # a path, a PIL image, or a uint8 (H, W) / (H, W, C) array


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The input contract of a trained model (see the module docstring)."""

    class_names: tuple[str, ...]
    image_size: tuple[int, int]  # the model's input (height, width)
    channels: int
    mean: tuple[float, ...]  # per input channel, on the 0..1 scale
    std: tuple[float, ...]
    augment: str  # the recipe; only its evaluation side is used here
    decode_size: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> InputSpec:
        return cls(
            class_names=tuple(values["class_names"]), image_size=as_size(tuple(values["image_size"])),
            channels=int(values["channels"]), mean=tuple(values["mean"]), std=tuple(values["std"]),
            augment=values["augment"], decode_size=values.get("decode_size"),
        )

    @classmethod
    def from_data(cls, data, config) -> InputSpec:
        """The spec of a run of `config` on `data` (a `DataSplits`), as its evaluation loader sees it."""
        from jaxcnn.data import Loader, Subset
        from jaxcnn.data.folder import ImageFolderSource

        image_size = as_size(config.data.image_size or data.default_image_size)
        augment = config.data.augment or data.default_augment
        # The loader resolves the statistics per output channel (e.g. RGB statistics for gray input).
        with Loader(data.train, batch_size=1, train=False, image_size=image_size, mean=data.mean,
                    std=data.std, augment=augment, channels=data.channels) as loader:
            normalize = loader.normalize
        source = data.train
        while isinstance(source, Subset):
            source = source.source
        decode_size = source.image_size if isinstance(source, ImageFolderSource) else None
        return cls(tuple(data.class_names), image_size, int(data.channels), tuple(normalize.mean),
                   tuple(normalize.std), augment, decode_size)

    # ---------------------------------------------------------------- preprocessing

    def transforms(self) -> list:
        """The per-image evaluation transforms, ending in the model's channel count."""
        return [*build_transforms(self.augment, train=False, image_size=self.image_size), ToChannels(self.channels)]

    def normalize(self) -> Normalize:
        return Normalize(self.mean, self.std)

    def load(self, image: ImageLike) -> np.ndarray:
        """One image as the dataset source would hand it over: uint8 (H, W, C) at `decode_size`.

        Paths go through the hardened decoder (`UnreadableImage` for bad files).
        """
        if isinstance(image, (str, os.PathLike)):
            return decode_image(image, channels=self.channels, size=self.decode_size)
        if isinstance(image, Image.Image):
            pil = ImageOps.exif_transpose(image)
        elif isinstance(image, np.ndarray):
            pil = _array_to_pil(image)
        else:
            raise TypeError(f"an image must be a path, a PIL image or a uint8 array, got {type(image).__name__}")
        array = np.asarray(to_mode(pil, self.channels))
        array = array[..., None] if array.ndim == 2 else array
        return Resize((self.decode_size, self.decode_size)).apply(array) if self.decode_size else array

    def resize(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Loaded images -> uint8 (N, H, W, C) at the model's input size, not yet normalized."""
        transforms = self.transforms()
        out = []
        for image in images:
            for transform in transforms:
                image = transform.apply(image)
            out.append(image)
        return np.stack(out).astype(np.uint8, copy=False)

    def prepare(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Loaded uint8 images -> the model's float32 (N, H, W, C) batch, normalized as the loader does."""
        return self.normalize().apply(self.resize(images))


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 (0..255), got {array.dtype}; convert floats with "
                         "(x * 255).round().astype(np.uint8)")
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if array.ndim == 2:
        return Image.fromarray(array)
    raise ValueError(f"an image array must be (H, W) or (H, W, C) with C in 1, 3, 4; got shape {array.shape}")
