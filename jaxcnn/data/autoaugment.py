"""RandAugment, TrivialAugmentWide and RandomErasing with torchvision's operations and magnitudes.

The ops are torchvision's (`transforms.autoaugment._apply_op`, v0.15+) on its PIL path, as Pillow
calls on the uint8 image: interpolation NEAREST, fill 0 (torchvision's default `fill=None`).
Signed ops get a random sign (1/2 each); a magnitude `m` from bin b of 31 is:

  op            Pillow call                                      RandAugment     TrivialAugmentWide
  Identity      -                                                -               -
  ShearX        transform AFFINE (1, m, 0, 0, 1, 0)              0 .. 0.3        0 .. 0.99
  ShearY        transform AFFINE (1, 0, 0, m, 1, 0)              0 .. 0.3        0 .. 0.99
  TranslateX    transform AFFINE (1, 0, -int(m), 0, 1, 0)        0 .. 150/331 W  0 .. 32
  TranslateY    transform AFFINE (1, 0, 0, 0, 1, -int(m))        0 .. 150/331 H  0 .. 32
  Rotate        rotate(m) about the center, same size            0 .. 30 deg     0 .. 135 deg
  Brightness    ImageEnhance.Brightness.enhance(1 + m)           0 .. 0.9        0 .. 0.99
  Color         ImageEnhance.Color.enhance(1 + m)                0 .. 0.9        0 .. 0.99
  Contrast      ImageEnhance.Contrast.enhance(1 + m)             0 .. 0.9        0 .. 0.99
  Sharpness     ImageEnhance.Sharpness.enhance(1 + m)            0 .. 0.9        0 .. 0.99
  Posterize     ImageOps.posterize(int(m))  (unsigned)           8 - round(b/7.5)  8 - round(b/5)
  Solarize      ImageOps.solarize(m)        (unsigned)           255 .. 0        255 .. 0
  AutoContrast  ImageOps.autocontrast       (no magnitude)
  Equalize      ImageOps.equalize           (no magnitude)

Ranges are `torch.linspace(lo, hi, 31)` in float32, reproduced value for value (`torch_linspace`).
RandAugment(n, m) applies n ops drawn uniformly (with replacement) at the fixed bin m;
TrivialAugmentWide applies one op at a uniformly drawn bin. Identity, and Color on a gray image,
leave the image as it is. Draws come only from the generator Grain passes, so they are a pure
function of (seed, epoch, position) -- the same draws as torchvision in distribution, not in stream.

RandomErasing follows torchvision's `RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3),
value=0)`, which runs on the tensor after `Normalize`. Here it runs there too: the map draws the
box into the record, the batch carries it to the device, and the step zeroes it after normalizing
(`jaxcnn.train.inputs.prepare_inputs`). An erased pixel is therefore exactly 0 in the model's
input, the dataset mean in pixel terms, with no uint8 rounding -- identical to torchvision's
recipe `[..., ToTensor(), Normalize(m, s), RandomErasing()]`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import grain
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from jaxcnn.data.image import RandomImageMap, from_pil, to_pil

NUM_BINS = 31  # torchvision's num_magnitude_bins for RandAugment and TrivialAugmentWide
OP_NAMES = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
    "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # torchvision's augmentation space, in its order
SIGNED_OPS = frozenset(OP_NAMES[1:10])
ERASE_KEY = "erase"  # RandomErasing's (top, left, height, width): int32 (4,) in a record, (B, 4) in a batch


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """`torch.linspace(start, end, steps)` (float32 CPU) value for value.

    Written out because numpy's float32 linspace differs in the last bit for about half the
    bins, and these values feed `int()` truncation (translate) and Pillow's float factors: torch
    steps by float32 `(end - start) / (steps - 1)`, the first half up from `start`, the second
    half down from `end`, each value rounded to float32 once (checked against torch 2.13).
    """
    start32, end32 = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([start32])
    step = np.float64(np.float32((end32 - start32) / np.float32(steps - 1)))
    index = np.arange(steps)
    up = np.float64(start32) + step * index
    down = np.float64(end32) - step * (steps - 1 - index)
    return np.where(index < steps // 2, up, down).astype(np.float32)


@functools.lru_cache(maxsize=64)
def magnitude_bins(wide: bool, num_bins: int, height: int, width: int) -> dict[str, tuple[float, ...]]:
    """Each op's magnitude per bin: RandAugment's space, or TrivialAugmentWide's (`wide`).
    Ops without a magnitude (Identity, AutoContrast, Equalize) are absent."""
    shear, rotate, enhance, posterize_levels = (0.99, 135.0, 0.99, 6) if wide else (0.3, 30.0, 0.9, 4)
    translate_x, translate_y = (32.0, 32.0) if wide else (150.0 / 331.0 * width, 150.0 / 331.0 * height)
    # torch divides an int tensor by a Python float in float32, then rounds half to even.
    posterize = 8 - np.round(np.arange(num_bins, dtype=np.float32) / np.float32((num_bins - 1) / posterize_levels))
    bins = {
        "ShearX": torch_linspace(0.0, shear, num_bins),
        "ShearY": torch_linspace(0.0, shear, num_bins),
        "TranslateX": torch_linspace(0.0, translate_x, num_bins),
        "TranslateY": torch_linspace(0.0, translate_y, num_bins),
        "Rotate": torch_linspace(0.0, rotate, num_bins),
        **{name: torch_linspace(0.0, enhance, num_bins) for name in ("Brightness", "Color", "Contrast", "Sharpness")},
        "Posterize": posterize,
        "Solarize": torch_linspace(255.0, 0.0, num_bins),
    }
    return {name: tuple(float(v) for v in values) for name, values in bins.items()}


# ------------------------------------------------------------------------------------ the ops


def _affine(image: Image.Image, matrix: Sequence[float]) -> Image.Image:
    """Pillow's inverse-mapped affine (output (x, y) samples input matrix @ (x, y, 1)), nearest, fill 0."""
    fill = 0 if image.mode == "L" else (0, 0, 0)
    return image.transform(image.size, Image.AFFINE, tuple(matrix), Image.NEAREST, fillcolor=fill)


