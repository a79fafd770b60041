"""What every dataset hands to the pipeline: train/val/test sources plus their metadata."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Protocol, Sequence

import numpy as np

from jaxcnn.errors import UserError


class DataNotFoundError(UserError, FileNotFoundError):
    """A dataset is not where it should be; the message says the expected layout and how to get it."""


class DataError(UserError, ValueError):
    """The data or a data option cannot be used as given: an unknown dataset name, a corrupt or
    foreign file, a folder of the wrong layout, an option the dataset does not take."""


DOWNLOAD_HINT = "Put the dataset's files there, or set data.download to fetch them into it."


def given_folder(path: str | os.PathLike, hint: str = "", *, may_create: bool = False) -> str:
    """`path` (`data.dir` as the user gave it, `~` expanded), checked to be an existing folder
    (or, with `may_create` (a download into it), a path where none exists yet).

    A folder the user names is the only place its dataset is read from, so a path that does not
    exist or is a file is a DataNotFoundError naming it (then, for one that does not exist, `hint`),
    never a reason to look elsewhere.
    """
    folder = os.path.expanduser(os.fspath(path))
    if os.path.isdir(folder) or (may_create and not os.path.lexists(folder)):
        return folder
    if os.path.isfile(folder):
        problem = "is a file, not a folder: point data.dir at the folder that holds the dataset's files"
    elif os.path.islink(folder):
        problem = f"is a broken symlink (to {os.readlink(folder)}, which does not exist)"
    elif os.path.exists(folder):
        problem = "is not a folder"
    else:
        problem = "does not exist"
    missing = problem == "does not exist"
    raise DataNotFoundError(f"data.dir {folder} {problem}." + (f" {hint}" if hint and missing else ""))


class Source(Protocol):
    """A grain random-access source of `{"image": uint8 (H, W, C), "label": int32 ()}` records."""

    class_names: tuple[str, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class Subset:
    """A view of `indices` of another source, keeping its metadata (used for seeded splits)."""

    def __init__(self, source: Source, indices: Sequence[int]):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.class_names = source.class_names
        self.channels = source.channels
        self.mean = source.mean
        self.std = source.std

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.source[int(self.indices[index])]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.source.labels)[self.indices]

    def __repr__(self) -> str:
        return f"Subset({self.source!r}, n={len(self)})"


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split of indices into (train, val), like sklearn's stratified split.

    Each class gives `round(n_c * val_fraction)` examples to val (at least one when the class has
    two or more), so the class balance of both parts matches the whole. A fraction of 0 keeps
    everything for training (an empty validation part).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    if val_fraction == 0.0:
        return np.arange(len(labels)), np.arange(0)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@dataclasses.dataclass
class DataSplits:
    """A dataset ready for training: sources per split plus what the model and pipeline need."""

    name: str
    train: Source
    val: Source
    test: Source | None
    class_names: tuple[str, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_image_size: int
    default_augment: str = "flip"
    default_hflip: float = 0.5
    val_is_split: bool = False
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def skipped_files(self) -> list[tuple[str, str]]:
        """(path, reason) of every unreadable file found so far, in any split."""
        found = list(self.skipped)
        for source in (self.train, self.val, self.test):
            while isinstance(source, Subset):
                source = source.source
            found.extend(getattr(source, "skipped_files", lambda: [])())
        return sorted(set(found))
