"""`--data NAME`: one entry point from a dataset name (or a folder path) to `DataSplits`, and the
training settings that fit each dataset where the user sets none (`training_preset`)."""

from __future__ import annotations

import difflib
import importlib
import os
from typing import Any

from jaxcnn.config import flatten
from jaxcnn.data.splits import DataError, DataSplits

# name -> "module:function"; every loader is `fn(data_dir, *, val_split, split_seed, image_size=None,
# download=False, label_mode=None, cache=False) -> DataSplits`, and rejects a set option it cannot honour.
# Imported lazily so that a dataset's optional dependencies cost nothing until it is used.
_LOADERS = {
    "demo": "jaxcnn.data.folder:load_demo",
    "catdog": "jaxcnn.data.folder:load_catdog",
    "cifar10": "jaxcnn.data.cifar:load_cifar10",
    "cifar100": "jaxcnn.data.cifar:load_cifar100",
    "mnist": "jaxcnn.data.mnist:load_mnist",
    "fashion_mnist": "jaxcnn.data.mnist:load_fashion_mnist",
}
TFDS_PREFIX = "tfds:"

# The optimizer and learning rate that fit a dataset, taken where the user sets neither. The
# defaults are the VGG16 cat-and-dog tutorial's Adam 1e-4 (they stay catdog's and image folders'),
# which learns the small 28 px and 32 px sets slowly: 5 demo epochs at 1e-4 reached 0.615 test
# accuracy, 10 at 1e-3 0.76. CIFAR gets Adam 1e-3 as well rather than He et al.'s SGD 0.1: that
# rate belongs with batch 128, weight decay, a step schedule and BatchNorm ResNets (all of it is
# `--recipe cifar-resnet`), while a preset must also suit the default batch 16 and LeNet-5, which
# has no BatchNorm; Adam's 1e-3 is its usual rate whatever the batch size and architecture.
SMALL_IMAGE_PRESET = {"optim.name": "adam", "optim.learning_rate": 1e-3}
TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    name: SMALL_IMAGE_PRESET for name in ("demo", "mnist", "fashion_mnist", "cifar10", "cifar100")
}


def list_datasets() -> list[str]:
    return sorted(_LOADERS) + [TFDS_PREFIX + "NAME", "PATH (an image folder)"]


def load_data(
    name: str,
    data_dir: str | None = None,
    *,
    val_split: float = 0.2,
    split_seed: int = 42,
    **options,
) -> DataSplits:
    """Load a named dataset (see `list_datasets()`), a TFDS dataset, or an image folder at a path.

    `options` are passed to the dataset's loader: `image_size` (decode-size hint for folders),
    `download` (archives), `label_mode` (CIFAR-100), `cache` (folders).
    """
    if name.startswith(TFDS_PREFIX):
        from jaxcnn.data.tfds_source import load_tfds

        return load_tfds(name[len(TFDS_PREFIX):], data_dir, val_split=val_split, split_seed=split_seed, **options)
    if name in _LOADERS:
        module, fn = _LOADERS[name].split(":")
        loader = getattr(importlib.import_module(module), fn)
        return loader(data_dir, val_split=val_split, split_seed=split_seed, **options)
    if os.path.isdir(os.path.expanduser(name)):
        from jaxcnn.data.folder import load_image_folder

        if data_dir:  # two places named for one dataset: which is meant cannot be guessed
            raise DataError(f"data.dir ({data_dir}) does not apply to an image folder: data.name ({name}) is the"
                            " folder read. Drop data.dir, or give the folder as data.name only.")
        return load_image_folder(os.path.expanduser(name), val_split=val_split, split_seed=split_seed, **options)
    raise DataError(_unknown_dataset(name))


def training_preset(values: dict) -> dict[str, Any]:
    """The options (dotted path -> value) that the preset of `values`'s dataset adds to `values`,
    a nested config dict of only what the user set (flags, `--config`, `--recipe`, or a library
    user's dict): each preset option left unset, except the learning rate when another optimizer
    than the preset's was chosen (a rate belongs to its optimizer). Empty without a preset."""
    data = values.get("data") if isinstance(values, dict) else None
    preset = TRAINING_PRESETS.get(data.get("name") if isinstance(data, dict) else None, {})
    given = dict(flatten(values)) if preset else {}
    added = {path: value for path, value in preset.items() if path not in given}
    if given.get("optim.name", preset.get("optim.name")) != preset.get("optim.name"):
        added.pop("optim.learning_rate", None)
    return added


def check_dataset_name(name: str) -> None:
    """A DataError listing the valid names unless `name` is a dataset, `tfds:NAME` or a folder."""
    if not (name in _LOADERS or name.startswith(TFDS_PREFIX) or os.path.isdir(os.path.expanduser(name))):
        raise DataError(_unknown_dataset(name))


def _unknown_dataset(name: str) -> str:
    if os.path.isfile(os.path.expanduser(name)):
        return (f"{name} is a file: a dataset path must be a folder of images (PATH/<class>/<image>, or"
                f" PATH/train/<class>/<image>); dataset names are {', '.join(list_datasets()[:-1])}.")
    close = difflib.get_close_matches(name, list(_LOADERS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (f"Unknown dataset {name!r}.{hint} Valid names: {', '.join(list_datasets())}"
            " (a path must be an existing folder).")
