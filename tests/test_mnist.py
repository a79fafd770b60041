"""MNIST / Fashion-MNIST: the real Debian Fashion-MNIST files where installed, idx fixtures always."""

import dataclasses
import gzip
import os

import numpy as np
import pytest
from archive_fixtures import idx_bytes, write_idx_set

from jaxcnn.data import mnist
from jaxcnn.data.arrays import PUBLISHED_STATS, channel_stats
from jaxcnn.data.mnist import load_fashion_mnist, load_mnist, read_idx
from jaxcnn.data.presets import load_data
from jaxcnn.data.splits import DataNotFoundError

SPLIT = dict(val_split=0.2, split_seed=0)
DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION), reason="apt install dataset-fashion-mnist")
def test_real_fashion_mnist_found_automatically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data/fashion_mnist: without a data.dir the Debian copy is found
    splits = load_data("fashion_mnist", None, val_split=0.2, split_seed=42)
    train, test = splits.train.source, splits.test
    assert (len(train), len(test)) == (60000, 10000)
    assert (len(splits.train), len(splits.val)) == (48000, 12000)
    assert splits.class_names == FASHION_NAMES and splits.channels == 1 and splits.default_image_size == 28
    assert train.images.shape == (60000, 28, 28, 1) and test[0]["image"].dtype == np.uint8
    # Known labels: train starts 9 0 0 (Ankle boot, T-shirt, T-shirt) and ends 3 0 5; test starts 9.
    assert train.labels[:3].tolist() == [9, 0, 0] and train.labels[-3:].tolist() == [3, 0, 5]
    assert int(test[0]["label"]) == 9
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(splits.val.labels).tolist() == [1200] * 10  # stratified
    assert np.bincount(test.labels).tolist() == [1000] * 10
    # The published statistics are those of the real training images.
    mean, std = channel_stats(train.images[i:i + 10000] for i in range(0, 60000, 10000))
    np.testing.assert_allclose(mean + std, splits.mean + splits.std, atol=1e-4)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_from_idx_files(tmp_path, gz, layout):
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    arrays = write_idx_set(folder, gz=gz)
    splits = load_mnist(str(tmp_path), **SPLIT)
    assert splits.class_names == tuple("0123456789") and splits.channels == 1
    assert (splits.mean, splits.std) == PUBLISHED_STATS["mnist"] and splits.default_augment == "none"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 10)
    np.testing.assert_array_equal(splits.train.source.images[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.train.source.labels, arrays["train-labels-idx1-ubyte"])
    record = splits.test[7]
    assert record["image"].shape == (28, 28, 1) and int(record["label"]) == 7
    np.testing.assert_array_equal(record["image"][..., 0], arrays["t10k-images-idx3-ubyte"][7])


def test_fashion_mnist_prefers_data_dir_over_the_system_copy(tmp_path):
    write_idx_set(tmp_path, train_n=20, test_n=10)
    splits = load_fashion_mnist(str(tmp_path), **SPLIT)
    assert len(splits.train.source) == 20 and splits.class_names == FASHION_NAMES
    assert splits.default_augment == "flip"


def test_missing_files_name_folders_files_and_download(tmp_path, monkeypatch):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError) as error:  # a given data.dir: only it is read, and named
        load_mnist(str(tmp_path), **SPLIT)
    message = str(error.value)
    for text in ("t10k-labels-idx1-ubyte[.gz]", str(tmp_path), "data.download"):
        assert text in message
    monkeypatch.chdir(tmp_path)  # holds no data/ folder
    with pytest.raises(DataNotFoundError) as error:  # no data.dir: every folder searched is named
        load_mnist(None, **SPLIT)
    for text in (os.path.join("data", "mnist"), os.path.join("data", "mnist", "MNIST", "raw"), "data.download"):
        assert text in str(error.value)
    monkeypatch.setattr(mnist, "FASHION_MNIST", dataclasses.replace(mnist.FASHION_MNIST, system_dirs=()))
    with pytest.raises(DataNotFoundError, match="apt install dataset-fashion-mnist"):
        load_fashion_mnist(None, **SPLIT)


def test_idx_validation(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    good = tmp_path / "good-idx3-ubyte"
    good.write_bytes(idx_bytes(images))
    np.testing.assert_array_equal(read_idx(str(good), (3, 28, 28)), images)

    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(idx_bytes(images)[:-10])
    with pytest.raises(ValueError, match=r"truncated.*promises \(3, 28, 28\)"):
        read_idx(str(truncated), (3, 28, 28))
    with pytest.raises(ValueError, match="magic number is 00000803, expected 00000801"):
        read_idx(str(good), (3,))  # an image file where labels are expected
    cut_gz = tmp_path / "cut-idx3-ubyte.gz"
    cut_gz.write_bytes(gzip.compress(idx_bytes(images))[:-20])
    with pytest.raises(ValueError, match="truncated or corrupt gzip"):
        read_idx(str(cut_gz), (3, 28, 28))
    empty = tmp_path / "empty-idx1-ubyte"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="magic number is missing"):
        read_idx(str(empty), (3,))


def test_image_and_label_counts_must_agree(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(39, np.uint8)))
    with pytest.raises(ValueError, match="40 images but train-labels-idx1-ubyte has 39 labels"):
        load_mnist(str(tmp_path), **SPLIT)


def test_options_that_do_not_apply_are_rejected(tmp_path):
    write_idx_set(tmp_path)
    with pytest.raises(ValueError, match="data.label_mode does not apply to mnist"):
        load_mnist(str(tmp_path), label_mode="coarse", **SPLIT)
    with pytest.raises(ValueError, match="data.cache does not apply to fashion_mnist"):
        load_fashion_mnist(str(tmp_path), cache=True, **SPLIT)
