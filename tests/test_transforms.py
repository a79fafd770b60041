"""Transforms: geometry against torchvision's rules, determinism as Grain random maps, recipes."""

import grain
import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import autoaugment as A
from jaxcnn.data import transforms as T


def photo(height=375, width=500, channels=3, seed=0):
    """A smooth, asymmetric uint8 image (gradients + noise), like a downsized photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + 2 * y) % 256], -1)
    noisy = base[..., :channels] + rng.integers(0, 20, (height, width, channels))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def rngs(n):
    return (np.random.default_rng(i) for i in range(n))


# ---------------------------------------------------------------------------------- geometry


def test_resize_exact_size_and_short_side_follow_torchvision():
    image = photo(375, 500)
    assert T.Resize((224, 224)).apply(image).shape == (224, 224, 3)
    assert T.Resize(224).apply(image).shape == (224, 298, 3)  # int(224 * 500 / 375)
    assert T.Resize(224).apply(photo(500, 375)).shape == (298, 224, 3)
    assert T.Resize(16).apply(photo(40, 30, channels=1)).shape == (21, 16, 1)


def test_resize_is_pillow_bilinear_and_skips_same_size():
    image = photo(375, 500)
    expected = np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR))
    np.testing.assert_array_equal(T.Resize((224, 224)).apply(image), expected)
    assert T.Resize((375, 500)).apply(image) is image


def test_center_crop_takes_the_middle_and_pads_small_images():
    image = photo(40, 50)
    np.testing.assert_array_equal(T.CenterCrop(20).apply(image), image[10:30, 15:35])
    padded = T.CenterCrop((24, 24)).apply(photo(20, 20))
    assert padded.shape == (24, 24, 3)
    np.testing.assert_array_equal(padded[2:22, 2:22], photo(20, 20))
    assert padded[:2].max() == 0 and padded[:, :2].max() == 0


def test_random_resized_crop_boxes_stay_in_bounds_and_in_scale():
    rrc = T.RandomResizedCrop(224, scale=(0.08, 1.0))
    height, width = 375, 500
    for rng in rngs(200):
        top, left, h, w = rrc.crop_box(height, width, rng)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # Rounding the sides moves the area by at most ~a side's length.
        assert 0.08 * height * width - (h + w) <= h * w <= height * width
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05 or (h, w) == (height, width)
    assert rrc.apply(photo(height, width), np.random.default_rng(0)).shape == (224, 224, 3)


def test_random_resized_crop_falls_back_to_a_ratio_clamped_center_crop():
    # No 0.9..1 area crop of a 10x1000 strip has an aspect ratio in [3/4, 4/3]: 10 tries fail.
    box = T.RandomResizedCrop(8, scale=(0.9, 1.0)).crop_box(10, 1000, np.random.default_rng(0))
    assert box == (0, (1000 - 13) // 2, 10, 13)  # w = round(10 * 4/3)


def test_random_crop_is_a_window_of_the_zero_padded_image():
    image = photo(32, 32)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    crop = T.RandomCrop(32, padding=4)
    seen = set()
    for rng in rngs(300):
        out = crop.apply(image, rng)
        assert out.shape == (32, 32, 3)
        windows = [(dy, dx) for dy in range(9) for dx in range(9)]
        matches = [(dy, dx) for dy, dx in windows if np.array_equal(out, padded[dy:dy + 32, dx:dx + 32])]
        assert matches
        seen.update(matches)
    assert len(seen) > 60  # positions spread over the 81 possible windows
    with pytest.raises(ValueError, match="resize the image first"):
        T.RandomCrop(40).apply(image, np.random.default_rng(0))


def test_flip_mirrors_exactly_with_probability_p():
    image = photo(20, 30)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0).apply(image, np.random.default_rng(0)), image[:, ::-1])
    assert T.RandomHorizontalFlip(0.0).apply(image, np.random.default_rng(0)) is image
    flipped = [T.RandomHorizontalFlip(0.3).apply(image, rng) is not image for rng in rngs(1000)]
    assert 0.25 < np.mean(flipped) < 0.35


def test_rotation_by_zero_is_identity_and_rotation_fills_corners_with_zero():
    image = photo(32, 32)
    np.testing.assert_array_equal(T.RandomRotation(0).apply(image, np.random.default_rng(0)), image)
    white = np.full((32, 32, 3), 255, np.uint8)
    angle = np.random.default_rng(3).uniform(-30, 30)
    assert abs(angle) > 5
    rotated = T.RandomRotation(30).apply(white, np.random.default_rng(3))
    assert rotated.shape == white.shape and rotated.dtype == np.uint8
    assert rotated[0, 0].max() == 0 and rotated[16, 16].min() == 255
    expected = np.asarray(Image.fromarray(white).rotate(angle, Image.NEAREST, fillcolor=(0, 0, 0)))
    np.testing.assert_array_equal(rotated, expected)


def test_grayscale_and_channel_adapters():
    image = photo(10, 12)
    luma = np.asarray(Image.fromarray(image).convert("L"))
    gray3 = T.Grayscale().apply(image)
    assert gray3.shape == (10, 12, 3) and all(np.array_equal(gray3[..., c], luma) for c in range(3))
    np.testing.assert_array_equal(T.Grayscale(1).apply(image)[..., 0], luma)
    np.testing.assert_array_equal(T.ToChannels(1).apply(image)[..., 0], luma)
    one = photo(10, 12, channels=1)
    assert T.ToChannels(3).apply(one).shape == (10, 12, 3)
    np.testing.assert_array_equal(T.ToChannels(3).apply(one)[..., 2], one[..., 0])
    assert T.ToChannels(1).apply(one) is one
    with pytest.raises(ValueError, match="1 or 3"):
        T.ToChannels(4)


def test_normalize_matches_torchvision_formula_on_images_and_batches():
    norm = T.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    batch = np.stack([photo(8, 8, seed=s) for s in range(3)])
    out = norm.apply(batch)
    expected = (batch / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.3])
    assert out.dtype == np.float32 and out.shape == batch.shape
    np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="std > 0"):
        T.Normalize((0.5,), (0.0,))


# ------------------------------------------------------------------------------ determinism


def augmented(transform, seed, n=6):
    records = [{"image": photo(40, 48, seed=i), "label": i} for i in range(n)]
    return grain.MapDataset.source(records).seed(seed).random_map(transform)


@pytest.mark.parametrize("transform", [
    T.RandomResizedCrop(24), T.RandomCrop(40, padding=4), T.RandomHorizontalFlip(0.5), T.RandomRotation(20),
])
def test_random_transforms_depend_only_on_seed_and_index(transform):
    first, again, other_seed = augmented(transform, 7), augmented(transform, 7), augmented(transform, 8)
    n = len(first)
    for i in range(n):
        np.testing.assert_array_equal(first[i]["image"], again[i]["image"])
    # Index i + n is the same record in the next epoch: it gets fresh randomness.
    next_epoch = [np.array_equal(first[i]["image"], first[i + n]["image"]) for i in range(n)]
    seeds = [np.array_equal(first[i]["image"], other_seed[i]["image"]) for i in range(n)]
    assert not all(next_epoch) and not all(seeds)


# ---------------------------------------------------------------------------------- recipes


def test_named_recipes_are_their_op_lists():
    assert T.parse_augment("none") == ()
    assert T.parse_augment("cifar") == T.parse_augment("crop,flip") == (("crop", 4), ("flip", None))
    assert T.parse_augment("imagenet") == (("rrc", 8), ("flip", None))
    assert T.parse_augment("cifar,rotate10") == (("crop", 4), ("flip", None), ("rotate", 10.0))
    assert T.parse_augment("crop2, flip, rotate15, gray") == (
        ("crop", 2.0), ("flip", None), ("rotate", 15.0), ("gray", None))


def test_ops_take_colon_arguments_and_the_new_ops_parse():
    assert T.parse_augment("crop:2,rotate:10") == T.parse_augment("crop2,rotate10") == (("crop", 2.0), ("rotate", 10.0))
    assert T.parse_augment("rrc:50,flip") == (("rrc", 50.0), ("flip", None))
    assert T.parse_augment("cifar,randaugment:2:9,erase:0.25") == (
        ("crop", 4), ("flip", None), ("randaugment", (2, 9)), ("erase", 0.25))
    assert T.parse_augment("RandAugment, trivialaugment, erase") == (
        ("randaugment", (2, 9)), ("trivialaugment", None), ("erase", 0.5))
    assert T.parse_augment("randaugment:3") == (("randaugment", (3, 9)),)
    assert T.parse_augment("randaugment:1:30,erase:0") == (("randaugment", (1, 30)), ("erase", 0.0))


FORMS = r"none, flip, cifar, imagenet.*crop\[:PAD\].*randaugment\[:N\[:M\]\], trivialaugment, erase\[:P\]"


@pytest.mark.parametrize("spec", [
    "cutmix", "flip,blur", "flip10", "rotate-5", "crop2.5", "rrc150", "rotate:", "crop:1:2",
    "randaugment:2:99", "randaugment:0", "randaugment:1.5", "randaugment:1:2:3", "randaugment2:9",
    "trivialaugment:3", "erase:1.5", "autoaugment",
])
def test_bad_recipes_name_the_valid_forms(spec):
    with pytest.raises(ValueError, match=FORMS):
        T.parse_augment(spec)


@pytest.mark.parametrize("spec, where", [("flip,rrc", "first"), ("erase,flip", "last"), ("erase:0.5,cifar", "last")])
def test_rrc_goes_first_and_erase_last(spec, where):
    with pytest.raises(ValueError, match=f"must be the {where} op"):
        T.parse_augment(spec)


def test_build_transforms_train_and_eval_sides():
    train = T.build_transforms("crop,flip,rotate15", train=True, image_size=32, hflip=0.3)
    assert [type(t) for t in train] == [T.Resize, T.RandomCrop, T.RandomHorizontalFlip, T.RandomRotation]
    assert train[2].p == 0.3
    assert [type(t) for t in T.build_transforms("imagenet", train=True, image_size=224)] == [
        T.RandomResizedCrop, T.RandomHorizontalFlip]
    assert T.build_transforms("imagenet", train=False, image_size=224) == [T.Resize(256), T.CenterCrop((224, 224))]
    assert T.build_transforms("flip", train=True, image_size=28, hflip=0.0) == [T.Resize((28, 28))]
    with pytest.raises(ValueError, match="probability"):
        T.build_transforms("flip", train=True, image_size=28, hflip=1.5)
    augmented = T.build_transforms("cifar,randaugment:3:5,trivialaugment,erase:0.25", train=True, image_size=32)
    assert augmented[3:] == [A.RandAugment(3, 5), A.TrivialAugmentWide(), A.RandomErasing(0.25)]
    assert T.build_transforms("randaugment,erase:0", train=True, image_size=28) == [T.Resize((28, 28)), A.RandAugment()]
    assert T.build_transforms("cifar,randaugment,erase", train=False, image_size=28) == [T.Resize((28, 28))]


@pytest.mark.parametrize("spec", ["none", "flip", "cifar", "imagenet", "rrc50,rotate10,gray,flip",
                                  "cifar,randaugment:2:9,trivialaugment"])
def test_every_recipe_gives_the_image_size_and_eval_is_not_random(spec):
    rng = np.random.default_rng(0)
    for train in (True, False):
        out = photo(375, 500)
        for t in T.build_transforms(spec, train=train, image_size=(64, 48)):
            out = t.apply(out, rng) if isinstance(t, grain.transforms.RandomMap) else t.apply(out)
        assert out.shape == (64, 48, 3)
    assert not any(isinstance(t, grain.transforms.RandomMap)
                   for t in T.build_transforms(spec, train=False, image_size=32))
