"""Classify image files with a trained run: find them (files, folders, globs), decode them with the
hardened decoder, predict in batches, and write one row per image.

Unreadable files never stop a prediction: they are returned, with the reason, beside the rows.
The output is checked before any work (`check_output`) and written whole or not at all, as UTF-8
whatever the locale (a file name that is not UTF-8 as the bytes it is: `jaxcnn.output`).
"""

from __future__ import annotations

import concurrent.futures
import csv
import glob
import json
import os
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from jaxcnn.data.decode import UnreadableImage
from jaxcnn.data.scan import IMAGE_EXTENSIONS, list_images
from jaxcnn.inference.run import TrainedModel
from jaxcnn.output import OutputPathError, atomic_write, check_writable, utf8_text

OUTPUT_FORMATS = (".csv", ".json")
PROGRESS_MIN_FILES = 100  # below this a progress bar is noise


def find_images(patterns: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(files, problems): files named, found under folders (recursively, by image extension), or
    matched by glob patterns (`**` recurses), each once in the order given; a pattern that names
    nothing becomes a (pattern, reason) problem."""
    files, problems = [], []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = _images_under(pattern)
            if not found:
                problems.append((pattern, f"no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files in this folder"))
        elif os.path.exists(pattern):
            found = [pattern]
        else:
            matches = sorted(glob.glob(pattern, recursive=True))
            found = [f for m in matches for f in (_images_under(m) if os.path.isdir(m) else [m])]
            if not found:
                reason = "no file matches" if glob.has_magic(pattern) else "no such file or folder"
                problems.append((pattern, reason))
        files += found
    return list(dict.fromkeys(files)), problems


def _images_under(folder: str) -> list[str]:
    """Every image file under `folder`, as an image-folder dataset lists them (symlinks followed,
    each folder entered and each file counted once, hidden ones skipped)."""
    return list_images(os.path.dirname(os.path.abspath(folder)), [(0, folder)])[0]  # paths as given


def _load_all(model: TrainedModel, paths: Sequence[str], pool) -> tuple[list, list[tuple[str, str]]]:
    """(loaded (path, image) pairs, unreadable (path, reason) pairs) of `paths`, decoded in threads."""
    def load(path):
        try:
            return path, model.inputs.load(path)
        except UnreadableImage as error:
            return path, error

    loaded, unreadable = [], []
    for path, image in pool.map(load, paths):
        (unreadable.append((path, str(image))) if isinstance(image, UnreadableImage) else loaded.append((path, image)))
    return loaded, unreadable


def predict_files(model: TrainedModel, paths: Sequence[str], *, topk: int = 5,
                  progress: bool | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """(rows, unreadable): a row {path, predicted, probability, top: [(class, p)...], probabilities}
    per readable file, and (path, reason) per unreadable one. `progress` None: a bar from
    `PROGRESS_MIN_FILES` files on."""
    names = model.class_names
    topk = max(1, min(topk, len(names)))
    rows, unreadable = [], []
    show = len(paths) >= PROGRESS_MIN_FILES if progress is None else progress
    batches = range(0, len(paths), model.batch_size)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in tqdm(batches, desc="predict", unit="batch", disable=not show):
            loaded, bad = _load_all(model, paths[start:start + model.batch_size], pool)
            unreadable += bad
            if not loaded:
                continue
            probabilities = model.forward(model.inputs.resize([image for _, image in loaded]))[1]
            for (path, _), probs in zip(loaded, probabilities):
                order = np.argsort(-probs, kind="stable")[:topk]
                rows.append({"path": path, "predicted": names[order[0]], "probability": float(probs[order[0]]),
                             "top": [(names[i], float(probs[i])) for i in order],
                             "probabilities": dict(zip(names, map(float, probs)))})
    return rows, unreadable


def check_output(path) -> str:
    """`path` as a string, checked before any work: it ends in one of `OUTPUT_FORMATS` and can be
    written (`jaxcnn.output.check_writable`); else an `OutputPathError` naming it."""
    path = os.fspath(path)
    if not path.lower().endswith(OUTPUT_FORMATS):
        raise OutputPathError(f"--output must end in {' or '.join(OUTPUT_FORMATS)}, got {path!r}")
    check_writable(path, what="--output")
    return path


def unreadable_list(path: str) -> str:
    """Where the CSV output `path` lists the unreadable files: `<stem>-unreadable.csv`."""
    return os.path.splitext(path)[0] + "-unreadable.csv"


def write_predictions(path, rows: list[dict], unreadable: list[tuple[str, str]], class_names) -> list[str]:
    """Write `rows` as CSV or JSON (by `path`'s suffix); returns the files written.

    CSV: path, predicted, probability, top1..topK (class, probability), then every class's
    probability; unreadable files go to `<stem>-unreadable.csv` (an older one is removed when
    none is unreadable now, so no list is taken for this run's). JSON: {"predictions", "unreadable"}.
    """
    path = check_output(path)
    if path.lower().endswith(".json"):
        with atomic_write(path) as f:
            listed = [{"path": p, "reason": r} for p, r in unreadable]
            json.dump(_utf8_strings({"predictions": rows, "unreadable": listed}), f, indent=1)
        return [path]
    k = len(rows[0]["top"]) if rows else 0
    header = ["path", "predicted", "probability"]
    header += [f"top{i}{part}" for i in range(1, k + 1) for part in ("", "_probability")]
    header += [f"p[{name}]" for name in class_names]
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            top = [value for pair in row["top"] for value in pair]
            writer.writerow([row["path"], row["predicted"], row["probability"], *top, *row["probabilities"].values()])
    written, listed = [path], unreadable_list(path)
    if unreadable:
        with atomic_write(listed, newline="") as f:
            csv.writer(f).writerows([("path", "reason"), *unreadable])
        written.append(listed)
    elif os.path.isfile(listed):
        os.remove(listed)
    return written


def _utf8_strings(value):
    """`value` (JSON-ready) with every string, keys too, as `utf8_text`: a file or class name read
    under `LANG=C` is written as its characters, not as escapes of its bytes."""
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, dict):
        return {_utf8_strings(key): _utf8_strings(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_utf8_strings(item) for item in value]
    return value


def format_predictions(rows: list[dict], limit: int | None = None) -> str:
    """A console table: file, then the top-k classes with their probabilities."""
    shown = rows if limit is None else rows[:limit]
    width = min(60, max([len("file"), *(len(r["path"]) for r in shown)]))
    lines = [f"{'file':<{width}}  top classes (probability)"]
    for row in shown:
        path = row["path"] if len(row["path"]) <= width else "…" + row["path"][-(width - 1):]
        lines.append(f"{path:<{width}}  " + ", ".join(f"{name} ({p:.3f})" for name, p in row["top"]))
    if len(shown) < len(rows):
        lines.append(f"... and {len(rows) - len(shown)} more")
    return "\n".join(lines)
