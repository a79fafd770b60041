"""RandAugment / TrivialAugmentWide / RandomErasing against torchvision's definitions, their
determinism as Grain random maps, and the Loader on the demo data with the new recipes.

The expected side is written from torchvision (v0.15+ `transforms.autoaugment` on PIL images,
`transforms.RandomErasing`), independently of `jaxcnn.data.autoaugment`: a table of plain Pillow
calls, and magnitude bins from their decimal definitions and from torch's float32 values."""

import math

import grain
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from test_transforms import photo

from jaxcnn.data import Loader, load_data
from jaxcnn.data import autoaugment as A
from jaxcnn.train import InputNormalization, prepare_inputs

# torchvision's `_augmentation_space` per op: (low, high) of the 31 bins, RandAugment then
# TrivialAugmentWide; W and H stand for the image width and height.
RANGES = {
    "ShearX": ((0, 0.3), (0, 0.99)),
    "ShearY": ((0, 0.3), (0, 0.99)),
    "TranslateX": ((0, "150/331 W"), (0, 32)),
    "TranslateY": ((0, "150/331 H"), (0, 32)),
    "Rotate": ((0, 30), (0, 135)),
    "Brightness": ((0, 0.9), (0, 0.99)),
    "Color": ((0, 0.9), (0, 0.99)),
    "Contrast": ((0, 0.9), (0, 0.99)),
    "Sharpness": ((0, 0.9), (0, 0.99)),
    "Solarize": ((255, 0), (255, 0)),
}
POSTERIZE = (  # 8 - round(b / ((31 - 1) / 4)) and 8 - round(b / ((31 - 1) / 6)), b = 0..30
    [8] * 4 + [7] * 8 + [6] * 7 + [5] * 8 + [4] * 4,
    [8] * 3 + [7] * 5 + [6] * 5 + [5] * 5 + [4] * 5 + [3] * 5 + [2] * 3,
)


def torchvision_pil(image: Image.Image, name: str, m: float) -> Image.Image:
    """torchvision's `_apply_op(img, name, m, NEAREST, fill=None)` on a PIL image, as Pillow calls."""
    fill = 0 if image.mode == "L" else (0, 0, 0)

    def affine(matrix):
        return image.transform(image.size, Image.AFFINE, matrix, Image.NEAREST, fillcolor=fill)

    table = {
        "Identity": lambda: image,
        "ShearX": lambda: affine((1, m, 0, 0, 1, 0)),  # shear=degrees(atan(m)), center (0, 0)
        "ShearY": lambda: affine((1, 0, 0, m, 1, 0)),
        "TranslateX": lambda: affine((1, 0, -int(m), 0, 1, 0)),  # translate=[int(m), 0]
        "TranslateY": lambda: affine((1, 0, 0, 0, 1, -int(m))),
        "Rotate": lambda: image.rotate(m, Image.NEAREST, expand=False, fillcolor=fill),
        "Brightness": lambda: ImageEnhance.Brightness(image).enhance(1.0 + m),
        "Color": lambda: ImageEnhance.Color(image).enhance(1.0 + m),
        "Contrast": lambda: ImageEnhance.Contrast(image).enhance(1.0 + m),
        "Sharpness": lambda: ImageEnhance.Sharpness(image).enhance(1.0 + m),
        "Posterize": lambda: ImageOps.posterize(image, int(m)),
        "Solarize": lambda: ImageOps.solarize(image, m),
        "AutoContrast": lambda: ImageOps.autocontrast(image),
        "Equalize": lambda: ImageOps.equalize(image),
    }
    return table[name]()


def expected(image: np.ndarray, ops) -> np.ndarray:
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    for name, m in ops:
        pil = torchvision_pil(pil, name, m)
    out = np.asarray(pil)
    return out[..., None] if out.ndim == 2 else out


IMAGES = {"gray28": photo(28, 28, channels=1, seed=1), "rgb32": photo(32, 32, channels=3, seed=2)}


# ---------------------------------------------------------------------------------- magnitudes


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("height, width", [(28, 28), (32, 32), (28, 40)])
def test_magnitude_bins_are_torchvisions_ranges(wide, height, width):
    bins = A.magnitude_bins(wide, 31, height, width)
    assert set(bins) == set(RANGES) | {"Posterize"}
    assert set(A.OP_NAMES) - set(bins) == {"Identity", "AutoContrast", "Equalize"}
    for name, ranges in RANGES.items():
        low, high = ranges[wide]
        high = {"150/331 W": 150 / 331 * width, "150/331 H": 150 / 331 * height}.get(high, high)
        decimal = [low + (high - low) * b / 30 for b in range(31)]
        np.testing.assert_allclose(bins[name], decimal, rtol=2e-7, atol=1e-7, err_msg=name)
        assert bins[name] == tuple(float(np.float32(v)) for v in bins[name])  # float32 values
    assert list(bins["Posterize"]) == POSTERIZE[wide]


