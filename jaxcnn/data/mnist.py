"""MNIST and Fashion-MNIST from their four idx files (`.gz` or uncompressed).

A `data_dir` the user gives is the only place read: the files in it, or in the `MNIST/raw/` /
`FashionMNIST/raw/` folder torchvision downloads into under it; a file missing there is an error,
even when another copy exists. Without one, the first complete copy of `./data/mnist`
(`./data/fashion_mnist`), the torchvision folder under it and, for Fashion-MNIST, Debian's
`/usr/share/datasets/fashion-mnist/` (`apt install dataset-fashion-mnist`) is read.
Validation is a stratified, seeded part of the 60k training images.
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

from jaxcnn.data.arrays import PUBLISHED_STATS, ArraySource, check_labels, reject_cache, split_train
from jaxcnn.data.download import Resource
from jaxcnn.data.download import download as fetch
from jaxcnn.data.splits import DOWNLOAD_HINT, DataError, DataNotFoundError, DataSplits, given_folder

log = logging.getLogger(__name__)

_SPLITS = {  # the idx files of each split, and how many records each holds at most (the published count)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
_SIDE = 28  # images are 28x28
_UBYTE = 0x08  # idx type code of unsigned bytes, the only one these datasets use


@dataclasses.dataclass(frozen=True)
class _Dataset:
    name: str
    title: str
    class_names: tuple[str, ...]
    torchvision_folder: str  # torchvision.datasets keeps the idx files in <root>/<this>/raw/
    system_dirs: tuple[str, ...]  # where an OS package installs the files
    mirrors: tuple[str, ...]  # https only; each must serve the very files of `checksums`
    checksums: dict[str, tuple[str, int]]  # .gz file -> (SHA-256, size in bytes)
    default_augment: str

    def resource(self, filename: str) -> Resource:
        name = filename + ".gz"
        return Resource(name, *self.checksums[name], tuple(m + name for m in self.mirrors))


# SHA-256s and sizes as tensorflow-datasets 4.9.10 verifies them: tensorflow_datasets/url_checksums/
# mnist.txt and fashion_mnist.txt in its wheel (the authors publish MD5s only).


MNIST = _Dataset(
    name="mnist",
    title="MNIST",
    class_names=tuple(str(d) for d in range(10)),
    torchvision_folder="MNIST",
    system_dirs=(),  # no distribution packages MNIST itself (`apt-cache search mnist`)
    # torchvision's mirror, then TFDS's (CVDF); yann.lecun.com serves plain http only.
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    checksums={
        "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422),
        "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881),
        "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877),
        "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542),
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
    # The authors' repository, then Keras's copy; their S3 website serves plain http only.
    mirrors=(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    checksums={
        "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26_421_880),
        "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29_515),
        "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4_422_102),
        "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5_148),
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
        raise DataError(f"data.label_mode does not apply to {dataset.name} (it has one label); got {label_mode!r}")
    reject_cache(dataset.name, cache)
    if data_dir:
        folder, found = _read_given(dataset, given_folder(data_dir, DOWNLOAD_HINT, may_create=download), download)
    else:
        folder, found = _search(dataset, download)
    log.info("%s: reading %s", dataset.title, folder)
    mean, std = PUBLISHED_STATS[dataset.name]

    def source(split: str) -> ArraySource:
        images_file, labels_file, count = _SPLITS[split]
        images = read_idx(found[images_file], (count, _SIDE, _SIDE))
        labels = read_idx(found[labels_file], (count,))
        if len(images) != len(labels):
            raise DataError(f"{folder}: {images_file} has {len(images)} images but {labels_file} "
                            f"has {len(labels)} labels.")
        check_labels(labels, len(dataset.class_names), found[labels_file])
        return ArraySource(images[..., None], labels, class_names=dataset.class_names, mean=mean,
                           std=std, name=f"{dataset.name}/{split}")

    return split_train(dataset.name, source("train"), source("test"), val_split=val_split,
                       split_seed=split_seed, default_image_size=28,
                       default_augment=dataset.default_augment)


def _read_given(dataset: _Dataset, root: str, download: bool) -> tuple[str, dict[str, str]]:
    """(folder, idx file -> path) in the folder the user named: only there, never another copy.

    The files are read from `root`, or from the torchvision layout under it (`<root>/FashionMNIST/raw/`)
    when `root` holds none of them itself. Missing files are fetched into that folder with `download`,
    else a DataNotFoundError names them.
    """
    under = os.path.join(root, dataset.torchvision_folder, "raw")
    folder = next((d for d in (root, under) if any(_files(d).values())), root)
    missing = [n for n, path in _files(folder).items() if path is None]
    if missing and not download:
        raise DataNotFoundError(_missing_message(dataset, folder, missing))
    for name in missing:
        fetch(dataset.resource(name), folder)
    return folder, _files(folder)


def _search(dataset: _Dataset, download: bool) -> tuple[str, dict[str, str]]:
    """(folder, idx file -> path) without a data.dir: the first complete one of `_default_folders`,
    else a download into `./data/<name>` (with `download`) or a DataNotFoundError naming them all."""
    candidates = _default_folders(dataset)
    folder = next((d for d in candidates if all(_files(d).values())), None)
    if folder is None:
        if not download:
            raise DataNotFoundError(_not_found_message(dataset, candidates))
        folder = candidates[0]
        for name, path in _files(folder).items():
            if path is None:
                fetch(dataset.resource(name), folder)
    return folder, _files(folder)


def _default_folders(dataset: _Dataset) -> list[str]:
    """Where a dataset is looked for without a data.dir, in this order."""
    default = os.path.join("data", dataset.name)
    return [default, os.path.join(default, dataset.torchvision_folder, "raw"), *dataset.system_dirs]


def _files(folder: str) -> dict[str, str | None]:
    """Each of the four idx file names -> its path in `folder` (see `_find`), or None."""
    return {name: _find(folder, name) for split in _SPLITS.values() for name in split[:2]}


def _find(folder: str, name: str) -> str | None:
    """`folder/name` uncompressed, else gzipped, else None."""
    for path in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.isfile(path):
            return path
    return None


def read_idx(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """An idx file of uint8 records of shape `shape[1:]`, at most `shape[0]` of them (gzipped if .gz).

    idx (LeCun's format): 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions,
    each dimension as a big-endian uint32, then the values row-major. Only as many bytes as the
    header declares (plus one, to tell a longer file) are ever decompressed, in gzip's bounded
    chunks, so a gzip bomb cannot fill memory. Anything else than a header within `shape` and
    exactly its data is an error naming the file.
    """
    header_size = 4 + 4 * len(shape)
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            declared = _idx_header(f.read(header_size), path, shape)
            size = math.prod(declared)
            data = f.read(size + 1)  # reaching the end also checks the gzip CRC
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path} is a truncated or corrupt gzip file ({error}).") from error
    if len(data) > size:
        raise DataError(f"{path} is too long: it holds more than the {header_size + size} bytes its header"
                        f" declares for {declared} values (refused unread: a corrupt file or a decompression bomb).")
    if len(data) < size:
        raise DataError(f"{path} is truncated: {header_size + len(data)} bytes, but its header promises {declared}"
                        f" values ({header_size + size} bytes).")
    return np.frombuffer(data, np.uint8).reshape(declared)


def _idx_header(header: bytes, path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape an idx header declares, checked against `shape` (records of shape[1:], at most shape[0])."""
    ndim = len(shape)
    magic = header[:4]
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != _UBYTE or magic[3] != ndim:
        raise DataError(f"{path} is not an idx file of {ndim}-D uint8 data: its magic number is "
                        f"{magic.hex() or 'missing'}, expected 0000080{ndim}.")
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: {len(header)} bytes, shorter than its {4 + 4 * ndim}-byte header.")
    declared = struct.unpack(f">{ndim}I", header[4:])
    if declared[0] == 0:
        raise DataError(f"{path} holds no records: its header declares shape {declared}.")
    if declared[0] > shape[0] or declared[1:] != shape[1:]:
        record = "x".join(map(str, shape[1:])) + " bytes" if ndim > 1 else "1 byte"
        raise DataError(f"{path} declares shape {declared}; this dataset's file holds at most {shape[0]} records"
                        f" of {record}.")
    return declared


def _with_gz(names) -> str:
    return ", ".join(n + "[.gz]" for n in names)


def _missing_message(dataset: _Dataset, folder: str, missing: list[str]) -> str:
    """The idx files `folder` (the user's data.dir) lacks, and a complete copy elsewhere if there is one."""
    message = (f"{dataset.title}: {folder} lacks {_with_gz(missing)} (data.dir is the only place read). Put"
               f" them there, set data.download to fetch them (checksum-verified) from {dataset.mirrors[0]},"
               " or point data.dir at the folder that holds all four idx files.")
    elsewhere = [d for d in _default_folders(dataset) if all(_files(d).values())
                 and os.path.realpath(d) != os.path.realpath(folder)]
    if elsewhere:
        message += f" A complete copy is in {elsewhere[0]}: point data.dir at it to use it."
    return message


def _not_found_message(dataset: _Dataset, candidates: list[str]) -> str:
    files = _with_gz(n for split in _SPLITS.values() for n in split[:2])
    hint = ""
    if dataset is FASHION_MNIST:
        hint = " On Debian/Ubuntu, `apt install dataset-fashion-mnist` provides them."
    return (
        f"{dataset.title} not found: looked for its four idx files ({files}) in {', '.join(candidates)}."
        f" Set data.download to fetch them (checksum-verified) from {dataset.mirrors[0]} into "
        f"{candidates[0]}, or point data.dir at the folder that holds them.{hint}"
    )
