"""CIFAR-10/100 loaders on small archives written in every published layout (tests/archive_fixtures.py)."""

import gzip
import os
import pickle
import tarfile

import numpy as np
import pytest
from archive_fixtures import (
    CIFAR10_NAMES,
    CIFAR100_COARSE,
    CIFAR100_FINE,
    expect_records,
    make_split,
    py2_pickle,
    tar_gz,
    write_cifar,
)

from jaxcnn.data.arrays import PUBLISHED_STATS
from jaxcnn.data.cifar import load_cifar10, load_cifar100
from jaxcnn.data.presets import load_data
from jaxcnn.data.splits import DataNotFoundError

SPLIT = dict(val_split=0.2, split_seed=0)
VARIANTS = [("python", "folder"), ("python", "archive"), ("binary", "folder"), ("binary", "archive")]


@pytest.fixture(autouse=True)
def fixture_record_counts(monkeypatch):
    """The fixtures below hold 6 images a CIFAR-10 training batch and 10 a test batch, 200 and 10 for CIFAR-100."""
    expect_records(monkeypatch, "cifar10", train=6, test=10)
    expect_records(monkeypatch, "cifar100", train=200, test=10)


def _cifar10(tmp_path, fmt, packing):
    train = [make_split(6, 10, seed=i) for i in range(5)]
    test = make_split(10, 10, seed=9)
    folder = write_cifar(tmp_path / "src", "cifar10", fmt, train, test)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if packing == "archive":
        tar_gz(folder, data_dir)
    else:
        folder.rename(data_dir / folder.name)
    return data_dir, train, test


def _cifar100(tmp_path, fmt, packing):
    train, test = make_split(200, 100, seed=1, coarse_classes=20), make_split(10, 100, seed=2, coarse_classes=20)
    folder = write_cifar(tmp_path / "src", "cifar100", fmt, [train], test)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if packing == "archive":
        tar_gz(folder, data_dir)
    else:
        folder.rename(data_dir / folder.name)
    return data_dir, train, test


def _check_split_contents(splits, train_images, train_labels, test):
    """Train + val together are exactly the training images (HWC) and labels; test likewise."""
    full = splits.train.source
    assert splits.val.source is full and splits.val_is_split
    np.testing.assert_array_equal(full.images, train_images)
    assert full.images.flags.c_contiguous  # each record is then a contiguous (32, 32, 3) view
    np.testing.assert_array_equal(full.labels, train_labels)
    assert sorted(np.concatenate([splits.train.indices, splits.val.indices])) == list(range(len(train_labels)))
    record = splits.test[3]
    assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
    assert record["label"].dtype == np.int32
    np.testing.assert_array_equal(np.stack([splits.test[i]["image"] for i in range(len(test.labels))]), test.images)
    i = int(splits.val.indices[0])
    np.testing.assert_array_equal(splits.val[0]["image"], train_images[i])


@pytest.mark.parametrize("fmt,packing", VARIANTS)
def test_cifar10_every_layout(tmp_path, fmt, packing):
    data_dir, train, test = _cifar10(tmp_path, fmt, packing)
    splits = load_cifar10(str(data_dir), **SPLIT)
    assert splits.name == "cifar10" and splits.class_names == CIFAR10_NAMES
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 10)
    assert splits.channels == 3 and splits.default_image_size == 32 and splits.default_augment == "cifar"
    assert (splits.mean, splits.std) == PUBLISHED_STATS["cifar10"]
    _check_split_contents(splits, np.concatenate([b.images for b in train]),
                          np.concatenate([b.labels for b in train]), test)
    # Stratified: classes 0-5 have 5 examples each (one per batch); round(5 * 0.2) = 1 goes to val.
    assert np.bincount(splits.val.labels, minlength=10).tolist() == [1] * 6 + [0] * 4


@pytest.mark.parametrize("fmt,packing", VARIANTS)
@pytest.mark.parametrize("label_mode", [None, "fine", "coarse"])
def test_cifar100_every_layout_and_label_mode(tmp_path, fmt, packing, label_mode):
    data_dir, train, test = _cifar100(tmp_path, fmt, packing)
    splits = load_cifar100(str(data_dir), label_mode=label_mode, **SPLIT)
    coarse = label_mode == "coarse"
    assert splits.class_names == (CIFAR100_COARSE if coarse else CIFAR100_FINE)
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (200, 10)
    assert (splits.mean, splits.std) == PUBLISHED_STATS["cifar100"]
    _check_split_contents(splits, train.images, train.coarse if coarse else train.labels, test)
    assert [int(splits.test[i]["label"]) for i in range(10)] == list(test.coarse if coarse else test.labels)


