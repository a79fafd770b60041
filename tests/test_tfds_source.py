"""`--data tfds:NAME` on a real array_record dataset prepared here (PIL encodes its PNGs, so
preparing this one needs no TensorFlow). Skipped where tensorflow-datasets is not installed."""

import sys

import numpy as np
import pytest

from jaxcnn.data.arrays import ArraySource
from jaxcnn.data.presets import load_data
from jaxcnn.data.splits import DataNotFoundError
from jaxcnn.data.tfds_source import load_tfds

SPLIT = dict(val_split=0.25, split_seed=0)


def test_missing_tfds_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes `import` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "jaxcnn\[tfds\]"'):
        load_tfds("cifar10", None, **SPLIT)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """tiny_shapes: train 12 / test 5 8x8 RGB images with a 3-class `label` and 2-class `coarse_label`."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from PIL import Image

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(names=["circle", "square", "star"]),
                "coarse_label": tfds.features.ClassLabel(names=["round", "pointy"]),
            }))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12, 0), "test": self._generate_examples(5, 1)}

        def _generate_examples(self, n, seed):
            for i, image in enumerate(images(n, seed)):
                yield i, {"image": Image.fromarray(image), "label": i % 3, "coarse_label": int(i % 3 > 0)}

    data_dir = tmp_path_factory.mktemp("tfds")
    TinyShapes(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return str(data_dir)


def images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def examples(pairs):
    """(image bytes, label) pairs in a canonical order: TFDS shuffles records when preparing."""
    return sorted((np.asarray(image).tobytes(), int(label)) for image, label in pairs)


def test_prepared_dataset_read_lazily(prepared):
    splits = load_data("tfds:tiny_shapes", prepared, **SPLIT)
    assert splits.name == "tfds:tiny_shapes" and splits.class_names == ("circle", "square", "star")
    assert splits.channels == 3 and splits.default_image_size == 8 and splits.val_is_split
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 5)
    assert np.bincount(splits.val.labels).tolist() == [1, 1, 1]  # stratified
    assert splits.test[4]["image"].dtype == np.uint8 and splits.test[4]["label"].dtype == np.int32
    records = [splits.test[i] for i in range(5)]  # PNG round trip is lossless
    assert examples((r["image"], r["label"]) for r in records) == examples(zip(images(5, 1), np.arange(5) % 3))
    expected_mean = images(12, 0).reshape(-1, 3).mean(0) / 255  # stats from the train split
    np.testing.assert_allclose(splits.mean, expected_mean, atol=1e-4)


def test_cache_and_label_mode(prepared):
    lazy = load_tfds("tiny_shapes", prepared, label_mode="coarse", **SPLIT)
    cached = load_tfds("tiny_shapes", prepared, label_mode="coarse", cache=True, **SPLIT)
    assert cached.class_names == ("round", "pointy") and isinstance(cached.test, ArraySource)
    coarse = [0, 1, 1, 0, 1]
    assert examples(zip(cached.test.images, cached.test.labels)) == examples(zip(images(5, 1), coarse))
    lazy_test = [lazy.test[i] for i in range(5)]
    np.testing.assert_array_equal(cached.test.images, [r["image"] for r in lazy_test])
    np.testing.assert_array_equal(cached.val.indices, lazy.val.indices)


def test_unusable_requests_are_clear(prepared):
    with pytest.raises(ValueError, match="one of \\['label', 'coarse_label'\\]"):
        load_tfds("tiny_shapes", prepared, label_mode="fine", **SPLIT)
    with pytest.raises(ValueError, match="preparing a TFDS dataset needs TensorFlow"):
        load_tfds("tiny_shapes", prepared, download=True, **SPLIT)
    with pytest.raises(DataNotFoundError, match="not prepared.*tfds build mnist --file_format=array_record"):
        load_tfds("mnist", prepared, **SPLIT)
    with pytest.raises(DataNotFoundError, match="no dataset 'no_such_set'"):
        load_tfds("no_such_set", prepared, **SPLIT)
