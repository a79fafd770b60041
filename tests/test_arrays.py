"""ArraySource (the in-memory source under CIFAR, MNIST and cached TFDS) and channel_stats."""

import numpy as np
import pytest

from jaxcnn.data.arrays import ArraySource, channel_stats, split_train

META = dict(class_names=("a", "b"), mean=(0.5,), std=(0.25,))


def test_records_and_metadata():
    images = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3, 1)
    source = ArraySource(images, [0, 1, 1, 0], **META)
    record = source[2]
    assert set(record) == {"image", "label"} and record["label"].dtype == np.int32 and int(record["label"]) == 1
    np.testing.assert_array_equal(record["image"], images[2])
    assert (len(source), source.channels, source.class_names) == (4, 1, ("a", "b"))
    splits = split_train("toy", source, None, val_split=0.5, split_seed=0, default_image_size=3,
                         default_augment="none")
    assert splits.val_is_split and splits.test is None
    assert sorted(splits.val.labels.tolist()) == [0, 1]  # one of each class


@pytest.mark.parametrize("images,labels,match", [
    (np.zeros((2, 4, 4, 1), np.float32), [0, 1], "uint8"),
    (np.zeros((2, 4, 4), np.uint8), [0, 1], r"\(N, H, W, C\)"),
    (np.zeros((2, 4, 4, 1), np.uint8), [0], "2 images but labels"),
    (np.zeros((2, 4, 4, 1), np.uint8), [0, 2], "2 class names"),
])
def test_bad_arrays_are_rejected(images, labels, match):
    with pytest.raises(ValueError, match=match):
        ArraySource(images, labels, **META)


def test_channel_stats_are_exact_and_blockwise():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 5, 5, 3), dtype=np.uint8)
    mean, std = channel_stats([images[:3], images[3:]])
    pixels = images.reshape(-1, 3) / 255
    np.testing.assert_allclose(mean, pixels.mean(0), atol=5e-5)
    np.testing.assert_allclose(std, pixels.std(0), atol=5e-5)
    assert channel_stats([np.full((2, 2, 1), 7, np.uint8)])[1] == (round(1 / 255, 4),)  # floored
