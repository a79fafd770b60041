"""`DataConfig`: which dataset, how it is split, augmented and batched."""

from __future__ import annotations

import dataclasses
import math

from jaxcnn.config import check_choice, check_float, check_int, check_int_or_auto, option, reraise_as
from jaxcnn.data.presets import check_dataset_name, list_datasets
from jaxcnn.data.transforms import EVAL_CROP_FRACTION, RECIPES, parse_augment

LABEL_MODES = ("fine", "coarse")
INPUT_PIPELINES = ("auto", "host", "device")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    name: str | None = option(None, f"dataset (required): {', '.join(list_datasets())}", flag="--data")
    dir: str | None = option(None, "where the dataset lies (default: ./data/<name>)", flag="--data-dir")
    image_size: int | None = option(None, "square input size (default: the dataset's)")
    batch_size: int | str = option(
        16, "global batch: the images of one optimizer step, split over all devices; auto: the largest "
            "per-device batch (a multiple of 8) whose compiled train step fits the device memory, times the "
            "devices (on CPU at most 128 per device)")
    val_split: float = option(
        0.2, "fraction of train held out for validation when the dataset has no val split; 0 trains on all "
             "of it (the best checkpoint, plateau and early stopping then watch the training loss)")
    augment: str | None = option(
        None, f"recipe ({', '.join(RECIPES)}) or a comma list of ops: flip, crop[:PAD], rrc[:MIN_AREA_%], "
              "rotate[:DEG], gray, randaugment[:N[:M]], trivialaugment, erase[:P]; e.g. cifar,randaugment:2:9,"
              "erase:0.25 (default: the dataset's)")
    hflip: float | None = option(None, "horizontal flip probability (default: the dataset's)")
    label_mode: str | None = option(None, "CIFAR-100 labels (default: fine)", choices=LABEL_MODES)
    download: bool = option(False, "download CIFAR/MNIST archives (checksum-verified)")
    cache: bool = option(False, "keep the decoded, resized images of a folder in memory")
    workers: int | str = option(
        0, "data worker processes (0: in-process; at most the usable CPUs, with a warning); auto: from the CPU "
           "count and the source (none on the CPU backend, which uses every core for the step)", resume=True)
    prefetch: int = option(2, "batches prepared ahead: by the loader's threads (or each worker) and, "
                              "already sharded, on the devices", resume=True)
    input_pipeline: str = option(
        "auto", "where batches are made: host (Grain, per-image transforms), device (the uint8 data set held on "
                "the devices, crop and flip there: in-memory datasets at the input size with recipes of crop and "
                "flip only) or auto (device on accelerators where it applies and the data set fits in a quarter "
                "of device memory, host otherwise); the batches are the same either way",
        choices=INPUT_PIPELINES, resume=True)

    def __post_init__(self):
        if self.name is not None:
            with reraise_as("name"):
                check_dataset_name(self.name)
        check_int("image_size", self.image_size, minimum=1, optional=True)
        check_int_or_auto("batch_size", self.batch_size, minimum=1)
        check_float("val_split", self.val_split, low=0.0, high=1.0, high_open=True)
        if self.augment is not None:
            with reraise_as("augment"):
                parse_augment(self.augment)
        check_float("hflip", self.hflip, low=0.0, high=1.0, optional=True)
        check_choice("label_mode", self.label_mode, LABEL_MODES, optional=True)
        check_int_or_auto("workers", self.workers, minimum=0)
        check_int("prefetch", self.prefetch, minimum=1)
        check_choice("input_pipeline", self.input_pipeline, INPUT_PIPELINES)

    def decode_size(self) -> int | None:
        """The size image folders decode to: the input size, or for random-resized-crop recipes the
        larger 1/0.875 frame they crop from (256 for 224), as torchvision's ImageNet recipe does."""
        if self.image_size and self.augment and any(op == "rrc" for op, _ in parse_augment(self.augment)):
            return math.floor(self.image_size / EVAL_CROP_FRACTION)
        return self.image_size