def _shear_angle(magnitude: float) -> float:
    # torchvision passes shear = degrees(atan(m)) to F.affine, which converts back to radians:
    # the round trip is kept so the matrix coefficient is bit-identical to its tan(radians(...)).
    return math.radians(math.degrees(math.atan(magnitude)))


def _shear_x(image, magnitude):
    return _affine(image, (1.0, math.tan(_shear_angle(magnitude)), 0.0, 0.0, 1.0, 0.0))


def _shear_y(image, magnitude):
    angle = _shear_angle(magnitude)  # torchvision's inverse matrix holds sin/cos here, not tan
    return _affine(image, (1.0, 0.0, 0.0, math.sin(angle) / math.cos(angle), 1.0, 0.0))


def _rotate(image, degrees):
    fill = 0 if image.mode == "L" else (0, 0, 0)
    return image.rotate(degrees, Image.NEAREST, expand=False, fillcolor=fill)


def _enhance(enhancer):
    return lambda image, magnitude: enhancer(image).enhance(1.0 + magnitude)


_OPS = {
    "Identity": lambda image, _: image,
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": lambda image, m: _affine(image, (1.0, 0.0, -int(m), 0.0, 1.0, 0.0)),
    "TranslateY": lambda image, m: _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, -int(m))),
    "Rotate": _rotate,
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "Posterize": lambda image, m: ImageOps.posterize(image, int(m)),
    "Solarize": lambda image, m: ImageOps.solarize(image, m),
    "AutoContrast": lambda image, _: ImageOps.autocontrast(image),
    "Equalize": lambda image, _: ImageOps.equalize(image),
}


def apply_ops(image: np.ndarray, ops: Sequence[tuple[str, float]]) -> np.ndarray:
    """Apply `(op name, signed magnitude)` pairs in order to a uint8 (H, W, 1 or 3) image."""
    if all(name == "Identity" for name, _ in ops):
        return image
    pil = to_pil(image)
    for name, magnitude in ops:
        pil = _OPS[name](pil, magnitude)
    return from_pil(pil)


