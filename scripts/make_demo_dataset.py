"""Regenerate jaxcnn/data/demo/ (the `--data demo` images) from the real Fashion-MNIST idx files.

Takes, for each of the 10 classes, the first TRAIN_PER_CLASS images of that label in the training
file and the first TEST_PER_CLASS in the test file (file order), and writes them as 28x28 grayscale
PNGs to demo/{train,test}/<label>_<name>/<split>_<index in the idx file>.png. The label prefix keeps
the sorted folder order equal to Fashion-MNIST's label order; demo/classes.txt maps each folder to
Fashion-MNIST's class name ("T-shirt/top" cannot be a folder name). Deterministic: the same idx files
give byte-identical PNGs.

    python scripts/make_demo_dataset.py [--source /usr/share/datasets/fashion-mnist]

Debian/Ubuntu: `apt-get install dataset-fashion-mnist` provides the idx files; or download them
from https://github.com/zalandoresearch/fashion-mnist.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil

import numpy as np
from PIL import Image

from jaxcnn.data.mnist import FASHION_MNIST

TRAIN_PER_CLASS = 150
TEST_PER_CLASS = 40
CLASS_FOLDERS = ("0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
                 "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEMO = os.path.join(os.path.dirname(__file__), os.pardir, "jaxcnn", "data", "demo")


def read_idx(path: str) -> np.ndarray:
    """An idx file (optionally .gz): big-endian header of magic (dtype code 0x08 = uint8, ndim) and dims."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find(source: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(source, name)):
            return os.path.join(source, name)
    raise FileNotFoundError(f"{stem}(.gz) not found in {source}")


def write_classes(out: str) -> None:
    """demo/classes.txt: `<folder> TAB <class name>` per class in label order (jaxcnn.data.folder.demo_classes)."""
    with open(os.path.join(out, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("# The demo's class folders (label order) and their names: Fashion-MNIST's, as --data fashion_mnist\n"
                "# names its classes. A folder name cannot hold \"/\", so the names live here "
                "(scripts/make_demo_dataset.py).\n")
        f.writelines(f"{folder}\t{name}\n" for folder, name in zip(CLASS_FOLDERS, FASHION_MNIST.class_names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist", help="folder of the 4 idx(.gz) files")
    parser.add_argument("--out", default=os.path.normpath(DEMO))
    args = parser.parse_args()
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        images = read_idx(find(args.source, FILES[split][0]))
        labels = read_idx(find(args.source, FILES[split][1]))
        split_dir = os.path.join(args.out, split)
        shutil.rmtree(split_dir, ignore_errors=True)
        for label, folder in enumerate(CLASS_FOLDERS):
            os.makedirs(os.path.join(split_dir, folder))
            for index in np.flatnonzero(labels == label)[:per_class]:
                path = os.path.join(split_dir, folder, f"{split}_{index:05d}.png")
                Image.fromarray(images[index], "L").save(path, optimize=True)
        print(f"{split}: {per_class} images x {len(CLASS_FOLDERS)} classes -> {split_dir}")
    write_classes(args.out)


if __name__ == "__main__":
    main()
