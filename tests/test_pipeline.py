"""Loader: batch format, epoch order, drop/pad/mask, None records, determinism across workers."""

import itertools

import numpy as np
import pytest

from jaxcnn.data.arrays import ArraySource
from jaxcnn.data.pipeline import Loader


class Records:
    """A folder-like source: RGB images of varying sizes whose pixels all equal their index,
    label = index; the indices in `unreadable` read as None (a file found bad when read)."""

    channels = 3
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, n, unreadable=()):
        self.n, self.unreadable = n, set(unreadable)
        self.class_names = tuple(str(i) for i in range(n))

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index in self.unreadable:
            return None
        shape = (20 + index % 7, 24 + index % 5, 3)
        return {"image": np.full(shape, index, np.uint8), "label": np.int32(index)}


def loader(source, **overrides):
    options = dict(batch_size=8, train=True, image_size=16, mean=source.mean, std=source.std, seed=0)
    return Loader(source, **(options | overrides))


def labels_of(batches, valid_only=True):
    return [int(y) for b in batches for y, m in zip(b["label"], b["mask"]) if m or not valid_only]


def test_batches_are_uint8_nhwc_with_int32_labels_a_mask_and_the_statistics_beside():
    evaluation = loader(Records(20), train=False)
    batch = next(evaluation.epoch(0))
    assert set(batch) == {"image", "label", "mask"}  # no "erase" without the erase op
    assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["mask"].dtype == np.float32
    # Every pixel of record i equals i: the images cross unnormalized, the statistics stay on the loader.
    np.testing.assert_array_equal(batch["image"], np.broadcast_to(batch["label"][:, None, None, None], (8, 16, 16, 3)))
    assert evaluation.normalize.mean == (0.5,) * 3 and evaluation.normalize.std == (0.25,) * 3


def test_train_shuffles_each_epoch_reproducibly_and_drops_the_remainder():
    train = loader(Records(30))
    assert len(train) == 3 and train.num_examples == 30
    epochs = [list(train.epoch(e)) for e in range(3)]
    orders = [labels_of(batches) for batches in epochs]
    for batches, order in zip(epochs, orders):
        assert len(batches) == 3 and all(b["mask"].all() for b in batches)
        assert len(order) == 24 and len(set(order)) == 24 and set(order) <= set(range(30))
    assert len({tuple(order) for order in orders}) == 3  # a new order every epoch
    assert labels_of(loader(Records(30)).epoch(1)) == orders[1]  # and the same for the same seed
    assert labels_of(loader(Records(30), seed=1).epoch(1)) != orders[1]


def test_eval_keeps_order_and_pads_the_last_batch_with_mask_zero():
    evaluation = loader(Records(21), train=False, augment="cifar")
    batches = list(evaluation.epoch(0))
    assert len(evaluation) == len(batches) == 3
    assert labels_of(batches) == list(range(21))  # every example exactly once, in order
    assert batches[-1]["mask"].tolist() == [1.0] * 5 + [0.0] * 3
    assert batches[-1]["image"][5:].std() == 0  # padding is one constant (zero) image
    assert labels_of(list(evaluation.epoch(5))) == list(range(21))


def test_unreadable_records_are_masked_out_and_lengths_stay_exact():
    bad = {2, 7, 20}
    evaluation = loader(Records(21, unreadable=bad), train=False)
    batches = list(evaluation.epoch(0))
    assert len(batches) == len(evaluation) == 3
    assert labels_of(batches) == [i for i in range(21) if i not in bad]
    assert sum(b["mask"].sum() for b in batches) == 18

    train = loader(Records(40, unreadable=bad))  # 5 full batches: every record is drawn each epoch
    for epoch in range(3):
        batches = list(train.epoch(epoch))
        assert len(batches) == len(train) == 5 and all(b["image"].shape[0] == 8 for b in batches)
        order = labels_of(batches)
        assert sorted(order) == sorted(set(range(40)) - bad)
        assert sum((b["mask"] == 0).sum() for b in batches) == len(bad)


def test_augmentation_depends_on_seed_epoch_and_position_only():
    source = ArraySource(
        np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), np.arange(24) % 3,
        class_names=["a", "b", "c"], mean=(0.5,) * 3, std=(0.25,) * 3,
    )
    first = [b["image"] for b in loader(source, augment="cifar,rotate10").epoch(2)]
    again = [b["image"] for b in loader(source, augment="cifar,rotate10").epoch(2)]
    plain = [b["image"] for b in loader(source, augment="none").epoch(2)]
    for a, b, c in zip(first, again, plain):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_reading_epochs_out_of_order_or_partly_gives_the_same_batches():
    fresh = [labels_of(loader(Records(40)).epoch(e)) for e in (0, 1, 2)]
    reused = loader(Records(40))
    next(reused.epoch(1))  # abandon an epoch after one batch
    assert labels_of(reused.epoch(2)) == fresh[2]
    assert labels_of(reused.epoch(0)) == fresh[0]
    assert labels_of(reused.epoch(1)) == fresh[1]


def test_channels_adapt_to_the_model_with_matching_statistics():
    gray = ArraySource(np.full((10, 8, 8, 1), 51, np.uint8), np.zeros(10, int), class_names=["x"], mean=(0.2,),
                       std=(0.5,))
    to_rgb = loader(gray, train=False, channels=3)
    batch = next(to_rgb.epoch(0))
    assert batch["image"].shape == (8, 16, 16, 3)
    np.testing.assert_allclose(to_rgb.normalize.apply(batch["image"]), 0.0, atol=1e-6)  # 51/255 = 0.2 = the mean
    rgb = ArraySource(np.full((10, 8, 8, 3), 51, np.uint8), np.zeros(10, int), class_names=["x"], mean=(0.2,) * 3,
                      std=(0.5,) * 3)
    to_gray = loader(rgb, train=False, channels=1, mean=rgb.mean, std=rgb.std)
    batch = next(to_gray.epoch(0))
    assert batch["image"].shape == (8, 16, 16, 1)
    np.testing.assert_allclose(to_gray.normalize.apply(batch["image"]), 0.0, atol=1e-2)  # luma of gray 51 is 51


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=64), "fewer than one batch"),
    (dict(image_size=(16,)), "image size"),
    (dict(augment="mixup"), "none, flip, cifar, imagenet"),
    (dict(mean=(0.1, 0.2)), "mean has 2 values"),
    (dict(workers=-1), "workers"),
])
def test_bad_arguments_say_what_is_expected(overrides, message):
    with pytest.raises(ValueError, match=message):
        loader(Records(30), **overrides)
    with pytest.raises(ValueError, match="epoch"):
        loader(Records(30)).epoch(-1)


def test_worker_processes_give_the_in_process_batches():
    source = ArraySource(
        np.random.default_rng(0).integers(0, 256, (72, 24, 24, 3), dtype=np.uint8), np.arange(72) % 4,
        class_names=list("abcd"), mean=(0.5,) * 3, std=(0.25,) * 3,
    )
    def run(workers):
        with loader(source, augment="cifar", workers=workers) as ld:
            # Copies: worker batches live in shared memory that is freed with them.
            return [{k: np.array(v) for k, v in b.items()} for b in itertools.chain(ld.epoch(0), ld.epoch(1))]

    in_process, two_workers = run(0), run(2)
    assert len(in_process) == len(two_workers) == 18
    for a, b in zip(in_process, two_workers):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
