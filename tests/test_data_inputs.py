"""Nothing is silently misread: a data.dir the user gives is the only place read, a data.dir that is a
file or missing is one clear error, and what operating systems and notebooks add to an image
folder is never a class, an image or a skipped file."""

import dataclasses
import os
import struct

import numpy as np
import pytest
from archive_fixtures import expect_records, idx_bytes, make_split, write_cifar, write_idx_set
from PIL import Image

from jaxcnn.data import DataError, DataNotFoundError, cifar, mnist
from jaxcnn.data.folder import load_image_folder
from jaxcnn.data.presets import check_dataset_name, load_data
from jaxcnn.errors import UserError

SPLIT = dict(val_split=0.2, split_seed=0)
DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(name="system_copy")
def fixture_system_copy(tmp_path, monkeypatch):
    """A complete Fashion-MNIST (60 train images) where an OS package would install it."""
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_idx_set(system, train_n=60, test_n=10, seed=1)
    monkeypatch.setattr(mnist, "FASHION_MNIST", dataclasses.replace(mnist.FASHION_MNIST, system_dirs=(str(system),)))
    return system


def test_a_given_data_dir_missing_files_is_an_error_even_with_a_copy_elsewhere(tmp_path, system_copy):
    given = tmp_path / "mine"
    write_idx_set(given, train_n=20, test_n=10)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (given / name).unlink()  # only the two train-* files are left
    with pytest.raises(DataNotFoundError) as error:
        load_data("fashion_mnist", str(given), **SPLIT)
    message = str(error.value)
    assert isinstance(error.value, UserError) and "\n" not in message
    assert str(given) in message and "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]" in message
    assert "train-images" not in message  # only what is missing is named
    assert f"A complete copy is in {system_copy}: point data.dir at it" in message  # said, never used


def test_without_a_data_dir_the_search_order_stays(tmp_path, system_copy, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data/fashion_mnist here
    assert len(load_data("fashion_mnist", None, **SPLIT).train.source) == 60  # the system copy
    write_idx_set(tmp_path / "data" / "fashion_mnist", train_n=20, test_n=10)
    assert len(load_data("fashion_mnist", None, **SPLIT).train.source) == 20  # ./data/<name> comes first


def test_a_given_data_dir_is_read_in_its_torchvision_layout_too(tmp_path, system_copy):
    write_idx_set(tmp_path / "mine" / "FashionMNIST" / "raw", train_n=20, test_n=10)
    assert len(load_data("fashion_mnist", str(tmp_path / "mine"), **SPLIT).train.source) == 20


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION), reason="apt install dataset-fashion-mnist")
def test_the_debian_copy_is_named_but_not_read_for_a_given_data_dir(tmp_path):
    write_idx_set(tmp_path, train_n=20, test_n=10)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=f"A complete copy is in {DEBIAN_FASHION}"):
        load_data("fashion_mnist", str(tmp_path), **SPLIT)


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "cifar10", "cifar100", "catdog", "tfds:mnist"])
@pytest.mark.parametrize("kind", ["file", "missing"])
def test_a_data_dir_that_is_a_file_or_missing_is_one_line_naming_it(tmp_path, system_copy, name, kind):
    if name.startswith("tfds:"):
        pytest.importorskip("tensorflow_datasets")
    path = tmp_path / "train-images-idx3-ubyte.gz"
    if kind == "file":
        path.write_bytes((system_copy / path.name).read_bytes())
    with pytest.raises(DataNotFoundError) as error:
        load_data(name, str(path), **SPLIT)
    message = str(error.value)
    expected = "is a file, not a folder" if kind == "file" else "does not exist"
    assert f"data.dir {path} {expected}" in message and "\n" not in message


