"""In-memory sources: decoded uint8 NHWC images + integer labels (CIFAR, MNIST, cached TFDS).

Archive datasets are small enough to decode once into two numpy arrays; indexing them is then
a view, and the pipeline's workers share them copy-on-write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from jaxcnn.data.splits import DataError, DataSplits, Source, Subset, stratified_split

log = logging.getLogger(__name__)

# Per-channel mean/std on the 0..1 scale over each dataset's training split, as published and
# used by the PyTorch tutorials (CIFAR std is the per-pixel std, not the per-image one).
PUBLISHED_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}


class ArraySource:
    """A grain random-access source over `images` (N, H, W, C) uint8 and `labels` (N,) ints."""

    in_memory = True  # records are views of `images`: nothing is decoded per record

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int],
        *,
        class_names: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        name: str = "arrays",
    ):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"{name}: images must be uint8 (N, H, W, C) with C in (1, 3); "
                f"got {images.dtype} {images.shape}"
            )
        if labels.shape != (len(images),):
            raise ValueError(f"{name}: {len(images)} images but labels of shape {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(
                f"{name}: labels span [{labels.min()}, {labels.max()}] but there are "
                f"{len(class_names)} class names"
            )
        self.name = name
        self.images = images
        self.labels = labels.astype(np.int32)
        self.class_names = tuple(class_names)
        self.channels = images.shape[-1]
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if not len(self.mean) == len(self.std) == self.channels:
            raise ValueError(f"{name}: mean/std need {self.channels} values, got {self.mean}, {self.std}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index]}

    def __repr__(self) -> str:
        return f"ArraySource({self.name}, n={len(self)}, image={self.images.shape[1:]})"


def channel_stats(images: Iterable[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) on the 0..1 scale, rounded to 4 places, of uint8 HWC images or
    NHWC blocks; exact integer sums, accumulated block by block.
    """
    total = total_sq = count = 0
    for block in images:
        block = np.asarray(block)
        pixels = block.reshape(-1, block.shape[-1]).astype(np.int64)
        total = total + pixels.sum(0)
        total_sq = total_sq + (pixels * pixels).sum(0)
        count += len(pixels)
    if not count:
        raise ValueError("channel_stats needs at least one image")
    mean = total / count
    # Floored at one grey level, so normalizing a constant channel cannot divide by zero.
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 1.0))
    return tuple(round(float(m), 4) for m in mean / 255), tuple(round(float(s), 4) for s in std / 255)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """A DataError naming `where` (a file) when a label is outside 0..num_classes-1: the file is
    corrupt or of another dataset, and a wrong label would be trained on silently."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise DataError(f"{where} holds label {int(labels[bad[0]])} (record {int(bad[0])}), but its {num_classes}"
                        f" classes have labels 0..{num_classes - 1}: it is corrupt or of another dataset.")


def reject_cache(dataset: str, cache: bool) -> None:
    """`cache` decodes image files into memory; archive datasets are decoded there already."""
    if cache:
        raise DataError(
            f"data.cache does not apply to {dataset}: it is decoded into memory already "
            "(cache is for image folders and TFDS datasets)."
        )


def split_train(
    name: str,
    train: Source,
    test: Source | None,
    *,
    val_split: float,
    split_seed: int,
    default_image_size: int,
    default_augment: str,
) -> DataSplits:
    """DataSplits whose validation set is a stratified, seeded part of `train` (which has `.labels`)."""
    train_idx, val_idx = stratified_split(train.labels, val_split, split_seed)
    log.info("%s: %d train / %d val (split seed %d) / %s test", name, len(train_idx), len(val_idx),
             split_seed, len(test) if test is not None else "no")
    return DataSplits(
        name=name,
        train=Subset(train, train_idx),
        val=Subset(train, val_idx),
        test=test,
        class_names=train.class_names,
        channels=train.channels,
        mean=train.mean,
        std=train.std,
        default_image_size=default_image_size,
        default_augment=default_augment,
        val_is_split=True,
    )