def test_magnitude_bins_hold_torchs_float32_values():
    # torch.linspace(...)[b].item() printed by torch 2.13.0 (CPU); numpy's float32 linspace differs.
    randaugment28, randaugment32 = A.magnitude_bins(False, 31, 28, 28), A.magnitude_bins(False, 31, 32, 32)
    assert randaugment28["ShearX"][9] == 0.09000000357627869
    assert randaugment28["Brightness"][9] == 0.26999998092651367
    assert randaugment28["TranslateX"][9] == 3.8066465854644775
    assert randaugment32["TranslateY"][9] == 4.3504533767700195
    assert (randaugment28["Rotate"][9], randaugment28["Solarize"][9], randaugment28["Posterize"][9]) == (9, 178.5, 7)
    wide = A.magnitude_bins(True, 31, 32, 32)
    assert wide["Sharpness"][17] == 0.5609999895095825 and wide["TranslateX"][17] == 18.133333206176758
    assert (wide["Rotate"][17], wide["Solarize"][17], wide["Posterize"][17]) == (76.5, 110.5, 5)


def test_torch_linspace_equals_torch():
    torch = pytest.importorskip("torch")
    for start, end in [(0.0, 0.3), (0.0, 0.99), (0.0, 32.0), (255.0, 0.0), (0.0, 150 / 331 * 27)]:
        for steps in (2, 10, 31, 101):
            reference = torch.linspace(start, end, steps).numpy()
            np.testing.assert_array_equal(A.torch_linspace(start, end, steps), reference)


# ------------------------------------------------------------------------------------- the ops


def op_magnitudes(name, height, width):
    """Magnitudes to test an op at: RandAugment's bin 9 and TrivialAugmentWide's bins 13 and 30,
    both signs where torchvision signs them; 0 for the ops without a magnitude."""
    if name not in RANGES and name != "Posterize":
        return [0.0]
    values = [A.magnitude_bins(False, 31, height, width)[name][9]]
    values += [A.magnitude_bins(True, 31, height, width)[name][b] for b in (13, 30)]
    return values + [-v for v in values] if name in A.SIGNED_OPS else values


@pytest.mark.parametrize("kind", list(IMAGES))
@pytest.mark.parametrize("name", A.OP_NAMES)
def test_each_op_equals_torchvisions_pil_call_pixel_for_pixel(name, kind):
    image = IMAGES[kind]
    for m in op_magnitudes(name, *image.shape[:2]):
        out = A.apply_ops(image, [(name, m)])
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected(image, [(name, m)]), err_msg=f"{name} {m}")


def test_the_ops_change_the_image_except_identity():
    image = IMAGES["rgb32"]
    for name in A.OP_NAMES:
        changed = [not np.array_equal(A.apply_ops(image, [(name, m)]), image) for m in op_magnitudes(name, 32, 32)]
        assert all(changed) != (name == "Identity"), name
    assert A.apply_ops(image, [("Identity", 0.0)]) is image


@pytest.mark.parametrize("transform", [A.RandAugment(2, 9), A.RandAugment(4, 30), A.TrivialAugmentWide()])
def test_the_transform_applies_its_draws_in_order(transform):
    for kind, image in IMAGES.items():
        for seed in range(20):
            ops = transform.draw(*image.shape[:2], np.random.default_rng(seed))
            out = transform.apply(image, np.random.default_rng(seed))
            np.testing.assert_array_equal(out, expected(image, ops), err_msg=f"{kind} {ops}")


def test_randaugment_draws_n_ops_uniformly_at_bin_m_with_random_signs():
    transform, rng = A.RandAugment(3, 9), np.random.default_rng(0)
    bins = A.magnitude_bins(False, 31, 28, 28)
    draws = [op for _ in range(2000) for op in transform.draw(28, 28, rng)]
    names = [name for name, _ in draws]
    assert len(draws) == 6000 and set(names) == set(A.OP_NAMES)
    counts = np.array([names.count(n) for n in A.OP_NAMES])
    assert np.all(np.abs(counts / 6000 - 1 / 14) < 0.015)
    for name, m in draws:
        assert abs(m) == (bins[name][9] if name in bins else 0.0)
        assert m >= 0 or name in A.SIGNED_OPS
    negative = [m < 0 for name, m in draws if name in A.SIGNED_OPS]
    assert 0.45 < np.mean(negative) < 0.55


def test_trivialaugment_draws_one_op_at_a_uniform_bin():
    transform, rng = A.TrivialAugmentWide(), np.random.default_rng(0)
    bins = A.magnitude_bins(True, 31, 32, 32)
    draws = [transform.draw(32, 32, rng) for _ in range(3000)]
    assert all(len(d) == 1 for d in draws)
    rotations = [abs(m) for ((name, m),) in draws if name == "Rotate"]
    assert set(rotations) == set(bins["Rotate"])  # all 31 bins, 0 .. 135 degrees
    assert {name for ((name, _),) in draws} == set(A.OP_NAMES)


@pytest.mark.parametrize("make, bad", [
    (lambda: A.RandAugment(2, 31), "magnitude"), (lambda: A.RandAugment(0, 9), "num_ops"),
    (lambda: A.TrivialAugmentWide(1), "num_bins"), (lambda: A.RandomErasing(1.5), "probability"),
    (lambda: A.RandomErasing(scale=(0.5, 0.1)), "scale"),
])
def test_invalid_parameters_are_named(make, bad):
    with pytest.raises(ValueError, match=bad):
        make()