def test_the_cli_says_a_data_dir_file_in_one_line_and_exits_2(tmp_path, system_copy, capsys):
    from scripts.train import main

    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"\x1f\x8b")
    code = main(["--arch", "lenet5", "--data", "fashion_mnist", "--data-dir", str(path), "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: --data-dir {path} is a file, not a folder: point --data-dir at the folder" \
                                " that holds the dataset's files."


def test_a_download_may_create_the_given_data_dir_but_not_replace_a_file(tmp_path):
    path = tmp_path / "cifar.tar.gz"
    path.write_bytes(b"")
    with pytest.raises(DataNotFoundError, match="is a file, not a folder"):
        load_data("cifar10", str(path), download=True, **SPLIT)


# --- What operating systems and notebooks add to image folders ---------------------------------

def apple_double(name: str) -> bytes:
    """The `._name` file a macOS zip stores beside each file (AppleDouble v2: Finder info + an
    extended-attributes block), 4096 bytes as macOS writes them."""
    header = struct.pack(">II16sH", 0x00051607, 0x00020000, b"Mac OS X        ", 2)
    entries = struct.pack(">III", 9, 50, 3760) + struct.pack(">III", 2, 3810, 286)  # Finder info, resource fork
    attributes = b"\0" * 34 + b"ATTR" + struct.pack(">I", 4096) + b"com.apple.quarantine\0" + name.encode()
    return (header + entries + attributes).ljust(4096, b"\0")


def write_png(path, value: int, size=(10, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def write_mac_unzip(root, classes=("cats", "dogs"), per_class=5):
    """A folder as unzipping a macOS-made zip produces it, with what Windows, a Synology NAS and
    Jupyter add: only `per_class` PNGs in each class folder are data."""
    for c, name in enumerate(classes):
        for k in range(per_class):
            write_png(root / name / f"img{k}.png", 40 * c + k)
            (root / "__MACOSX" / name).mkdir(parents=True, exist_ok=True)
            (root / "__MACOSX" / name / f"._img{k}.png").write_bytes(apple_double(f"img{k}.png"))
        (root / "__MACOSX" / f"._{name}").write_bytes(apple_double(name))
        (root / name / "._img0.png").write_bytes(apple_double("img0.png"))  # as copied onto a FAT drive
        (root / name / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 2038)
        (root / name / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504)
        (root / name / "desktop.ini").write_text("[.ShellClassInfo]\r\nIconResource=C:\\icon.ico,0\r\n")
        write_png(root / name / "@eaDir" / "img0.png" / "SYNOFILE_THUMB_M.png", 255)  # a real image, not data
        write_png(root / name / ".ipynb_checkpoints" / "img0-checkpoint.png", 255)
    write_png(root / ".ipynb_checkpoints" / "img0-checkpoint.png", 255)
    return root


def test_a_mac_unzipped_folder_has_only_its_classes_and_images(tmp_path):
    data = load_image_folder(write_mac_unzip(tmp_path / "shapes"), **SPLIT)
    assert data.class_names == ("cats", "dogs")
    source = data.train.source
    assert len(source) == 10 and np.bincount(source.labels).tolist() == [5, 5]
    assert all(os.path.basename(p).startswith("img") and "@eaDir" not in p for p in source.paths)
    assert data.skipped_files() == []  # none of it was taken for an unreadable image
    assert all(r["image"].max() < 255 for r in (source[i] for i in range(len(source))))  # no thumbnail read


def test_system_folders_beside_train_and_test_are_not_classes(tmp_path):
    root = tmp_path / "split"
    write_mac_unzip(root / "train")
    write_mac_unzip(root / "test", per_class=2)
    (root / "__MACOSX" / "train" / "cats").mkdir(parents=True)
    (root / "__MACOSX" / "train" / "cats" / "._img0.png").write_bytes(apple_double("img0.png"))
    data = load_data(str(root), **SPLIT)
    assert data.class_names == ("cats", "dogs") and len(data.test) == 4 and data.skipped_files() == []


def test_two_folders_for_one_split_are_an_error_naming_both(tmp_path):
    for split in ("train", "training"):
        for name in ("a", "b"):
            write_png(tmp_path / split / name / "x.png", 1)
    with pytest.raises(DataError, match="has train/ and training/"):
        load_image_folder(tmp_path, **SPLIT)


def test_split_folders_without_train_are_not_taken_for_two_classes(tmp_path):
    for split in ("trn", "val"):
        for name in ("a", "b"):
            write_png(tmp_path / "split" / split / name / "x.png", 1)
    with pytest.raises(DataError, match="has trn/ and val/ holding the same class folders"):
        load_image_folder(tmp_path / "split", **SPLIT)
    for name in ("valid", "invalid"):  # classes that happen to have a split's name are classes
        write_png(tmp_path / "flat" / name / "x.png", 1)
        write_png(tmp_path / "flat" / name / "y.png", 2)
    assert load_image_folder(tmp_path / "flat", **SPLIT).class_names == ("invalid", "valid")


def test_a_folder_dataset_with_a_data_dir_too_is_refused(tmp_path):
    write_mac_unzip(tmp_path / "shapes")
    with pytest.raises(DataError, match="data.dir .* does not apply to an image folder"):
        load_data(str(tmp_path / "shapes"), str(tmp_path / "elsewhere"), **SPLIT)


# --- User mistakes are UserErrors (ValueError still catches them) -------------------------------

@pytest.mark.parametrize("call", [
    lambda tmp: check_dataset_name("fashion-mnist"),
    lambda tmp: load_data("mnist", None, label_mode="fine", **SPLIT),
    lambda tmp: load_data("cifar100", str(tmp), label_mode="medium", **SPLIT),
    lambda tmp: load_data("mnist", str(tmp), cache=True, **SPLIT),
    lambda tmp: load_data("demo", str(tmp), **SPLIT),
    lambda tmp: load_image_folder(tmp, **SPLIT),  # no class folders
], ids=["unknown name", "label_mode", "cifar100 label_mode", "cache", "demo dir", "empty folder"])
def test_user_mistakes_are_data_errors(tmp_path, call):
    with pytest.raises(DataError) as error:
        call(tmp_path)
    assert isinstance(error.value, UserError) and isinstance(error.value, ValueError)


def test_a_dataset_name_that_is_a_file_says_so(tmp_path):
    path = tmp_path / "images.zip"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match="is a file: a dataset path must be a folder"):
        check_dataset_name(str(path))


def test_an_idx_label_beyond_the_classes_is_an_error_naming_the_file(tmp_path):
    write_idx_set(tmp_path, gz=False)
    labels = (np.arange(10) % 10).astype(np.uint8)
    labels[3] = 10  # Fashion-MNIST has labels 0..9
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(DataError, match=rf"^{tmp_path / 't10k-labels-idx1-ubyte'} holds label 10 \(record 3\), but"
                                        r" its 10 classes have labels 0\.\.9"):
        load_data("mnist", str(tmp_path), **SPLIT)


def test_a_cifar_label_beyond_the_classes_is_an_error_naming_the_member(tmp_path, monkeypatch):
    expect_records(monkeypatch, "cifar10", train=6, test=10)
    test = make_split(10, 10, seed=9)
    test.labels[7] = 12
    folder = write_cifar(tmp_path, "cifar10", "binary", [make_split(6, 10, seed=i) for i in range(5)], test)
    with pytest.raises(DataError, match=rf"^{folder / 'test_batch.bin'} holds label 12 \(record 7\)"):
        cifar.load_cifar10(str(tmp_path), **SPLIT)
