"""Listing an image folder: its split and class folders, and every image file under each, each file once.

Symlinks are followed (datasets are often assembled from links), but no directory is entered twice
(by device and inode) and no file is counted twice: a symlink back into a folder that contains it
(a cycle such as `cats/loop -> ..`) or to a folder already listed is not followed, with a warning.
Real paths are listed before symlinked ones, so an image that also sits in its own class folder
keeps that folder's label whatever the alphabetical order of the classes. What operating systems
and notebooks add (`__MACOSX/`, `.ipynb_checkpoints/`, `Thumbs.db`, ...) is not data: never a class,
never listed, so never a skipped file either. Where the folder for a split or a class cannot be told
(train/ beside training/, split folders without train/), it is a DataError, not a guess.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import stat

from jaxcnn.data.splits import DataError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
# What operating systems, archivers and NAS boxes put beside the data, compared lowercased: never a
# class, never an image. macOS zips add __MACOSX/ (AppleDouble `._name` files: resource forks, not
# images), Windows Thumbs.db, desktop.ini and $RECYCLE.BIN/, Synology @eaDir/ (thumbnails that are
# real JPEGs), ext filesystems lost+found/. Hidden names (.DS_Store, ._*, .ipynb_checkpoints, .git,
# .Trashes) are skipped by their leading dot.
SYSTEM_ENTRIES = frozenset({"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini", "$recycle.bin",
                            "system volume information", "@eadir", "lost+found"})

log = logging.getLogger(__name__)


def is_data_entry(name: str) -> bool:
    """Whether a file or folder named `name` may hold data: not hidden, not one of `SYSTEM_ENTRIES`."""
    return not name.startswith(".") and name.lower() not in SYSTEM_ENTRIES


def visible_dirs(path: str) -> list[str]:
    """Sorted sub-folder names that may hold data (see `is_data_entry`): not __MACOSX, .ipynb_checkpoints, ..."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and is_data_entry(e.name))


# The folder names of each split of a PATH/train/, PATH/val/, PATH/test/ layout (case-insensitive).
SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


def split_folder(root: str, split: str) -> str | None:
    """The folder in `root` named as one of `SPLIT_FOLDERS[split]` (case-insensitive), or None;
    two of them (train/ and training/) are a DataError: which one is meant cannot be guessed."""
    present = [name for name in visible_dirs(root) if name.lower() in SPLIT_FOLDERS[split]]
    if len(present) > 1:
        raise DataError(f"{root!r} has {' and '.join(n + '/' for n in present)}: both would be the {split} split."
                        " Keep one of them (rename or move the other).")
    return os.path.join(root, present[0]) if present else None


def reject_splits_as_classes(root: str) -> None:
    """A DataError when `root`, read as flat `<class>/` folders, is a split layout without train/:
    a val/ or test/ folder holding the same class folders as another folder (`trn/a`, `val/a`)."""
    for split in filter(None, (split_folder(root, "val"), split_folder(root, "test"))):
        classes, name = visible_dirs(split), os.path.basename(split)
        twins = [d for d in visible_dirs(root) if classes and d != name
                 and visible_dirs(os.path.join(root, d)) == classes]
        if twins:
            raise DataError(f"{root!r} has {twins[0]}/ and {name}/ holding the same class folders"
                            f" ({', '.join(classes)}) but no train/ folder, so they would be read as two classes."
                            " Rename the training folder to train/.")


def printable(path: str) -> str:
    """`path` for a message: its bytes as UTF-8, any that are not as \\xNN (as `ls -b` shows them)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_image_name(name: str) -> bool:
    return is_data_entry(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


@dataclasses.dataclass
class _Listing:
    """What one listing of a root found so far."""

    root: str
    folders: dict  # (device, inode) -> the path the folder was first listed as
    files: dict = dataclasses.field(default_factory=dict)  # (device, inode) or path -> (label, order, path)
    links: collections.deque = dataclasses.field(default_factory=collections.deque)  # (label, path), followed last
    repeats: list = dataclasses.field(default_factory=list)  # (path, the path counted instead)

    def add_file(self, label: int, path: str, key) -> None:
        if key in self.files:
            self.repeats.append((path, self.files[key][2]))
        else:
            self.files[key] = (label, len(self.files), path)

    def walk(self, label: int, top: str) -> None:
        """List `top`'s real sub-folders and files, depth first in name order; queue its symlinks."""
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
            except OSError as error:
                log.warning("Image folder %s: cannot list %s (%s); its images are left out.",
                            printable(self.root), printable(folder), error)
                continue
            subfolders = []
            for entry in entries:
                if not is_data_entry(entry.name):
                    continue
                if entry.is_symlink():
                    self.links.append((label, entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    key = _identity(entry.stat(follow_symlinks=False))
                    if not self._listed_already(entry.path, key):  # e.g. root, under a link to its parent
                        self.folders[key] = entry.path
                        subfolders.append(entry.path)
                elif _is_image_name(entry.name):
                    self.add_file(label, entry.path, _identity(entry.stat(follow_symlinks=False)))
            stack.extend(reversed(subfolders))

    def _listed_already(self, path: str, key) -> bool:
        if key not in self.folders:
            return False
        log.warning("Image folder %s: not entering %s: it is %s, listed already, so its images are counted once.",
                    printable(self.root), printable(path), printable(self.folders[key]))
        return True

    def follow(self, label: int, link: str) -> None:
        """Walk the folder `link` points to, or count the file, unless it was listed already."""
        try:
            status = os.stat(link)
        except OSError:  # dangling: still listed, so that reading it reports it as a skipped file
            status = None
        if status is None or not stat.S_ISDIR(status.st_mode):
            if _is_image_name(os.path.basename(link)):
                self.add_file(label, link, _identity(status) if status else link)
            return
        target, here = os.path.realpath(link), os.path.realpath(os.path.dirname(link))
        if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
            log.warning("Image folder %s: not following the symlink %s -> %s: it is a cycle (it leads back to a"
                        " folder that contains it).", printable(self.root), printable(link), printable(target))
            return
        key = _identity(status)
        if self._listed_already(link, key):
            return
        self.folders[key] = link
        self.walk(label, link)


def list_images(root: str, class_dirs: list[tuple[int, str]]) -> tuple[list[str], list[int]]:
    """Image file paths and their labels under each `(label, class folder)` of `root`.

    Files are ordered by label, then as listed: real paths depth first in name order, then the
    symlinked ones. Hidden and system files and folders (`is_data_entry`) are ignored. Raises
    DataError when two class folders are one folder (e.g. one is a symlink to the other).
    """
    listing = _Listing(root, {_identity(os.stat(root)): root})
    for _, folder in class_dirs:
        key = _identity(os.stat(folder))
        if key in listing.folders:
            raise DataError(f"{folder!r} is the same folder as {listing.folders[key]!r} (a symlink): each class"
                            " needs a folder of its own.")
        listing.folders[key] = folder
    for label, folder in class_dirs:
        listing.walk(label, folder)
    while listing.links:
        listing.follow(*listing.links.popleft())
    if listing.repeats:
        path, first = listing.repeats[0]
        log.warning("Image folder %s: %d image file(s) reached by more than one path were counted once, e.g. %s"
                    " (the same file as %s).", printable(root), len(listing.repeats), printable(path), printable(first))
    found = sorted(listing.files.values())
    return [path for _, _, path in found], [label for label, _, _ in found]
