"""Small datasets written byte for byte in the published CIFAR and idx formats (no CIFAR or MNIST
exists on the test machines), plus the expected contents to compare a loader against.

The CIFAR python version holds Python 2 cPickle files (protocol 2: byte strings as BINSTRING,
arrays through numpy.core.multiarray._reconstruct); `py2_pickle` writes exactly those opcodes.
Layouts: https://www.cs.toronto.edu/~kriz/cifar.html and http://yann.lecun.com/exdb/mnist/.
"""

import dataclasses
import gzip
import hashlib
import os
import pathlib
import struct
import tarfile

import numpy as np

from jaxcnn.data import cifar
from jaxcnn.data.download import Resource

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_FINE = tuple(f"fine_{i:02d}" for i in range(100))
CIFAR100_COARSE = tuple(f"coarse_{i:02d}" for i in range(20))


@dataclasses.dataclass
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8, what the loader must return
    labels: np.ndarray  # CIFAR-10 labels / CIFAR-100 fine labels
    coarse: np.ndarray | None = None

    @property
    def rows(self) -> np.ndarray:  # the published layout: R, G, B 32x32 planes per row
        return self.images.transpose(0, 3, 1, 2).reshape(len(self.images), -1)


def make_split(n: int, num_classes: int, seed: int, coarse_classes: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    coarse = labels % coarse_classes if coarse_classes else None
    return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), labels, coarse)


def py2_pickle(obj) -> bytes:
    """`obj` (dicts, lists, bytes, ints, uint8 arrays) pickled as Python 2's cPickle did it."""
    out = bytearray(b"\x80\x02")
    memo = iter(range(1, 1 << 31))

    def put():
        n = next(memo)
        out.extend(b"q" + bytes([n]) if n < 256 else b"r" + struct.pack("<I", n))

    def string(b: bytes, memoize: bool = True):
        out.extend((b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b)
        if memoize and len(b) > 1:  # cPickle skips 1-char strings and temporaries (refcount 1)
            put()

    def integer(i: int):
        if 0 <= i < 256:
            out.extend(b"K" + bytes([i]))
        elif 0 <= i < 65536:
            out.extend(b"M" + struct.pack("<H", i))
        else:
            out.extend(b"J" + struct.pack("<i", i))

    def array(a: np.ndarray):
        assert a.dtype == np.uint8 and 1 <= a.ndim <= 3
        out.extend(b"cnumpy.core.multiarray\n_reconstruct\n")
        put()
        out.extend(b"cnumpy\nndarray\n")
        put()
        out.extend(b"K\x00\x85")
        string(b"b")
        out.extend(b"\x87R")
        put()
        out.extend(b"(K\x01")
        for d in a.shape:
            integer(d)
        out.extend({1: b"\x85", 2: b"\x86", 3: b"\x87"}[a.ndim])
        out.extend(b"cnumpy\ndtype\n")
        put()
        string(b"u1", memoize=False)
        out.extend(b"K\x00K\x01\x87R")
        put()
        out.extend(b"(K\x03")
        string(b"|")
        out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
        string(np.ascontiguousarray(a).tobytes(), memoize=False)
        out.extend(b"tb")

    def save(o):
        if isinstance(o, bytes):
            string(o)
        elif isinstance(o, (int, np.integer)):
            integer(int(o))
        elif isinstance(o, np.ndarray):
            array(o)
        elif isinstance(o, list):
            out.extend(b"]")
            put()
            out.extend(b"(")
            for item in o:
                save(item)
            out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}")
            put()
            out.extend(b"(")
            for key, value in o.items():
                save(key)
                save(value)
            out.extend(b"u")
        else:
            raise TypeError(type(o))

    save(obj)
    out.extend(b".")
    return bytes(out)


def _batch(split: Split, label: str, *, cifar100: bool) -> bytes:
    names = [f"img_{i:05d}.png".encode() for i in range(len(split.labels))]
    if cifar100:
        return py2_pickle({b"filenames": names, b"batch_label": label.encode(),
                           b"fine_labels": [int(x) for x in split.labels],
                           b"coarse_labels": [int(x) for x in split.coarse], b"data": split.rows})
    return py2_pickle({b"batch_label": label.encode(), b"labels": [int(x) for x in split.labels],
                       b"data": split.rows, b"filenames": names})