def test_data_dir_may_be_the_extracted_folder_and_load_data_reaches_it(tmp_path):
    data_dir, train, _ = _cifar10(tmp_path, "python", "folder")
    splits = load_data("cifar10", str(data_dir / "cifar-10-batches-py"), val_split=0.1, split_seed=3)
    assert len(splits.train) + len(splits.val) == 30 and splits.class_names == CIFAR10_NAMES


def test_split_is_seeded(tmp_path):
    data_dir, _, _ = _cifar10(tmp_path, "binary", "folder")
    a, b = (load_cifar10(str(data_dir), val_split=0.2, split_seed=s) for s in (1, 1))
    c = load_cifar10(str(data_dir), val_split=0.2, split_seed=2)
    np.testing.assert_array_equal(a.val.indices, b.val.indices)
    assert not np.array_equal(a.val.indices, c.val.indices)


def test_missing_data_names_every_place_looked_and_download(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        load_cifar10(str(tmp_path), **SPLIT)
    message = str(error.value)
    for name in ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar-10-batches-bin",
                 "cifar-10-binary.tar.gz", "data.download", str(tmp_path)):
        assert name in message
    assert list(tmp_path.iterdir()) == []  # nothing was fetched or created


def test_incomplete_folder_names_the_missing_member(tmp_path):
    data_dir, _, _ = _cifar10(tmp_path, "python", "folder")
    (data_dir / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        load_cifar10(str(data_dir), **SPLIT)


def test_truncated_archive_is_a_clear_error(tmp_path):
    data_dir, _, _ = _cifar10(tmp_path, "python", "archive")
    archive = data_dir / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt.*data.download"):
        load_cifar10(str(data_dir), **SPLIT)


def test_archive_cut_at_a_member_boundary_is_a_clear_error(tmp_path):
    data_dir, _, _ = _cifar10(tmp_path, "binary", "archive")
    archive = data_dir / "cifar-10-binary.tar.gz"
    with tarfile.open(archive) as tar:
        cut = tar.getmember("cifar-10-batches-bin/data_batch_3.bin").offset
    archive.write_bytes(gzip.compress(gzip.decompress(archive.read_bytes())[:cut]))
    with pytest.raises(ValueError, match="lacks cifar-10-batches-bin/data_batch_3.bin"):
        load_cifar10(str(data_dir), **SPLIT)


def test_truncated_binary_batch_and_pickle_are_clear_errors(tmp_path):
    data_dir, _, _ = _cifar10(tmp_path, "binary", "folder")
    batch = data_dir / "cifar-10-batches-bin" / "data_batch_2.bin"
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"data_batch_2.bin is truncated.*3073-byte records"):
        load_cifar10(str(data_dir), **SPLIT)

    data_dir, _, _ = _cifar100(tmp_path / "py", "python", "folder")
    member = data_dir / "cifar-100-python" / "train"
    member.write_bytes(member.read_bytes()[:5000])
    with pytest.raises(ValueError, match="train is not a readable CIFAR pickle"):
        load_cifar100(str(data_dir), **SPLIT)


def test_pickles_may_only_build_arrays(tmp_path):
    data_dir, _, _ = _cifar10(tmp_path, "python", "folder")
    evil = pickle.dumps({b"data": os.getcwd}, protocol=2)  # a global outside numpy
    (data_dir / "cifar-10-batches-py" / "test_batch").write_bytes(evil)
    with pytest.raises(ValueError, match="refusing global"):
        load_cifar10(str(data_dir), **SPLIT)


def test_batch_with_wrong_shape_is_rejected(tmp_path):
    data_dir, _, _ = _cifar10(tmp_path, "python", "folder")
    bad = py2_pickle({b"batch_label": b"x", b"labels": [0, 1], b"data": np.zeros((2, 1024), np.uint8)})
    (data_dir / "cifar-10-batches-py" / "test_batch").write_bytes(bad)
    with pytest.raises(ValueError, match=r"expected data uint8 \(N, 3072\)"):
        load_cifar10(str(data_dir), **SPLIT)


def test_options_that_do_not_apply_are_rejected(tmp_path):
    data_dir, _, _ = _cifar100(tmp_path, "binary", "folder")
    with pytest.raises(ValueError, match=r"one of \['fine', 'coarse'\]"):
        load_cifar100(str(data_dir), label_mode="medium", **SPLIT)
    with pytest.raises(ValueError, match="data.label_mode does not apply to cifar10"):
        load_cifar10(str(data_dir), label_mode="coarse", **SPLIT)
    with pytest.raises(ValueError, match="data.cache does not apply to cifar100"):
        load_cifar100(str(data_dir), cache=True, **SPLIT)
    assert len(load_cifar100(str(data_dir), image_size=64, **SPLIT).test) == 10  # a decode hint: ignored