def _signed(name: str, magnitude: float, rng: np.random.Generator) -> float:
    """torchvision negates a signed op's magnitude with probability 1/2."""
    return -magnitude if name in SIGNED_OPS and rng.integers(2) else magnitude


def _check_bins(num_bins: int) -> None:
    if not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")


@dataclasses.dataclass(frozen=True)
class RandAugment(RandomImageMap):
    """torchvision's RandAugment(num_ops, magnitude, num_magnitude_bins=31): `num_ops` ops drawn
    uniformly from the 14, each at bin `magnitude` with a random sign where signed."""

    num_ops: int = 2
    magnitude: int = 9
    num_bins: int = NUM_BINS

    def __post_init__(self):
        _check_bins(self.num_bins)
        if not isinstance(self.num_ops, (int, np.integer)) or self.num_ops < 1:
            raise ValueError(f"RandAugment num_ops must be an int >= 1, got {self.num_ops!r}")
        if not isinstance(self.magnitude, (int, np.integer)) or not 0 <= self.magnitude < self.num_bins:
            raise ValueError(
                f"RandAugment magnitude must be an int bin in [0, {self.num_bins - 1}], got {self.magnitude!r}")

    def draw(self, height: int, width: int, rng: np.random.Generator) -> tuple[tuple[str, float], ...]:
        """The (op, signed magnitude) pairs for one image of (height, width)."""
        bins = magnitude_bins(False, self.num_bins, height, width)
        ops = []
        for _ in range(self.num_ops):
            name = OP_NAMES[rng.integers(len(OP_NAMES))]
            magnitude = bins[name][self.magnitude] if name in bins else 0.0
            ops.append((name, _signed(name, magnitude, rng)))
        return tuple(ops)

    def apply(self, image, rng):
        return apply_ops(image, self.draw(*image.shape[:2], rng))


@dataclasses.dataclass(frozen=True)
class TrivialAugmentWide(RandomImageMap):
    """torchvision's TrivialAugmentWide(num_magnitude_bins=31): one op drawn uniformly from the 14,
    at a uniformly drawn bin of the wide ranges, with a random sign where signed."""

    num_bins: int = NUM_BINS

    def __post_init__(self):
        _check_bins(self.num_bins)

    def draw(self, height: int, width: int, rng: np.random.Generator) -> tuple[tuple[str, float], ...]:
        bins = magnitude_bins(True, self.num_bins, height, width)
        name = OP_NAMES[rng.integers(len(OP_NAMES))]
        magnitude = bins[name][rng.integers(self.num_bins)] if name in bins else 0.0
        return ((name, _signed(name, magnitude, rng)),)

    def apply(self, image, rng):
        return apply_ops(image, self.draw(*image.shape[:2], rng))


@dataclasses.dataclass(frozen=True)
class RandomErasing(grain.transforms.RandomMap):
    """torchvision's RandomErasing(p, scale, ratio, value=0), drawn here and applied after
    normalization: `random_map` stores the box (top, left, height, width) -- all 0 when the image
    is not erased -- under `ERASE_KEY`; the train step zeroes it in the normalized image
    (`jaxcnn.train.inputs.erase_boxes`)."""

    p: float = 0.5
    scale: tuple[float, float] = (0.02, 0.33)
    ratio: tuple[float, float] = (0.3, 3.3)

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"RandomErasing p is a probability in [0, 1], got {self.p}")
        if not (0 < self.scale[0] <= self.scale[1] <= 1 and 0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"RandomErasing needs 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], "
                             f"got scale={self.scale}, ratio={self.ratio}")

    def box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """With probability p, up to 10 tries at an area fraction in `scale` and a height/width
        ratio log-uniform in `ratio` that fits strictly inside; (0, 0, 0, 0) when none does."""
        if not rng.random() < self.p:
            return 0, 0, 0, 0
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = height * width * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < height and w < width:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        return 0, 0, 0, 0

    def random_map(self, record, rng):
        height, width = record["image"].shape[:2]
        return {**record, ERASE_KEY: np.array(self.box(height, width, rng), np.int32)}

