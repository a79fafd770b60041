"""`--data NAME`: one entry point from a dataset name (or a folder path) to `DataSplits`."""

from __future__ import annotations

import difflib
import importlib
import os

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
