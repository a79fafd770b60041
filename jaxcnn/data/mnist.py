"""MNIST and Fashion-MNIST from their four idx files (`.gz` or uncompressed).

Looked for in `data_dir` (default `./data/mnist`, `./data/fashion_mnist`), in the
`MNIST/raw/` / `FashionMNIST/raw/` folder torchvision downloads into under it, and for
Fashion-MNIST in Debian's `/usr/share/datasets/fashion-mnist/` (`apt install
dataset-fashion-mnist`). Validation is a stratified, seeded part of the 60k training images.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import math
import os
import struct
import zlib

import numpy as np

from jaxcnn.data.arrays import PUBLISHED_STATS, ArraySource, reject_cache, split_train
from jaxcnn.data.download import Resource
from jaxcnn.data.download import download as fetch
from jaxcnn.data.splits import DataNotFoundError, DataSplits

log = logging.getLogger(__name__)

_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08  # idx type code of unsigned bytes, the only one these datasets use


@dataclasses.dataclass(frozen=True)
class _Dataset:
    name: str
    title: str
    class_names: tuple[str, ...]
    torchvision_folder: str  # torchvision.datasets keeps the idx files in <root>/<this>/raw/
    system_dirs: tuple[str, ...]  # where an OS package installs the files
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # published checksums of the .gz files
    default_augment: str

    def resource(self, filename: str) -> Resource:
        return Resource(filename + ".gz", self.md5[filename + ".gz"], tuple(m + filename + ".gz" for m in self.mirrors))


MNIST = _Dataset(
    name="mnist",
    title="MNIST",
    class_names=tuple(str(d) for d in range(10)),
    torchvision_folder="MNIST",
    system_dirs=(),  # no distribution packages MNIST itself (`apt-cache search mnist`)
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    default_augment="none",  # a mirrored digit is another glyph
)

FASHION_MNIST = _Dataset(
    name="fashion_mnist",
    title="Fashion-MNIST",
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    torchvision_folder="FashionMNIST",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    default_augment="flip",  # garments are left-right symmetric
)


def load_mnist(data_dir=None, *, val_split, split_seed, image_size=None, download=False,
               label_mode=None, cache=False) -> DataSplits:
    """MNIST: 60k train (split into train/val) and 10k test 28x28 grayscale digits."""
    return _load(MNIST, data_dir, val_split, split_seed, download, label_mode, cache)


def load_fashion_mnist(data_dir=None, *, val_split, split_seed, image_size=None, download=False,
                       label_mode=None, cache=False) -> DataSplits:
    """Fashion-MNIST: 60k train (split into train/val) and 10k test 28x28 grayscale garments."""
    return _load(FASHION_MNIST, data_dir, val_split, split_seed, download, label_mode, cache)


def _load(dataset: _Dataset, data_dir, val_split, split_seed, download, label_mode, cache) -> DataSplits:
    if label_mode is not None:
        raise ValueError(f"--label-mode does not apply to {dataset.name} (it has one label); got {label_mode!r}")
    reject_cache(dataset.name, cache)
    data_dir = os.path.expanduser(data_dir or os.path.join("data", dataset.name))
    candidates = [data_dir, os.path.join(data_dir, dataset.torchvision_folder, "raw"), *dataset.system_dirs]
    found = {d: {n: _find(d, n) for pair in _SPLITS.values() for n in pair} for d in candidates}
    folder = next((d for d in candidates if all(found[d].values())), None)
    if folder is None:
        if not download:
            raise DataNotFoundError(_not_found_message(dataset, data_dir, candidates))
        for name, path in found[data_dir].items():
            if path is None:
                fetch(dataset.resource(name), data_dir)
        folder = data_dir
        found[folder] = {n: _find(folder, n) for n in found[folder]}
    log.info("%s: reading %s", dataset.title, folder)
    mean, std = PUBLISHED_STATS[dataset.name]

    def source(split: str) -> ArraySource:
        images_file, labels_file = _SPLITS[split]
        images, labels = read_idx(found[folder][images_file], 3), read_idx(found[folder][labels_file], 1)
        if len(images) != len(labels):
            raise ValueError(f"{folder}: {images_file} has {len(images)} images but {labels_file} "
                             f"has {len(labels)} labels.")
        return ArraySource(images[..., None], labels, class_names=dataset.class_names, mean=mean,
                           std=std, name=f"{dataset.name}/{split}")

    return split_train(dataset.name, source("train"), source("test"), val_split=val_split,
                       split_seed=split_seed, default_image_size=28,
                       default_augment=dataset.default_augment)


def _find(folder: str, name: str) -> str | None:
    """`folder/name` uncompressed, else gzipped, else None."""
    for path in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.isfile(path):
            return path
    return None


def read_idx(path: str, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes with `ndim` dimensions (gzipped when it ends in .gz).

    idx (LeCun's format): 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions,
    each dimension as a big-endian uint32, then the values row-major. Anything else, or a
    length that disagrees with the header, is an error naming the file.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise ValueError(f"{path} is a truncated or corrupt gzip file ({error}).") from error
    magic = raw[:4]
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != _UBYTE or magic[3] != ndim:
        raise ValueError(f"{path} is not an idx file of {ndim}-D uint8 data: its magic number is "
                         f"{magic.hex() or 'missing'}, expected 0000080{ndim}.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise ValueError(f"{path} is {'truncated' if len(raw) < expected else 'too long'}: {len(raw)} "
                         f"bytes, but its header promises {shape} values ({expected} bytes).")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _not_found_message(dataset: _Dataset, data_dir: str, candidates: list[str]) -> str:
    files = ", ".join(n + "[.gz]" for pair in _SPLITS.values() for n in pair)
    where = "\n".join(f"  {d}/" for d in candidates)
    hint = ""
    if dataset is FASHION_MNIST:
        hint = " On Debian/Ubuntu, `apt install dataset-fashion-mnist` provides them."
    return (
        f"{dataset.title} not found. Looked for the four idx files ({files}) in:\n{where}\n"
        f"Pass --download to fetch them (checksum-verified) from {dataset.mirrors[0]} into "
        f"{data_dir}, or point --data-dir at the folder that holds them.{hint}"
    )
