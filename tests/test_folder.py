"""Image-folder sources and the folder datasets (PATH, catdog, demo) on folders written with Pillow."""

import logging
import glob
import os
import pickle

import grain
import numpy as np
import pytest
from absl import flags
from PIL import Image

from jaxcnn.data import folder
from jaxcnn.data.folder import ImageFolderSource, demo_classes, load_catdog, load_demo, load_image_folder
from jaxcnn.data.mnist import FASHION_MNIST as FASHION_MNIST_DATASET
from jaxcnn.data.presets import load_data
from jaxcnn.data.splits import DataNotFoundError

SPLIT = dict(val_split=0.2, split_seed=42)
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = FASHION_MNIST_DATASET.class_names


def write_images(class_dir, count, *, size=(12, 10), mode="RGB", ext="png", start=0):
    """`count` distinct images: image k is filled with the value start + k (gray) or (k, 2k, 3k)."""
    class_dir.mkdir(parents=True, exist_ok=True)
    for k in range(start, start + count):
        fill = k % 256 if mode == "L" else (k % 256, 2 * k % 256, 3 * k % 256)
        Image.new(mode, size, fill).save(class_dir / f"img{k:03d}.{ext}")


def write_folder(root, counts, **kwargs):
    for name, count in counts.items():
        write_images(root / name, count, **kwargs)
    return root


def truncated_jpeg(path):
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    path.write_bytes(path.read_bytes()[:700])


def test_flat_folder_sorted_classes_and_stratified_seeded_split(tmp_path):
    write_folder(tmp_path, {"dog": 10, "cat": 20, "bird": 5})
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    (tmp_path / "cat" / "notes.txt").write_text("ignored: not an image extension")
    data = load_image_folder(tmp_path, **SPLIT)
    assert data.class_names == ("bird", "cat", "dog") and data.num_classes == 3
    assert data.val_is_split and data.test is None and data.channels == 3
    assert np.bincount(data.val.labels).tolist() == [1, 4, 2]  # round(n * 0.2) of each class
    assert np.bincount(data.train.labels).tolist() == [4, 16, 8]
    assert not set(data.train.indices) & set(data.val.indices)
    again = load_image_folder(tmp_path, **SPLIT)
    other = load_image_folder(tmp_path, val_split=0.2, split_seed=7)
    assert np.array_equal(again.val.indices, data.val.indices)
    assert not np.array_equal(other.val.indices, data.val.indices)
    source = data.train.source
    for i in range(len(source)):  # each label is its folder's
        assert source.class_names[source.labels[i]] in source.paths[i]


def test_train_val_test_layout_and_records(tmp_path):
    for split, n in (("train", 6), ("validation", 3), ("test", 2)):
        write_folder(tmp_path / split, {"a": n, "b": n}, size=(40, 30), ext="JPG")
    data = load_image_folder(tmp_path, image_size=16, **SPLIT)
    assert not data.val_is_split
    assert (len(data.train), len(data.val), len(data.test)) == (12, 6, 4)
    record = data.test[3]
    assert record["image"].shape == (16, 16, 3) and record["image"].dtype == np.uint8
    assert record["label"].dtype == np.int32 and int(record["label"]) == 1
    assert data.val.mean == data.test.mean == data.train.mean  # statistics of the training images
    assert data.default_image_size == 16 and data.default_augment == "flip"


def test_default_size_channels_and_statistics_come_from_the_training_part(tmp_path):
    write_folder(tmp_path, {"x": 10, "y": 10}, size=(28, 30), mode="L")
    data = load_image_folder(tmp_path, **SPLIT)
    assert data.channels == 1 and data.default_image_size == 28
    pixels = np.stack([data.train[i]["image"] for i in range(len(data.train))]) / 255.0
    assert pixels.shape[1:] == (28, 28, 1)
    np.testing.assert_allclose(data.mean, [pixels.mean()], atol=1e-4)
    np.testing.assert_allclose(data.std, [pixels.std()], atol=1e-4)
    write_images(tmp_path / "y", 1, start=50)  # one colour image makes the folder RGB
    assert load_image_folder(tmp_path, **SPLIT).channels == 3


