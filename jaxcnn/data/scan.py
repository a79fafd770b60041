"""Listing an image folder: its class folders, and every image file under each, each file once.

Symlinks are followed (datasets are often assembled from links), but no directory is entered twice
(by device and inode) and no file is counted twice: a symlink back into a folder that contains it
(a cycle such as `cats/loop -> ..`) or to a folder already listed is not followed, with a warning.
Real paths are listed before symlinked ones, so an image that also sits in its own class folder
keeps that folder's label whatever the alphabetical order of the classes.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import stat

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

log = logging.getLogger(__name__)


def visible_dirs(path: str) -> list[str]:
    """Sorted sub-folder names, without hidden ones (.ipynb_checkpoints, .git, ...)."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def printable(path: str) -> str:
    """`path` for a message: its bytes as UTF-8, any that are not as \\xNN (as `ls -b` shows them)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


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
                if entry.name.startswith("."):
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
    symlinked ones. Hidden files and folders are ignored. Raises ValueError when two class
    folders are one folder (e.g. one is a symlink to the other).
    """
    listing = _Listing(root, {_identity(os.stat(root)): root})
    for _, folder in class_dirs:
        key = _identity(os.stat(folder))
        if key in listing.folders:
            raise ValueError(f"{folder!r} is the same folder as {listing.folders[key]!r} (a symlink): each class"
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
