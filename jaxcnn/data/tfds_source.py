"""`--data tfds:NAME`: a TensorFlow Datasets dataset the user already prepared (array_record).

Reading prepared data with `tfds.data_source` needs no TensorFlow; preparing it does, once
(`tfds build NAME --file_format=array_record`). Records are decoded on access, or all at once
into memory with `cache=True` (fixed-size images only).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from jaxcnn.data.arrays import PUBLISHED_STATS, ArraySource, channel_stats
from jaxcnn.data.splits import DataError, DataNotFoundError, DataSplits, Subset, given_folder, stratified_split
from jaxcnn.errors import MissingDependencyError

log = logging.getLogger(__name__)

_FORMAT = "array_record"  # the random-access file format tfds.data_source reads
_STATS_SAMPLE = 1000  # images read to estimate mean/std of a dataset without published ones
_READ_CHUNK = 1024


class TfdsSource:
    """One split of a prepared TFDS dataset as a Source: records mapped to {"image", "label"}."""

    def __init__(self, name: str, split: str, data_dir, *, image_key: str, label_key: str,
                 class_names, channels: int):
        import tensorflow_datasets as tfds

        self.name, self.split = name, split
        self.image_key, self.label_key = image_key, label_key
        self.class_names, self.channels = tuple(class_names), channels
        self.mean: tuple[float, ...] = ()  # set by load_tfds once known
        self.std: tuple[float, ...] = ()
        kwargs = dict(split=split, data_dir=data_dir, download=False, builder_kwargs={"file_format": _FORMAT})
        self.records = tfds.data_source(name, **kwargs)
        # A second view that leaves images encoded, to read every label cheaply.
        self._label_records = tfds.data_source(name, decoders={image_key: tfds.decode.SkipDecoding()}, **kwargs)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        return self._convert(self.records[index])

    def read(self, indices) -> list[dict]:
        """Records at `indices`, fetched in one batched read."""
        return [self._convert(r) for r in self.records.__getitems__([int(i) for i in indices])]

    def _convert(self, record: dict) -> dict:
        image = np.asarray(record[self.image_key])
        if image.ndim == 2:
            image = image[..., None]
        return {"image": image, "label": np.int32(record[self.label_key])}

    @functools.cached_property
    def labels(self) -> np.ndarray:
        labels = []
        for start in range(0, len(self), _READ_CHUNK):
            keys = list(range(start, min(start + _READ_CHUNK, len(self))))
            labels.extend(r[self.label_key] for r in self._label_records.__getitems__(keys))
        return np.asarray(labels, dtype=np.int32)

    def __repr__(self) -> str:
        return f"TfdsSource({self.name}, split={self.split!r}, n={len(self)})"


def load_tfds(name: str, data_dir=None, *, val_split, split_seed, image_size=None, download=False,
              label_mode=None, cache=False) -> DataSplits:
    """A prepared TFDS dataset: its train split, its validation split (or a stratified, seeded
    part of train), and its test split when it has one.

    `label_mode` picks the ClassLabel feature (default "label"; "coarse" finds "coarse_label").
    `cache=True` decodes every image into memory up front.
    """
    tfds = _import_tfds()
    if data_dir and "://" not in str(data_dir):  # a local data.dir must be a folder (gs://... is TFDS's to check)
        data_dir = given_folder(data_dir, f"Point data.dir at the TFDS data dir where tfds:{name} is prepared.")
    build = (f"pip install tensorflow tensorflow-datasets && tfds build {name} --file_format={_FORMAT}"
             + (f" --data_dir {data_dir}" if data_dir else ""))
    if download:
        raise DataError(f"data.download does not apply to tfds:{name}: preparing a TFDS dataset needs "
                        f"TensorFlow. Prepare it once with `{build}`, then read it here without data.download.")
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format=_FORMAT)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DataNotFoundError(f"TFDS knows no dataset {name!r} and none is prepared under "
                                f"{data_dir or 'the default TFDS data dir'}.") from error
    if not builder.is_prepared():
        raise DataNotFoundError(f"tfds:{name} is not prepared in {builder.data_dir}. jaxcnn reads prepared "
                                f"TFDS data without TensorFlow, but preparing it needs TensorFlow, once: `{build}`.")
    info = builder.info
    formats = {str(getattr(f, "value", f)) for f in (info.available_file_formats() or {info.file_format})}
    if _FORMAT not in formats:
        raise DataNotFoundError(f"tfds:{name} in {builder.data_dir} is prepared as {sorted(formats)}; random "
                                f"access needs {_FORMAT}. Prepare it again (needs TensorFlow): `{build}`.")
    if "train" not in info.splits:
        raise DataError(f"tfds:{name} has no 'train' split; its splits are {list(info.splits)}.")
    image_key, channels = _image_feature(tfds, info.features, name)
    label_key = _label_feature(tfds, info.features, name, label_mode)
    class_names = info.features[label_key].names

    splits = {
        s: TfdsSource(name, s, data_dir, image_key=image_key, label_key=label_key,
                      class_names=class_names, channels=channels)
        for s in ("train", "validation", "test") if s in info.splits
    }
    base_name = name.split(":")[0].split("/")[0]
    if base_name in PUBLISHED_STATS and len(PUBLISHED_STATS[base_name][0]) == channels:
        mean, std = PUBLISHED_STATS[base_name]
    else:
        train = splits["train"]
        sample = np.unique(np.linspace(0, len(train) - 1, min(len(train), _STATS_SAMPLE)).astype(int))
        mean, std = channel_stats(r["image"] for r in train.read(sample))
        log.info("tfds:%s: mean %s, std %s estimated from %d training images", name, mean, std, len(sample))
    for src in splits.values():
        src.mean, src.std = tuple(mean), tuple(std)
    if cache:
        splits = {s: _to_memory(src, info.features[image_key].shape) for s, src in splits.items()}
    train = splits["train"]
    if "validation" in splits:
        val, val_is_split = splits["validation"], False
    else:
        train_idx, val_idx = stratified_split(train.labels, val_split, split_seed)
        train, val, val_is_split = Subset(train, train_idx), Subset(train, val_idx), True
    return DataSplits(name=f"tfds:{name}", train=train, val=val, test=splits.get("test"),
                      class_names=tuple(class_names), channels=channels, mean=tuple(mean), std=tuple(std),
                      default_image_size=_default_size(info.features[image_key].shape),
                      default_augment="flip", val_is_split=val_is_split)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise MissingDependencyError(f"data.name tfds:NAME needs tensorflow-datasets ({error}). Install it with "
                                     '`pip install "jaxcnn[tfds]"` (TensorFlow is not needed to read prepared'
                                     " data).") from error
    return tfds


def _image_feature(tfds, features, name: str) -> tuple[str, int]:
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not images:
        raise DataError(f"tfds:{name} has no Image feature; its features are {list(features)}.")
    key = "image" if "image" in images else images[0]
    feature = features[key]
    channels = feature.shape[-1]
    if np.dtype(feature.np_dtype) != np.uint8 or channels not in (1, 3):
        raise DataError(f"tfds:{name}: image feature {key!r} is {feature.np_dtype} with {channels} channels; "
                        "jaxcnn reads uint8 images with 1 or 3 channels.")
    return key, channels


def _label_feature(tfds, features, name: str, label_mode: str | None) -> str:
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    wanted = [label_mode, f"{label_mode}_label"] if label_mode else ["label"]
    for key in wanted:
        if key in labels:
            return key
    if label_mode is None and len(labels) == 1:
        return labels[0]
    raise DataError(f"tfds:{name}: choose the label with data.label_mode, one of {labels}"
                    + (f" (got {label_mode!r})" if label_mode else "") + ".")


def _default_size(shape) -> int:
    height, width = shape[0], shape[1]
    return max(height, width) if height and width else 224


def _to_memory(source: TfdsSource, shape) -> ArraySource:
    """Decode every record of `source` once into an ArraySource."""
    if None in shape[:2]:
        raise DataError(f"data.cache needs fixed-size images, but tfds:{source.name} images are {shape}; "
                        "run without data.cache.")
    n = len(source)
    log.info("tfds:%s/%s: caching %d images of %s in memory (%.1f MiB)", source.name, source.split, n,
             tuple(shape), n * int(np.prod(shape)) / 2**20)
    images = np.empty((n, *shape), np.uint8)
    labels = np.empty(n, np.int32)
    for start in range(0, n, _READ_CHUNK):
        for i, record in enumerate(source.read(range(start, min(start + _READ_CHUNK, n))), start):
            images[i], labels[i] = record["image"], record["label"]
    return ArraySource(images, labels, class_names=source.class_names, mean=source.mean, std=source.std,
                       name=f"tfds:{source.name}/{source.split}")
