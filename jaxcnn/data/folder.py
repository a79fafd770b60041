"""Image folders (`root/<class>/<image>`) as grain sources, and the folder datasets: a PATH, catdog, demo.

Records are uniform: every image is decoded straight to `image_size` x `image_size` (JPEG DCT
scaling, then torchvision-style `Resize((s, s))`), so a batch needs no further resize and `--cache`
can hold the whole split in one array. Unreadable files never crash a run: the cheap ones (empty,
not an image, too large) are dropped when the folder is indexed, the rest (truncated, corrupt) when
first read, where `__getitem__` returns None: grain's `MapDataset.map`/`random_map` pass None
through untouched, and the pipeline's batching masks it out (an `IterDataset` would drop it).
`skipped_files()` lists every skip, also those met in grain worker processes: they append to a
small log file that the source owns.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import tempfile
import time
import uuid
import warnings
import weakref

import numpy as np
from PIL import Image

from jaxcnn.data.arrays import channel_stats
from jaxcnn.data.decode import ImageInfo, UnreadableImage, decode_image, probe_image
from jaxcnn.data.scan import (IMAGE_EXTENSIONS, list_images, printable, reject_splits_as_classes, split_folder,
                              visible_dirs)
from jaxcnn.data.splits import DataError, DataNotFoundError, DataSplits, Subset, given_folder, stratified_split
from jaxcnn.system import available_memory, usable_cpus

MAX_DEFAULT_IMAGE_SIZE = 224  # a folder of smaller images (e.g. 28 px PNGs) defaults to their size
STATS_IMAGES = 500  # mean/std from this many evenly spaced training images: stable to ~1e-3
CACHE_MEMORY_FRACTION = 0.9  # --cache may take at most this much of the available memory

_LAYOUT = (
    "Expected an image folder: PATH/train/<class>/<image> with optional PATH/val/ (or valid/,"
    " validation/) and PATH/test/ holding the same class folders, or a flat PATH/<class>/<image>"
    f" (then validation is a stratified data.val_split of it). Image files: {' '.join(IMAGE_EXTENSIONS)}."
)
log = logging.getLogger(__name__)


def _probe_all(paths: list[str]) -> list[ImageInfo | UnreadableImage]:
    """Header checks (~30 us a file, so no threads): the info, or why the file is unusable."""

    def probe(path):
        try:
            return probe_image(path)
        except UnreadableImage as e:
            return e

    # Oversized images are reported as skips; Pillow's warning about them would only be noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return [probe(path) for path in paths]


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _remove_owned(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # never from a forked grain worker
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


class ImageFolderSource:
    """`root/<class>/<image>` as a grain random-access source of `{"image", "label"}` records.

    Args:
      root: the folder holding one sub-folder per class.
      image_size: decoded images are `image_size` x `image_size`; None picks the smaller of 224
        and the median short side of the images (28 for Fashion-MNIST PNGs).
      channels: 1 or 3; None gives 1 when every image is grayscale, else 3.
      class_names: the class folders in label order, e.g. the training folder's for val/test; None
        sorts the sub-folders. A sub-folder not in `class_names` is an error.
      names: what the classes are called, one per class folder in label order (default: the folder
        names); e.g. Fashion-MNIST's "T-shirt/top" for the demo's folder 0_tshirt_top, since a
        folder name cannot hold "/".
      cache: decode every image once, now, into one uint8 array (the memory it takes is printed
        first; refused when it exceeds the available memory).
      stats: per-channel (mean, std) on the 0..1 scale; None computes them on first use from
        `STATS_IMAGES` evenly spaced images (the loaders set them from the training split).
    """

    def __init__(self, root, *, image_size: int | None = None, channels: int | None = None,
                 class_names=None, names=None, cache: bool = False, stats=None):
        self.root = os.fspath(root)
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if not os.path.isdir(self.root):
            raise DataNotFoundError(f"Image folder {self.root!r} does not exist. {_LAYOUT}")
        folders = visible_dirs(self.root)
        if class_names is None:
            if not folders:
                raise DataError(f"No class folders in {self.root!r}. {_LAYOUT}")
            if len(folders) == 1:
                raise DataError(f"{self.root!r} holds one class folder ({folders[0]!r}): a classifier needs at"
                                f" least 2 classes. {_LAYOUT}")
            class_names = folders
        elif extra := sorted(set(folders) - set(class_names)):
            raise DataError(
                f"{self.root!r} has class folders {extra} that the training folder lacks"
                f" (training classes: {', '.join(class_names)})."
            )
        self.folders = tuple(class_names)  # the class folders, in label order
        self.class_names = self.folders if names is None else tuple(names)
        if len(self.class_names) != len(self.folders):
            raise ValueError(f"{len(self.class_names)} class names for the {len(self.folders)} class folders of {self.root!r}")
        # Named now so that worker processes inherit it; created only by the first read-time skip.
        self._skip_log = os.path.join(tempfile.gettempdir(), f"jaxcnn-skipped-{uuid.uuid4().hex}.jsonl")
        weakref.finalize(self, _remove_owned, self._skip_log, os.getpid())
        self._known_bad: set[str] = set()  # per process: skip without decoding again
        headers = self._index(folders)
        self.channels = channels or (1 if all(h.grayscale for h in headers) else 3)
        self.image_size = int(image_size or min(
            MAX_DEFAULT_IMAGE_SIZE, int(np.median([min(h.width, h.height) for h in headers]))))
        self._cache = None
        if cache:
            self._fill_cache()
        self.stats = stats

    def _index(self, folders: list[str]) -> list[ImageInfo]:
        """List and header-check every image; drop unreadable ones; reject empty class folders."""
        class_dirs = [(label, os.path.join(self.root, name)) for label, name in enumerate(self.folders)
                      if name in folders]  # a val/test folder may lack a class; the training folder defines them
        paths, labels = list_images(self.root, class_dirs)
        if not paths:
            raise DataError(f"No images in {self.root!r}. {_LAYOUT}")
        present = set(labels)
        for label, class_dir in class_dirs:
            if label not in present:
                raise DataError(
                    f"Class folder {class_dir!r} is empty: it holds no"
                    f" {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files."
                )
        self.paths, self.labels, self._index_skips = paths, np.asarray(labels, np.int32), []
        probed = _probe_all(paths)
        self._keep([not isinstance(p, UnreadableImage) for p in probed], probed, folders)
        return [p for p in probed if not isinstance(p, UnreadableImage)]

    def _keep(self, keep: list[bool], errors: list, folders: list[str]) -> None:
        """Drop the files where `keep` is False (their `errors` become skips); no class may end empty."""
        for path, ok, error in zip(self.paths, keep, errors):
            if not ok and error is not None:  # None: already logged when read
                self._index_skips.append((path, str(error)))
        keep = np.asarray(keep, bool)
        self.paths = [p for p, k in zip(self.paths, keep) if k]
        self.labels = self.labels[keep]
        for label, name in enumerate(self.folders):
            class_dir = os.path.join(self.root, name)
            if name in folders and not np.any(self.labels == label):
                skipped = [s for s in self.skipped_files() if s[0].startswith(class_dir + os.sep)]
                raise DataError(f"Class folder {class_dir!r} has no readable image (skipped: {skipped}).")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def in_memory(self) -> bool:
        """Whether the images are decoded in memory (`cache=True`) rather than read per record."""
        return self._cache is not None

    def __getitem__(self, index: int) -> dict | None:
        """The record at `index`, or None when its file turns out unreadable (logged, see above)."""
        index = int(index)
        if self._cache is not None:
            image = self._cache[index]
        else:
            path = self.paths[index]
            if path in self._known_bad:
                return None
            try:
                image = decode_image(path, channels=self.channels, size=self.image_size)
            except UnreadableImage as e:
                self._record_skip(path, e)
                return None
        return {"image": image, "label": self.labels[index]}

    def _record_skip(self, path: str, error: UnreadableImage) -> None:
        self._known_bad.add(path)
        log.warning("Skipping %s: %s", printable(path), error)
        # One short O_APPEND write per line: atomic between grain worker processes.
        with open(self._skip_log, "a", encoding="utf-8") as f:
            f.write(json.dumps([path, str(error)]) + "\n")

    @property
    def images(self) -> np.ndarray | None:
        """The decoded uint8 (N, H, W, C) images when cached (`cache=True`), else None; what the
        device-resident input pipeline puts on the devices."""
        return self._cache

    def skipped_files(self) -> list[tuple[str, str]]:
        """(path, reason) of every file skipped so far, at indexing or when read in any process."""
        found = set(self._index_skips)
        if os.path.exists(self._skip_log):
            with open(self._skip_log, encoding="utf-8") as f:
                found.update(tuple(json.loads(line)) for line in f if line.strip())
        return sorted(found)

    def _fill_cache(self) -> None:
        shape = (len(self), self.image_size, self.image_size, self.channels)
        needed, available = int(np.prod(shape)), available_memory()
        log.info(f"data.cache: {shape[0]} images of {shape[1]}x{shape[2]}x{shape[3]} uint8 from {self.root}"
                 f" take {_gib(needed)} ({_gib(available) if available else 'unknown'} available)")
        if available is not None and needed > CACHE_MEMORY_FRACTION * available:
            raise DataError(
                f"data.cache needs {_gib(needed)} for {self.root} but only {_gib(available)} of memory is"
                f" available; drop data.cache or use a smaller data.image_size."
            )
        start = time.perf_counter()
        cache = np.empty(shape, np.uint8)  # filled in place: no second copy of the dataset

        def fill(index: int) -> bool:
            record = self[index]
            if record is not None:
                cache[index] = record["image"]
            return record is not None

        with concurrent.futures.ThreadPoolExecutor(usable_cpus()) as pool:  # Pillow decodes without the GIL
            keep = list(pool.map(fill, range(len(self))))
        self._keep(keep, [None] * len(keep), visible_dirs(self.root))
        self._cache = cache if all(keep) else cache[np.asarray(keep)]
        log.info(f"data.cache: decoded {len(self)} images in {time.perf_counter() - start:.1f} s")

    def compute_stats(self, indices=None, max_images: int = STATS_IMAGES) -> tuple[tuple, tuple]:
        """Per-channel pixel (mean, std) on the 0..1 scale over up to `max_images` evenly spaced images.

        Not ImageNet's statistics: those are wrong for arbitrary folders (Fashion-MNIST's mean is
        0.29, not 0.45). Deterministic: the same images are used every time.
        """
        indices = np.arange(len(self)) if indices is None else np.asarray(indices)
        picks = indices[np.linspace(0, len(indices) - 1, min(max_images, len(indices))).round().astype(int)]
        with concurrent.futures.ThreadPoolExecutor(usable_cpus()) as pool:  # Pillow decodes without the GIL
            images = [record["image"] for record in pool.map(self.__getitem__, picks) if record is not None]
        if not images:
            raise DataError(f"No readable image in {self.root!r} to compute normalization statistics from.")
        return channel_stats(images)

    @property
    def mean(self) -> tuple[float, ...]:
        if self.stats is None:
            self.stats = self.compute_stats()
        return self.stats[0]

    @property
    def std(self) -> tuple[float, ...]:
        if self.stats is None:
            self.stats = self.compute_stats()
        return self.stats[1]

    def __repr__(self) -> str:
        return (f"ImageFolderSource({self.root!r}, n={len(self)}, classes={len(self.class_names)},"
                f" size={self.image_size}, channels={self.channels}{', cached' if self._cache is not None else ''})")


# --- Datasets: each loader has the preset signature of jaxcnn.data.presets ---------------------

CATDOG_URL = "https://www.kaggle.com/datasets/tongpython/cat-and-dog"
DEMO_ROOT = os.path.join(os.path.dirname(__file__), "demo")
DEMO_CLASSES = os.path.join(DEMO_ROOT, "classes.txt")


def demo_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(class folders, class names) of the demo from `demo/classes.txt`, one `<folder> TAB <name>`
    line per class in label order: Fashion-MNIST's names, as `--data fashion_mnist` has them, so a
    demo-trained run evaluates on it (a name such as "T-shirt/top" cannot be a folder name)."""
    with open(DEMO_CLASSES, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    if any(len(row) != 2 for row in rows):
        raise ValueError(f"{DEMO_CLASSES}: every line must be <folder> TAB <class name>")
    folders, names = zip(*rows)
    return folders, names


def _reject_archive_options(dataset: str, download: bool, label_mode) -> None:
    if download:
        raise DataError(f"data.download does not apply to {dataset}: image folders are read from disk as they are.")
    if label_mode is not None:
        raise DataError(f"data.label_mode applies to cifar100 only, not to {dataset}.")


def folder_splits(name: str, train_dir: str, val_dir: str | None, test_dir: str | None, *, val_split: float,
                  split_seed: int, image_size: int | None, cache: bool, default_hflip: float = 0.5,
                  classes: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> DataSplits:
    """Sources for train (and val, test) folders; val is a stratified seeded split when there is none.

    Channels, class folders, image size and normalization statistics come from the training images
    (statistics from the training part only, never from val or test). `classes`: (class folders,
    class names) in label order, as ImageFolderSource's `class_names` and `names`; default: the
    sorted sub-folders, named as they are.
    """
    folders, names = classes or (None, None)
    train = ImageFolderSource(train_dir, image_size=image_size, cache=cache, class_names=folders, names=names)
    like_train = dict(image_size=train.image_size, channels=train.channels, class_names=train.folders,
                      names=train.class_names, cache=cache)
    val = ImageFolderSource(val_dir, **like_train) if val_dir else None
    test = ImageFolderSource(test_dir, **like_train) if test_dir else None
    val_is_split = val is None
    train_indices, val_indices = stratified_split(train.labels, val_split, split_seed) if val_is_split else (None, None)
    train.stats = train.compute_stats(train_indices)
    for source in (val, test):
        if source is not None:
            source.stats = train.stats
    return DataSplits(
        name=name,
        train=Subset(train, train_indices) if val_is_split else train,
        val=Subset(train, val_indices) if val_is_split else val,
        test=test,
        class_names=train.class_names,
        channels=train.channels,
        mean=train.mean,
        std=train.std,
        default_image_size=train.image_size,
        default_augment="flip",
        default_hflip=default_hflip,
        val_is_split=val_is_split,
    )


def load_image_folder(data_dir, *, val_split, split_seed, image_size=None, download=False, label_mode=None,
                      cache=False) -> DataSplits:
    """`--data PATH`: PATH/train/ (+ val/, valid/ or validation/; test/), or a flat PATH/<class>/.

    `val_split` and `split_seed` apply only when there is no validation folder.
    """
    _reject_archive_options("an image folder", download, label_mode)
    root = os.path.expanduser(os.fspath(data_dir)) if data_dir is not None else ""
    if not os.path.isdir(root):
        problem = "is a file, not a folder" if os.path.isfile(root) else "not found"
        raise DataNotFoundError(f"Image folder {root!r} {problem}. {_LAYOUT}")
    train_dir = split_folder(root, "train")
    val_dir = split_folder(root, "val") if train_dir else None
    test_dir = split_folder(root, "test") if train_dir else None
    if train_dir is None:
        reject_splits_as_classes(root)
    return folder_splits(os.path.basename(os.path.normpath(root)), train_dir or root, val_dir, test_dir,
                         val_split=val_split, split_seed=split_seed, image_size=image_size, cache=cache)


def _kaggle_split_dir(root: str, name: str) -> str | None:
    """Kaggle's zip nests each split twice (training_set/training_set/cats); accept one level too,
    but not both at once (which of them holds the data cannot be guessed)."""
    outer = os.path.join(root, name)
    if not os.path.isdir(outer):
        return None
    inner = os.path.join(outer, name)
    if not os.path.isdir(inner):
        return outer
    if others := [d for d in visible_dirs(outer) if d != name]:
        raise DataError(f"{outer!r} holds both {name}/ (Kaggle's doubled folder) and class folders {others}:"
                        " keep one of the two layouts.")
    return inner


def _catdog_layout(root: str) -> str:
    splits = [f"{root}/{s}/{s}/{c}/*.jpg" for s in ("training_set", "test_set") for c in ("cats", "dogs")]
    return (f"Expected the Kaggle \"cat-and-dog\" layout {splits[0]}, {splits[1]} and, optionally for the final"
            f" test, {splits[2]}, {splits[3]} (training_set/cats/... without the doubled folder works too)."
            f" Download it from {CATDOG_URL} (or `kaggle datasets download tongpython/cat-and-dog`), unzip it"
            f" into {root}, or point data.dir at the folder holding training_set/.")


def load_catdog(data_dir=None, *, val_split, split_seed, image_size=None, download=False, label_mode=None,
                cache=False) -> DataSplits:
    """`--data catdog`: Kaggle "cat-and-dog" (8005 train, 2023 test photos); 224 px by default."""
    _reject_archive_options("catdog", download, label_mode)
    if data_dir:  # the only place read
        given = os.path.expanduser(os.fspath(data_dir))
        root = given_folder(given, _catdog_layout(given))
    else:
        root = os.path.join("data", "catdog")
    train_dir = _kaggle_split_dir(root, "training_set")
    if train_dir is None:
        raise DataNotFoundError(f"Cat-and-dog images not found in {root!r}. {_catdog_layout(root)}")
    return folder_splits("catdog", train_dir, None, _kaggle_split_dir(root, "test_set"), val_split=val_split,
                         split_seed=split_seed, image_size=image_size or MAX_DEFAULT_IMAGE_SIZE, cache=cache,
                         default_hflip=0.3)  # the tutorial's RandomHorizontalFlip(p=0.3)


def load_demo(data_dir=None, *, val_split, split_seed, image_size=None, download=False, label_mode=None,
              cache=False) -> DataSplits:
    """`--data demo`: 1,500 train + 400 test real Fashion-MNIST images (28x28 gray) shipped in the package."""
    _reject_archive_options("demo", download, label_mode)
    if data_dir is not None:
        raise DataError("data.dir does not apply to demo: its images ship inside the jaxcnn package.")
    if not os.path.isdir(os.path.join(DEMO_ROOT, "train")):
        raise DataNotFoundError(f"The demo images are missing from {DEMO_ROOT}; regenerate them with"
                                " `python scripts/make_demo_dataset.py`.")
    return folder_splits("demo", os.path.join(DEMO_ROOT, "train"), None, os.path.join(DEMO_ROOT, "test"),
                         val_split=val_split, split_seed=split_seed, image_size=image_size, cache=cache,
                         classes=demo_classes())