# --------------------------------------------------------------------------------- determinism


def augmented(transform, seed, n=8):
    records = [{"image": IMAGES["gray28"], "label": 0} for _ in range(n)]  # the same image everywhere
    return grain.MapDataset.source(records).seed(seed).random_map(transform)


@pytest.mark.parametrize("transform", [A.RandAugment(2, 9), A.TrivialAugmentWide()])
def test_draws_are_a_function_of_seed_and_index_and_differ_across_indices(transform):
    first, again, other_seed = augmented(transform, 3), augmented(transform, 3), augmented(transform, 4)
    n = len(first)
    images = [first[i]["image"] for i in range(2 * n)]  # index i + n: the same record next epoch
    for i in range(2 * n):
        np.testing.assert_array_equal(images[i], again[i]["image"])
    distinct = {img.tobytes() for img in images}
    assert len(distinct) > n  # indices (and epochs) get different draws of the same image
    assert not all(np.array_equal(images[i], other_seed[i]["image"]) for i in range(n))


# ------------------------------------------------------------------------------ random erasing


def test_erasing_boxes_follow_torchvisions_ranges_and_probability():
    erasing, rng = A.RandomErasing(p=0.5), np.random.default_rng(0)
    boxes = [erasing.box(28, 32, rng) for _ in range(4000)]
    drawn = [b for b in boxes if b[2] * b[3] > 0]
    assert 0.47 < len(drawn) / len(boxes) < 0.53
    for top, left, h, w in drawn:
        assert 0 <= top and top + h <= 28 and 0 <= left and left + w <= 32
        assert h < 28 and w < 32  # torchvision keeps only boxes strictly smaller than the image
        # round() moves each side by at most 1/2: the area by at most about (h + w) / 2.
        assert 0.02 * 28 * 32 - (h + w) / 2 - 0.25 <= h * w <= 0.33 * 28 * 32 + (h + w) / 2 + 0.25
        assert (h - 0.5) / (w + 0.5) <= 3.3 and (h + 0.5) / (w - 0.5) >= 0.3  # h / w in ratio
    aspects = [h / w for _, _, h, w in drawn]
    assert min(aspects) < 0.5 and max(aspects) > 2.0  # tall and wide boxes both occur
    assert all(A.RandomErasing(p=0.0).box(28, 28, rng) == (0, 0, 0, 0) for _ in range(100))


# ------------------------------------------------------------------------------------ pipeline


@pytest.fixture(scope="module")
def demo():
    return load_data("demo")


def demo_batches(demo, augment, seed=0, epoch=0, n=2):
    loader = Loader(demo.train, batch_size=32, train=True, image_size=28, mean=demo.mean, std=demo.std,
                    augment=augment, seed=seed)
    with loader:
        batches = loader.epoch(epoch)
        return [next(batches) for _ in range(n)]


@pytest.mark.parametrize("augment", ["cifar,randaugment:2:9,erase:0.25", "flip,trivialaugment", "randaugment"])
def test_loader_runs_the_new_recipes_on_the_demo_data_deterministically(demo, augment):
    batches = demo_batches(demo, augment)
    for batch in batches:
        assert batch["image"].shape == (32, 28, 28, 1) and batch["image"].dtype == np.uint8 and batch["mask"].all()
        assert ("erase" in batch) == ("erase" in augment)  # (B, 4) boxes, zeroed by the step
        assert np.isfinite(prepare_inputs(batch, InputNormalization(demo.mean, demo.std))["image"]).all()
    again, other_epoch = demo_batches(demo, augment), demo_batches(demo, augment, epoch=1)
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(batches[0]["image"], other_epoch[0]["image"])


def test_erase_zeroes_a_box_of_the_normalized_batch_and_changes_nothing_else(demo):
    plain, erased = demo_batches(demo, "flip", n=1)[0], demo_batches(demo, "flip,erase:1", n=1)[0]
    np.testing.assert_array_equal(plain["label"], erased["label"])
    np.testing.assert_array_equal(plain["image"], erased["image"])  # the uint8 images cross unerased
    boxes = erased["erase"]
    normalization = InputNormalization(demo.mean, demo.std)
    plain, erased = (np.asarray(prepare_inputs(b, normalization)["image"]) for b in (plain, erased))
    rows, cols = np.arange(28), np.arange(28)
    in_box = np.stack([((rows >= t) & (rows < t + h))[:, None] & ((cols >= l) & (cols < l + w))[None]
                       for t, l, h, w in boxes])[..., None]
    np.testing.assert_array_equal(erased, np.where(in_box, 0.0, plain))  # exactly the drawn boxes, value 0
    heights, widths = boxes[:, 2], boxes[:, 3]
    assert np.all(heights * widths > 0)  # p = 1: every image gets a box
    assert np.all(heights * widths <= math.ceil(0.33 * 28 * 28) + 28)
    assert np.all(boxes[:, 0] + heights <= 28) and np.all(boxes[:, 1] + widths <= 28)