def test_unreadable_files_are_skipped_counted_and_listed(tmp_path):
    write_folder(tmp_path, {"cat": 4, "dog": 4})
    (tmp_path / "cat" / "empty.jpg").write_bytes(b"")
    (tmp_path / "dog" / "text.png").write_text("hello")
    truncated_jpeg(tmp_path / "dog" / "cut.jpg")
    source = ImageFolderSource(tmp_path, image_size=8)
    assert len(source) == 9  # empty and non-image dropped at indexing; the truncated one passes the header check
    assert source.skipped_files() == [
        (str(tmp_path / "cat" / "empty.jpg"), "empty file"),
        (str(tmp_path / "dog" / "text.png"), "not an image: Pillow cannot identify it"),
    ]
    cut = source.paths.index(str(tmp_path / "dog" / "cut.jpg"))
    assert source[cut] is None and source[cut] is None  # found when read, logged once
    skipped = dict(source.skipped_files())
    assert len(skipped) == 3 and skipped[str(tmp_path / "dog" / "cut.jpg")].startswith("truncated image")
    data = load_image_folder(tmp_path, image_size=8, **SPLIT)
    records = [data.train[i] for i in range(len(data.train))] + [data.val[i] for i in range(len(data.val))]
    assert sum(r is None for r in records) == 1
    assert dict(data.skipped_files()) == skipped  # all splits, each file once


def test_read_time_skips_in_grain_worker_processes_reach_the_main_process(tmp_path):
    write_folder(tmp_path, {"a": 3, "b": 3})
    truncated_jpeg(tmp_path / "b" / "cut.jpg")
    source = ImageFolderSource(tmp_path, image_size=8)
    copy = pickle.loads(pickle.dumps(source))  # what a worker gets
    assert copy[source.paths.index(str(tmp_path / "b" / "cut.jpg"))] is None
    assert [p for p, _ in source.skipped_files()] == [str(tmp_path / "b" / "cut.jpg")]
    source = ImageFolderSource(tmp_path, image_size=8)
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    dataset = grain.MapDataset.source(source).map(lambda r: r).to_iter_dataset()
    records = list(dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=1)))
    assert len(records) == 6  # the None record is dropped by the iterator
    assert not source._known_bad  # this process never read it...
    assert [p for p, _ in source.skipped_files()] == [str(tmp_path / "b" / "cut.jpg")]  # ...a worker did


def test_empty_or_unreadable_class_folder_is_an_error_naming_it(tmp_path):
    write_folder(tmp_path, {"cat": 2})
    (tmp_path / "dog").mkdir()
    with pytest.raises(ValueError, match=r"dog.* is empty"):
        load_image_folder(tmp_path, **SPLIT)
    (tmp_path / "dog" / "broken.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"dog.* has no readable image"):
        load_image_folder(tmp_path, **SPLIT)


def test_bad_layouts_and_options_get_clear_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="PATH/train/<class>/<image>"):
        load_image_folder(tmp_path / "nowhere", **SPLIT)
    with pytest.raises(ValueError, match="No class folders"):
        load_image_folder(tmp_path, **SPLIT)
    write_folder(tmp_path / "train", {"a": 2, "b": 2})
    write_folder(tmp_path / "val", {"a": 1, "c": 1})
    with pytest.raises(ValueError, match=r"class folders \['c'\] that the training folder lacks"):
        load_image_folder(tmp_path, **SPLIT)
    with pytest.raises(ValueError, match="data.download does not apply"):
        load_image_folder(tmp_path, download=True, **SPLIT)
    with pytest.raises(ValueError, match="data.label_mode applies to cifar100 only"):
        load_catdog(tmp_path, label_mode="coarse", **SPLIT)
    with pytest.raises(ValueError, match="data.dir does not apply to demo"):
        load_demo(str(tmp_path), **SPLIT)


@pytest.mark.parametrize("nested", [True, False])
def test_catdog_kaggle_layouts(tmp_path, nested):
    twice = lambda name: tmp_path / name / name if nested else tmp_path / name  # noqa: E731
    write_folder(twice("training_set"), {"cats": 5, "dogs": 5}, size=(50, 37), ext="jpg")
    write_folder(twice("test_set"), {"cats": 2, "dogs": 2}, size=(50, 37), ext="jpg")
    (twice("training_set") / "cats" / "_DS_Store").write_bytes(b"\0\0\0\1Bud1")  # as in the Kaggle zip
    data = load_data("catdog", str(tmp_path), **SPLIT)
    assert data.name == "catdog" and data.class_names == ("cats", "dogs")
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 4)
    assert data.default_image_size == 224 and data.train[0]["image"].shape == (224, 224, 3)