def _records(split: Split, *, cifar100: bool) -> bytes:
    labels = [split.coarse, split.labels] if cifar100 else [split.labels]
    return np.concatenate([np.stack(labels, 1).astype(np.uint8), split.rows], axis=1).tobytes()


def _write(folder: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_cifar(root: pathlib.Path, dataset: str, fmt: str, train: list[Split], test: Split) -> pathlib.Path:
    """Write `dataset` ("cifar10"/"cifar100") in `fmt` ("python"/"binary") as its extracted folder
    under `root`, and return the folder; `train` is the list of training batches."""
    readme = {"readme.html": b"<html>fixture</html>\n"}
    if dataset == "cifar10" and fmt == "python":
        files = {f"data_batch_{i}": _batch(b, f"training batch {i} of 5", cifar100=False)
                 for i, b in enumerate(train, 1)}
        files["test_batch"] = _batch(test, "testing batch 1 of 1", cifar100=False)
        files["batches.meta"] = py2_pickle({b"num_cases_per_batch": len(train[0].labels),
                                            b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072})
        return _write(root / "cifar-10-batches-py", {**files, **readme})
    if dataset == "cifar10":
        files = {f"data_batch_{i}.bin": _records(b, cifar100=False) for i, b in enumerate(train, 1)}
        files["test_batch.bin"] = _records(test, cifar100=False)
        files["batches.meta.txt"] = ("\n".join(CIFAR10_NAMES) + "\n\n").encode()
        return _write(root / "cifar-10-batches-bin", {**files, **readme})
    (batch,) = train
    if fmt == "python":
        return _write(root / "cifar-100-python", {
            "train": _batch(batch, "training batch 1 of 1", cifar100=True),
            "test": _batch(test, "testing batch 1 of 1", cifar100=True),
            "meta": py2_pickle({b"fine_label_names": [n.encode() for n in CIFAR100_FINE],
                                b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE]}),
        })
    return _write(root / "cifar-100-binary", {
        "train.bin": _records(batch, cifar100=True),
        "test.bin": _records(test, cifar100=True),
        "fine_label_names.txt": ("\n".join(CIFAR100_FINE) + "\n").encode(),
        "coarse_label_names.txt": ("\n".join(CIFAR100_COARSE) + "\n").encode(),
    })


ARCHIVES = {
    "cifar-10-batches-py": "cifar-10-python.tar.gz",
    "cifar-10-batches-bin": "cifar-10-binary.tar.gz",
    "cifar-100-python": "cifar-100-python.tar.gz",
    "cifar-100-binary": "cifar-100-binary.tar.gz",
}


def tar_gz(folder: pathlib.Path, destination: pathlib.Path) -> pathlib.Path:
    """Pack `folder` the way the published archive is: `<folder>/` and its files, gzipped."""
    path = destination / ARCHIVES[folder.name]
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of uint8 `array`: magic 0x0000080<ndim>, big-endian dims, then the values."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder: pathlib.Path, train_n: int = 40, test_n: int = 10, *, gz: bool = True, seed: int = 0):
    """The four MNIST-layout idx files in `folder`; returns {name: array} of what was written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train_n, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(train_n) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test_n, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(test_n) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def sha256(path: os.PathLike) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def resource_for(path: pathlib.Path, *urls: str):
    """A download `Resource` for the file at `path`: its own size and SHA-256, served from `urls`."""
    return Resource(path.name, sha256(path), path.stat().st_size, urls or (path.as_uri(),))


def gzip_bomb(path: pathlib.Path, head: bytes, zeros: int) -> pathlib.Path:
    """A small gzip file of `head` then `zeros` zero bytes (50 MB of zeros compress to ~50 KB),
    written in 1 MiB pieces so that making it takes no memory."""
    with gzip.open(path, "wb") as f:
        f.write(head)
        for start in range(0, zeros, 1 << 20):
            f.write(bytes(min(1 << 20, zeros - start)))
    return path


def expect_records(monkeypatch, dataset: str, train: int, test: int) -> None:
    """Make the CIFAR loaders expect these record counts per train and test member: the fixtures
    are small, the published files hold 10,000 (CIFAR-100's train file 50,000)."""
    name = dataset.upper()
    monkeypatch.setattr(cifar, name, dataclasses.replace(getattr(cifar, name), train_records=train, test_records=test))
