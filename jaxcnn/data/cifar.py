"""CIFAR-10 and CIFAR-100 from the archives published at https://www.cs.toronto.edu/~kriz/cifar.html.

Every published layout is read, from `data_dir` (default `./data/cifar10`, `./data/cifar100`):
the python version (`cifar-10-python.tar.gz` or its extracted `cifar-10-batches-py/`: pickled
batches) and the binary version (`cifar-10-binary.tar.gz` or `cifar-10-batches-bin/`: fixed-size
records), likewise for CIFAR-100. Archives are read in place, without extracting them. Class
names come from the archive's own meta file; validation is a stratified, seeded part of train.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import os
import pickle
import tarfile
import zlib

import numpy as np

from jaxcnn.data.arrays import PUBLISHED_STATS, ArraySource, check_labels, reject_cache, split_train
from jaxcnn.data.download import Resource
from jaxcnn.data.download import download as fetch
from jaxcnn.data.splits import DOWNLOAD_HINT, DataError, DataNotFoundError, DataSplits, given_folder

log = logging.getLogger(__name__)

_HOME = "https://www.cs.toronto.edu/~kriz/"
# --download fetches the binary archives: fixed-size records, no unpickling of downloaded bytes, and
# the ones with a published SHA-256. The authors publish MD5s only (binary: c32a1d4ab5d03f1284b67883e8d87530,
# 03b5dce01913d631647c71ecec9e9cb8); these SHA-256s and sizes are the ones tensorflow-datasets 4.9.10
# verifies, from tensorflow_datasets/url_checksums/cifar10.txt and cifar100.txt in its wheel.
_SHA256 = {
    "cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    "cifar-100-binary.tar.gz": "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
}
_PIXELS = 3 * 32 * 32  # one image: the red, green and blue 32x32 planes, row-major
# Size caps: nothing is read beyond what the format can hold, so a corrupt file or a decompression
# bomb is an error, not a full memory. A pickled record is its pixels, a label and a file name:
# the published batches take 3,104-3,105 bytes a record (data_batch_1: 31,035,704 bytes).
_PICKLE_RECORD_CAP = _PIXELS + 64
_PICKLE_OVERHEAD_CAP = 4096  # the dict, keys and batch label
_SMALL_MEMBER_CAP = 64 * 1024  # meta, label names, readme (the largest published one is 1,526 bytes)


@dataclasses.dataclass(frozen=True)
class _Format:
    """One published layout: a folder of members, shipped as `archive` with the folder inside."""

    folder: str
    archive: str
    train: tuple[str, ...]
    test: str
    meta: str | None  # python layout: the pickled meta member; binary: names come from `_Labels`
    label_bytes: int = 0  # binary layout: label bytes before each image (0: pickled layout)


@dataclasses.dataclass(frozen=True)
class _Labels:
    """Where one kind of label lives in each layout."""

    key: str  # pickled batches
    names_key: str  # pickled meta
    byte: int  # binary records
    names_file: str  # binary layout, one name a line


@dataclasses.dataclass(frozen=True)
class _Dataset:
    name: str
    title: str
    formats: tuple[_Format, ...]  # in order of preference
    label_modes: dict[str, _Labels]  # the first is the default
    resource: Resource  # what --download fetches: one of the `formats`' archives
    train_records: int  # images in each training member, as published
    test_records: int


CIFAR10 = _Dataset(
    name="cifar10",
    title="CIFAR-10",
    formats=(
        _Format("cifar-10-batches-py", "cifar-10-python.tar.gz",
                tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        _Format("cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin", None, label_bytes=1),
    ),
    label_modes={"label": _Labels("labels", "label_names", 0, "batches.meta.txt")},
    resource=Resource("cifar-10-binary.tar.gz", _SHA256["cifar-10-binary.tar.gz"], 170_052_171,
                      (_HOME + "cifar-10-binary.tar.gz",)),
    train_records=10_000,
    test_records=10_000,
)

CIFAR100 = _Dataset(
    name="cifar100",
    title="CIFAR-100",
    formats=(
        _Format("cifar-100-python", "cifar-100-python.tar.gz", ("train",), "test", "meta"),
        _Format("cifar-100-binary", "cifar-100-binary.tar.gz", ("train.bin",), "test.bin", None, label_bytes=2),
    ),
    label_modes={
        "fine": _Labels("fine_labels", "fine_label_names", 1, "fine_label_names.txt"),
        "coarse": _Labels("coarse_labels", "coarse_label_names", 0, "coarse_label_names.txt"),
    },
    resource=Resource("cifar-100-binary.tar.gz", _SHA256["cifar-100-binary.tar.gz"], 168_513_733,
                      (_HOME + "cifar-100-binary.tar.gz",)),
    train_records=50_000,
    test_records=10_000,
)


def load_cifar10(data_dir=None, *, val_split, split_seed, image_size=None, download=False,
                 label_mode=None, cache=False) -> DataSplits:
    """CIFAR-10: 50k train (split into train/val) and 10k test 32x32 RGB images, 10 classes."""
    if label_mode is not None:
        raise DataError(f"data.label_mode does not apply to cifar10 (it has one label); got {label_mode!r}")
    return _load(CIFAR10, data_dir, "label", val_split, split_seed, download, cache)


def load_cifar100(data_dir=None, *, val_split, split_seed, image_size=None, download=False,
                  label_mode=None, cache=False) -> DataSplits:
    """CIFAR-100: like CIFAR-10 with 100 fine classes, or 20 superclasses (`label_mode="coarse"`)."""
    mode = label_mode or "fine"
    if mode not in CIFAR100.label_modes:
        raise DataError(f"cifar100 label_mode must be one of {list(CIFAR100.label_modes)}, got {label_mode!r}")
    return _load(CIFAR100, data_dir, mode, val_split, split_seed, download, cache)


def _load(dataset: _Dataset, data_dir, mode: str, val_split, split_seed, download, cache) -> DataSplits:
    reject_cache(dataset.name, cache)
    # A given data.dir is the only place read (`locate` looks nowhere else); it must be a folder.
    data_dir = given_folder(data_dir, DOWNLOAD_HINT, may_create=download) if data_dir else os.path.join("data", dataset.name)
    found = locate(dataset, data_dir)
    if found is None:
        if not download:
            raise DataNotFoundError(_not_found_message(dataset, data_dir))
        fmt = next(f for f in dataset.formats if f.archive == dataset.resource.filename)
        found = fmt, fetch(dataset.resource, data_dir)
    fmt, path = found
    log.info("%s: reading %s", dataset.title, path)
    labels = dataset.label_modes[mode]
    records = {n: dataset.train_records for n in fmt.train} | {fmt.test: dataset.test_records}
    caps = {n: _member_cap(fmt, count) for n, count in records.items()}
    caps[fmt.meta or labels.names_file] = _SMALL_MEMBER_CAP
    members = read_members(path, fmt, caps)
    class_names = _class_names(members, fmt, labels, path)
    mean, std = PUBLISHED_STATS[dataset.name]

    def source(names: tuple[str, ...], split: str) -> ArraySource:
        parts = [_decode(members[n], fmt, labels, _where(path, fmt, n), records[n]) for n in names]
        for n, (_, targets) in zip(names, parts):
            check_labels(targets, len(class_names), _where(path, fmt, n))
        rows = np.concatenate([p[0] for p in parts])  # (N, 3072): R, G, B planes per image
        images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # contiguous NHWC
        return ArraySource(images, np.concatenate([p[1] for p in parts]), class_names=class_names,
                           mean=mean, std=std, name=f"{dataset.name}/{split}")

    train, test = source(fmt.train, "train"), source((fmt.test,), "test")
    return split_train(dataset.name, train, test, val_split=val_split, split_seed=split_seed,
                       default_image_size=32, default_augment="cifar")


def locate(dataset: _Dataset, data_dir: str) -> tuple[_Format, str] | None:
    """The first layout present in `data_dir` (or `data_dir` itself being an extracted folder)."""
    for fmt in dataset.formats:
        if all(os.path.isfile(os.path.join(data_dir, n)) for n in fmt.train + (fmt.test,)):
            return fmt, data_dir
        for path in (os.path.join(data_dir, fmt.folder), os.path.join(data_dir, fmt.archive)):
            if os.path.exists(path):
                return fmt, path
    return None


def _member_cap(fmt: _Format, records: int) -> int:
    """The most bytes a train or test member of `records` images can take in `fmt`."""
    if fmt.label_bytes:
        return records * (fmt.label_bytes + _PIXELS)
    return records * _PICKLE_RECORD_CAP + _PICKLE_OVERHEAD_CAP


def _where(path: str, fmt: _Format, name: str) -> str:
    """How to name member `name` of the folder or archive `path` in a message."""
    return os.path.join(path, name) if os.path.isdir(path) else f"{path}: {fmt.folder}/{name}"


def _too_large(where: str, cap: int) -> DataError:
    return DataError(f"{where} is larger than the {cap} bytes it can hold; it was not read (a corrupt file or a"
                     " decompression bomb). Replace it with the published file.")


def read_members(path: str, fmt: _Format, caps: dict[str, int]) -> dict[str, bytes]:
    """The bytes of each member named in `caps` from an extracted folder, or straight out of a
    (gzipped) tar; a member larger than its cap is an error, and is never read whole."""
    if os.path.isdir(path):
        missing = [n for n in caps if not os.path.isfile(os.path.join(path, n))]
        if missing:
            raise DataNotFoundError(f"{path} is incomplete: it lacks {', '.join(missing)}.")
        members = {}
        for n, cap in caps.items():
            with open(os.path.join(path, n), "rb") as f:
                members[n] = f.read(cap + 1)
            if len(members[n]) > cap:
                raise _too_large(_where(path, fmt, n), cap)
        return members
    wanted = {f"{fmt.folder}/{n}": n for n in caps}
    total = sum(caps.values()) + _SMALL_MEMBER_CAP  # readme.html and the tar headers fit in the slack
    members = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:  # one sequential pass: a .tar.gz cannot seek cheaply
                name = wanted.get(info.name.removeprefix("./"))
                if name and info.size > caps[name]:
                    raise _too_large(_where(path, fmt, name), caps[name])
                if info.offset_data + info.size > total:  # even skipping it would decompress it all
                    raise DataError(f"{path}: {info.name} ({info.size} bytes) runs past the {total} bytes that"
                                    f" {fmt.archive} can hold; it was not read. Delete {path} and fetch it again.")
                if name and info.isfile():
                    members[name] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"{path} is truncated or corrupt ({error}). Delete it and fetch it again "
                        "(data.download fetches the binary version).") from error
    missing = [f"{fmt.folder}/{n}" for n in caps if n not in members]
    if missing:
        raise DataError(f"{path} is truncated or not the {fmt.archive} archive: it lacks {', '.join(missing)}.")
    return members


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches but refuses every global except numpy's array builders.

    Unpickling can run arbitrary code; a downloaded archive must only be able to make arrays.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: CIFAR batches hold only arrays")
        return super().find_class(module, name)


def unpickle(raw: bytes, where: str) -> dict:
    """A CIFAR python-version member as a dict with str keys (the files are Python 2 pickles)."""
    try:
        # latin1 maps Python 2 byte strings 1:1, which numpy needs to rebuild the pixel arrays.
        record = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as error:  # a truncated or foreign pickle fails in many ways
        raise DataError(f"{where} is not a readable CIFAR pickle ({type(error).__name__}: {error}).") from error
    if not isinstance(record, dict):
        raise DataError(f"{where} is not a CIFAR pickle: it holds a {type(record).__name__}, not a dict.")
    return {_text(k): v for k, v in record.items()}


def _decode(raw: bytes, fmt: _Format, labels: _Labels, where: str, records: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3072) uint8 in CHW order, labels (N,)) of one train or test member of `records` images."""
    if fmt.label_bytes:
        size = fmt.label_bytes + _PIXELS
        if len(raw) % size:
            raise DataError(f"{where} is truncated: {len(raw)} bytes is not a whole number of "
                            f"{size}-byte records ({fmt.label_bytes} label byte(s) + {_PIXELS} pixels).")
        _check_count(where, len(raw) // size, records)
        rows = np.frombuffer(raw, np.uint8).reshape(-1, size)
        return rows[:, fmt.label_bytes:], rows[:, labels.byte].astype(np.int64)
    batch = unpickle(raw, where)
    if "data" not in batch or labels.key not in batch:
        raise DataError(f"{where} lacks 'data' or {labels.key!r}; its keys are {sorted(batch)}.")
    data, targets = np.asarray(batch["data"]), np.asarray(batch[labels.key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS or len(targets) != len(data):
        raise DataError(f"{where}: expected data uint8 (N, {_PIXELS}) and N labels, got data "
                        f"{data.dtype} {data.shape} and {len(targets)} labels.")
    _check_count(where, len(data), records)
    return data, targets


def _check_count(where: str, found: int, expected: int) -> None:
    """A member must hold exactly its published number of images: a short one silently drops data."""
    if found != expected:
        held = "no images" if found == 0 else f"{found} images"
        raise DataError(f"{where} holds {held}, but the published file holds {expected}. It is truncated or"
                        " not a CIFAR file: replace it with the published file.")


def _class_names(members: dict[str, bytes], fmt: _Format, labels: _Labels, path: str) -> tuple[str, ...]:
    if fmt.meta is None:
        text = members[labels.names_file].decode("utf-8")
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    meta = unpickle(members[fmt.meta], f"{path}: {fmt.meta}")
    if labels.names_key not in meta:
        raise DataError(f"{path}: {fmt.meta} lacks {labels.names_key!r}; its keys are {sorted(meta)}.")
    return tuple(_text(n) for n in meta[labels.names_key])


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _not_found_message(dataset: _Dataset, data_dir: str) -> str:
    looked = []
    for fmt in dataset.formats:
        looked.append(f"{os.path.join(data_dir, fmt.folder)}/ ({', '.join(fmt.train + (fmt.test,))}, ...)")
        looked.append(os.path.join(data_dir, fmt.archive))
    return (
        f"{dataset.title} not found in {data_dir}: looked for any of {'; '.join(looked)}."
        f" Set data.download to fetch {dataset.resource.urls[0]} (checksum-verified) into {data_dir}, "
        f"or put one of those archives there yourself (from {_HOME}cifar.html), "
        "or point data.dir at the folder that holds it."
    )