def test_missing_catdog_shows_the_layout_and_where_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_catdog(tmp_path / "catdog", **SPLIT)
    message = str(info.value)
    assert "training_set/training_set/cats/*.jpg" in message and "test_set/test_set/dogs" in message
    assert "https://www.kaggle.com/datasets/tongpython/cat-and-dog" in message


def test_cache_holds_the_same_records_and_says_its_size(tmp_path, caplog, monkeypatch):
    write_folder(tmp_path, {"a": 4, "b": 4}, size=(20, 20))
    truncated_jpeg(tmp_path / "b" / "cut.jpg")
    plain = ImageFolderSource(tmp_path, image_size=10)
    caplog.set_level(logging.INFO, logger="jaxcnn")
    cached = ImageFolderSource(tmp_path, image_size=10, cache=True)
    out = caplog.text  # the estimate comes before decoding finds the truncated file
    assert "9 images of 10x10x3 uint8" in out and "decoded 8 images" in out
    assert len(cached) == 8 and [p for p, _ in cached.skipped_files()] == [str(tmp_path / "b" / "cut.jpg")]
    for i in range(8):
        j = plain.paths.index(cached.paths[i])
        np.testing.assert_array_equal(cached[i]["image"], plain[j]["image"])
        assert cached[i]["label"] == plain[j]["label"]
    monkeypatch.setattr(folder, "available_memory", lambda: 1000)
    with pytest.raises(ValueError, match="data.cache needs 0.00 GiB .* only 0.00 GiB"):
        ImageFolderSource(tmp_path, image_size=10, cache=True)


def test_demo_dataset_ships_fashion_mnist(tmp_path):
    data = load_data("demo", **SPLIT)
    assert data.class_names == FASHION_MNIST_CLASSES  # from classes.txt, as --data fashion_mnist names them
    assert data.train.class_names == data.test.class_names == FASHION_MNIST_CLASSES
    assert data.channels == 1 and data.default_image_size == 28
    assert (len(data.train), len(data.val), len(data.test)) == (1200, 300, 400)
    assert np.bincount(data.val.labels).tolist() == [30] * 10
    assert np.bincount(data.test.labels).tolist() == [40] * 10
    assert data.test[0]["image"].shape == (28, 28, 1)
    assert 0.25 < data.mean[0] < 0.32 and 0.32 < data.std[0] < 0.38  # Fashion-MNIST: 0.286, 0.353
    assert data.skipped_files() == []
    assert sum(os.path.getsize(p) for p in glob.glob(os.path.join(folder.DEMO_ROOT, "*", "*", "*"))) < 1_500_000


def test_demo_classes_file_maps_each_folder_to_its_fashion_mnist_name():
    from scripts.make_demo_dataset import CLASS_FOLDERS

    folders, names = demo_classes()
    assert folders == CLASS_FOLDERS == tuple(sorted(os.listdir(os.path.join(folder.DEMO_ROOT, "train"))))
    assert names == FASHION_MNIST_CLASSES and names[0] == "T-shirt/top"


def test_class_names_other_than_the_folders_name_every_split(tmp_path):
    write_folder(tmp_path / "train", {"a_tee": 3, "b_bag": 3}, mode="L")
    write_folder(tmp_path / "test", {"a_tee": 1, "b_bag": 1}, mode="L")
    classes = (("a_tee", "b_bag"), ("T-shirt/top", "Bag"))
    data = folder.folder_splits("x", tmp_path / "train", None, tmp_path / "test", val_split=0.34, split_seed=0,
                                image_size=None, cache=True, classes=classes)
    assert data.class_names == data.val.class_names == data.test.class_names == ("T-shirt/top", "Bag")
    assert data.test.folders == ("a_tee", "b_bag") and len(data.test) == 2 and len(data.train) == 4
    with pytest.raises(ValueError, match="1 class names for the 2 class folders"):
        ImageFolderSource(tmp_path / "train", names=("one",))


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="Debian's dataset-fashion-mnist is not installed")
def test_demo_images_are_the_fashion_mnist_images_their_names_say():
    from scripts.make_demo_dataset import read_idx

    images = read_idx(os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(FASHION_MNIST, "t10k-labels-idx1-ubyte.gz"))
    test = load_demo(None, **SPLIT).test
    for path, label, i in zip(test.paths, test.labels, range(len(test))):
        index = int(os.path.basename(path)[len("test_"):-len(".png")])
        assert labels[index] == label
        np.testing.assert_array_equal(test[i]["image"][..., 0], images[index])
