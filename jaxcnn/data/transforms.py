"""Image transforms as Grain maps, and the `--augment` recipes built from them.

Every transform maps a record `{"image": uint8 (H, W, C), "label": ...}` to a record whose image
is transformed; random ones are `grain.transforms.RandomMap`s, so Grain hands them a generator
seeded from the pipeline seed and the element's index (the pipeline makes that index unique per
epoch). `RandomCrop` and `RandomHorizontalFlip` are also *planned*: the pipeline hands them their
row of the epoch's draws instead (`apply_drawn`, `jaxcnn.data.plan`), which the device-resident
pipeline applies the same way. Geometry follows torchvision's PIL path exactly: resizing is Pillow bilinear, which
antialiases when it shrinks, as `torchvision.transforms.Resize` does on PIL images.

Recipes (`--augment`); `image_size` is the model's input size S (or (h, w)):

  none      train: resize to S.                        eval: resize to S.
  flip      train: resize to S, horizontal flip (p = hflip).
  cifar     train: resize to S, pad 4 with zeros and random crop S (the CIFAR ResNet recipe),
            horizontal flip.                           eval: resize to S.
  imagenet  train: RandomResizedCrop(S, scale=(0.08, 1), ratio=(3/4, 4/3)), horizontal flip.
            eval: resize the short side to floor(S / 0.875) (256 for 224), center crop S.

A comma list of ops is a recipe too, applied in order after the resize to S, e.g.
`crop,flip,rotate15` or `cifar,randaugment:2:9,erase:0.25`. Arguments follow the op after
colons (`rotate:10`); an op of one argument may also end in it (`rotate10`). Defaults in ():

  flip                  horizontal flip with probability hflip
  crop[:PAD]            pad PAD pixels of zeros on every side (4), random crop back to S
  rrc[:MIN_AREA]        RandomResizedCrop to S with minimum area MIN_AREA % (8); replaces the
                        resize, so it must come first, and then evaluation is `imagenet`'s
  rotate[:DEG]          random rotation in [-DEG, DEG] degrees (15), nearest neighbour, zero fill
  gray                  grayscale (ITU-R 601-2 luma), keeping the channel count
  randaugment[:N[:M]]   torchvision's RandAugment: N ops (2) at magnitude bin M of 0..30 (9)
  trivialaugment        torchvision's TrivialAugmentWide
  erase[:P]             torchvision's RandomErasing with probability P (0.5), value 0 after
                        normalization; it must come last (`jaxcnn.data.autoaugment`)

So `flip` = "flip", `cifar` = "crop,flip", `imagenet` = "rrc,flip", and a recipe name inside a
list stands for its ops (`cifar,rotate10` = "crop,flip,rotate10"). Evaluation never randomises.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable

import numpy as np
from PIL import Image

from jaxcnn.data.autoaugment import NUM_BINS, RandAugment, RandomErasing, TrivialAugmentWide
from jaxcnn.data.image import ImageMap, RandomImageMap, from_pil, to_pil
from jaxcnn.data.splits import DataError

Size = tuple[int, int]  # (height, width)


def as_size(size: int | Size) -> Size:
    """`S` -> (S, S); (h, w) unchanged; anything else is a ValueError."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in pair):
        raise ValueError(f"image size must be a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def _luma(image: np.ndarray) -> np.ndarray:
    """RGB -> (H, W, 1) luma with Pillow's ITU-R 601-2 weights (torchvision's PIL Grayscale)."""
    return image if image.shape[-1] == 1 else from_pil(to_pil(image).convert("L"))


@dataclasses.dataclass(frozen=True)
class Resize(ImageMap):
    """Resize to (h, w), or the short side to `size` keeping the aspect ratio (torchvision rule)."""

    size: int | Size
    resample: int = Image.BILINEAR

    def output_size(self, height: int, width: int) -> Size:
        if not isinstance(self.size, (int, np.integer)):
            return as_size(self.size)
        short, long = sorted((height, width))
        new_long = int(self.size * long / short)
        return (self.size, new_long) if height <= width else (new_long, self.size)

    def apply(self, image):
        height, width = self.output_size(*image.shape[:2])
        if (height, width) == image.shape[:2]:
            return image
        return from_pil(to_pil(image).resize((width, height), self.resample))


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Zero-pad symmetrically (extra pixel bottom/right) up to at least (height, width)."""
    dy, dx = max(height - image.shape[0], 0), max(width - image.shape[1], 0)
    if not dy and not dx:
        return image
    return np.pad(image, ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2), (0, 0)))


@dataclasses.dataclass(frozen=True)
class CenterCrop(ImageMap):
    """Crop the center (h, w); a smaller image is zero-padded first, as torchvision does."""

    size: int | Size

    def apply(self, image):
        height, width = as_size(self.size)
        image = _pad_to(image, height, width)
        top = int(round((image.shape[0] - height) / 2.0))
        left = int(round((image.shape[1] - width) / 2.0))
        return image[top : top + height, left : left + width]


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop(RandomImageMap):
    """torchvision's RandomResizedCrop: 10 tries at a random area and aspect ratio, then a
    center crop clamped to `ratio`; the crop is resized to `size` (bilinear)."""

    size: int | Size
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    resample: int = Image.BILINEAR

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, crop_height, crop_width) inside a (height, width) image."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def apply(self, image, rng):
        top, left, h, w = self.crop_box(*image.shape[:2], rng)
        out_h, out_w = as_size(self.size)
        crop = image[top : top + h, left : left + w]
        if (h, w) == (out_h, out_w):
            return crop
        return from_pil(to_pil(np.ascontiguousarray(crop)).resize((out_w, out_h), self.resample))


@dataclasses.dataclass(frozen=True)
class RandomCrop(RandomImageMap):
    """Pad `padding` pixels of `fill` on every side, then crop `size` at a random position.

    Planned (`jaxcnn.data.plan`): its two draws in [0, 1) pick the window, so the pipeline can
    draw a whole epoch's windows at once and the device path can apply them.
    """

    size: int | Size
    padding: int = 0
    fill: int = 0
    DRAWS = 2

    def origins(self, draws: np.ndarray, height: int, width: int) -> np.ndarray:
        """Window origins (top, left) in the padded image, int (..., 2), of draws (..., 2) for a
        (height, width) input: uniform over every window, as `integers(0, padded - size + 1)`."""
        out_h, out_w = as_size(self.size)
        choices = np.array([height + 2 * self.padding - out_h + 1, width + 2 * self.padding - out_w + 1])
        if np.any(choices < 1):
            raise ValueError(
                f"RandomCrop of {(out_h, out_w)} from a {(height, width)} image padded by {self.padding}: "
                "resize the image first"
            )
        return np.minimum(np.floor(np.asarray(draws) * choices), choices - 1).astype(np.int64)

    def apply_drawn(self, image, draws):
        height, width = as_size(self.size)
        top, left = self.origins(draws, *image.shape[:2])
        # Crop origin in the unpadded image's coordinates; copy only the overlap, never pad a copy.
        y0, x0 = int(top) - self.padding, int(left) - self.padding
        out = np.full((height, width, image.shape[2]), self.fill, dtype=image.dtype)
        sy0, sy1 = max(y0, 0), min(y0 + height, image.shape[0])
        sx0, sx1 = max(x0, 0), min(x0 + width, image.shape[1])
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        return out

    def apply(self, image, rng):
        return self.apply_drawn(image, rng.random(self.DRAWS))


@dataclasses.dataclass(frozen=True)
class RandomHorizontalFlip(RandomImageMap):
    """Mirror left-right with probability `p` (a view; batching copies it). Planned: one draw
    in [0, 1), flipped when it is below `p`."""

    p: float = 0.5
    DRAWS = 1

    def flips(self, draws: np.ndarray) -> np.ndarray:
        """Whether to flip, bool (...,), for draws (..., 1)."""
        return np.asarray(draws)[..., 0] < self.p

    def apply_drawn(self, image, draws):
        return image[:, ::-1] if self.flips(draws) else image

    def apply(self, image, rng):
        return self.apply_drawn(image, rng.random(self.DRAWS))


@dataclasses.dataclass(frozen=True)
class RandomRotation(RandomImageMap):
    """Rotate by an angle uniform in [-degrees, degrees] about the center, same size, `fill`
    outside (torchvision's defaults: nearest neighbour, zero fill)."""

    degrees: float
    resample: int = Image.NEAREST
    fill: int = 0

    def apply(self, image, rng):
        angle = rng.uniform(-self.degrees, self.degrees)
        if angle == 0:
            return image
        fill = self.fill if image.shape[-1] == 1 else (self.fill,) * 3
        return from_pil(to_pil(image).rotate(angle, self.resample, expand=False, fillcolor=fill))


@dataclasses.dataclass(frozen=True)
class ToChannels(ImageMap):
    """Give the image `channels` channels: 1 -> 3 repeats gray, 3 -> 1 takes the luma."""

    channels: int

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def apply(self, image):
        if image.shape[-1] == self.channels:
            return image
        if self.channels == 1:
            return _luma(image)
        return np.broadcast_to(image, (*image.shape[:2], 3))  # read-only view; batching copies it


@dataclasses.dataclass(frozen=True)
class Grayscale(ImageMap):
    """Luma (Pillow / torchvision weights) with `channels` outputs; None keeps the input's count."""

    channels: int | None = None

    def apply(self, image):
        return ToChannels(self.channels or image.shape[-1]).apply(_luma(image))


@dataclasses.dataclass(frozen=True, eq=False)
class Normalize(ImageMap):
    """uint8 -> float32 `(x / 255 - mean) / std` per channel; works on one image or a batch."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        if mean.shape != std.shape or mean.ndim != 1 or np.any(std <= 0):
            raise ValueError(f"mean and std must be per-channel with std > 0, got {self.mean}, {self.std}")
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).astype(np.float32))
        object.__setattr__(self, "_offset", (-mean / std).astype(np.float32))

    @property
    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 (scale, offset) with `apply(x) == x * scale + offset`, e.g. for jitted code."""
        return self._scale, self._offset

    def apply(self, image):
        out = np.multiply(image, self._scale, dtype=np.float32)
        out += self._offset
        return out


# ------------------------------------------------------------------------------------ recipes

RECIPES = {"none": "", "flip": "flip", "cifar": "crop,flip", "imagenet": "rrc,flip"}
EVAL_CROP_FRACTION = 0.875  # imagenet-style eval: resize to size / 0.875, center crop size


@dataclasses.dataclass(frozen=True)
class OpForm:
    """An `--augment` op: its written form, default arguments and the rule they must meet."""

    form: str
    defaults: tuple[float, ...] = ()
    rule: str = ""
    valid: Callable[..., bool] = lambda *args: True


def _whole(x: float) -> bool:
    return x == int(x)


OPS = {
    "flip": OpForm("flip"),
    "crop": OpForm("crop[:PAD]", (4,), "PAD is whole pixels", _whole),
    "rrc": OpForm("rrc[:MIN_AREA_%]", (8,), "MIN_AREA_% is in (0, 100]", lambda a: 0 < a <= 100),
    "rotate": OpForm("rotate[:DEGREES]", (15,)),
    "gray": OpForm("gray"),
    "randaugment": OpForm(
        "randaugment[:N[:M]]", (2, 9), f"N is a whole number of ops >= 1 and M a magnitude bin in 0..{NUM_BINS - 1}",
        lambda n, m: _whole(n) and n >= 1 and _whole(m) and 0 <= m < NUM_BINS),
    "trivialaugment": OpForm("trivialaugment"),
    "erase": OpForm("erase[:P]", (0.5,), "P is a probability in [0, 1]", lambda p: 0 <= p <= 1),
}
_NAME = re.compile(r"[a-z]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_ARGUMENTS = re.compile(rf"({_NUMBER.pattern})?|(:{_NUMBER.pattern})+")  # "", "10" or ":2:9"


def _forms() -> str:
    return (f"use a recipe ({', '.join(RECIPES)}) or a comma list of ops: "
            f"{', '.join(op.form for op in OPS.values())}")


def _parse_op(token: str, spec: str) -> tuple[str, float | tuple[int, ...] | None]:
    """One op token -> (name, value): None without arguments, a number for one, a tuple for more."""
    name_match = _NAME.match(token)
    name = name_match.group() if name_match else token
    if name not in OPS:
        raise DataError(f"unknown augmentation {token!r} in {spec!r}; {_forms()}")
    op, rest = OPS[name], token[len(name):]
    if not _ARGUMENTS.fullmatch(rest):
        raise DataError(f"cannot read the arguments of {token!r} in {spec!r}: write {op.form}; {_forms()}")
    given = _NUMBER.findall(rest)
    if len(given) > len(op.defaults):
        allowed = f"at most {len(op.defaults)} argument(s)" if op.defaults else "no arguments"
        raise DataError(f"{token!r} in {spec!r}: {op.form} takes {allowed}; {_forms()}")
    args = tuple(float(a) for a in given) + op.defaults[len(given):]
    if not op.valid(*args):
        raise DataError(f"{token!r} in {spec!r}: in {op.form}, {op.rule}; {_forms()}")
    if len(op.defaults) > 1:
        return name, tuple(int(a) for a in args)
    return name, (args[0] if args else None)


def parse_augment(spec: str) -> tuple[tuple[str, float | tuple[int, ...] | None], ...]:
    """A recipe name or comma list -> ((op, value), ...); anything else is a DataError naming the forms.

    Grammar (case-insensitive, spaces around items ignored):

        spec := item ("," item)*          item := RECIPE | OP | OP NUMBER | OP (":" NUMBER)+

    A recipe stands for its op list; an op's arguments fill its parameters from the left, the
    rest keep their defaults (`randaugment:3` = N 3, M 9). The value is None for ops without
    parameters, the number for one (`rotate10` -> 10.0), a tuple of ints for randaugment (N, M).
    `rrc` must come first (it replaces the resize), `erase` last (it acts on the normalized image).
    """
    tokens = (RECIPES.get(t.strip(), t.strip()) for t in spec.lower().split(","))  # expand recipe names
    ops = tuple(_parse_op(token, spec) for token in filter(None, (t.strip() for t in ",".join(tokens).split(","))))
    names = [name for name, _ in ops]
    if "rrc" in names[1:]:
        raise DataError(f"'rrc' replaces the resize, so it must be the first op in {spec!r}")
    if "erase" in names[:-1]:
        raise DataError(f"'erase' acts on the normalized image, so it must be the last op in {spec!r}")
    return ops


def _train_transform(name: str, value, size: Size, hflip: float):
    """The transform of one parsed op for training; None where it is a no-op (p = 0)."""
    if name == "rrc":
        return RandomResizedCrop(size, scale=(value / 100, 1.0))
    if name == "crop":
        return RandomCrop(size, padding=int(value))
    if name == "flip":
        return RandomHorizontalFlip(hflip) if hflip > 0 else None
    if name == "rotate":
        return RandomRotation(value)
    if name == "gray":
        return Grayscale()
    if name == "randaugment":
        return RandAugment(*value)
    if name == "trivialaugment":
        return TrivialAugmentWide()
    return RandomErasing(value) if value > 0 else None  # erase


def build_transforms(spec: str, *, train: bool, image_size: int | Size, hflip: float = 0.5) -> list:
    """The per-image transforms of recipe `spec` (see the module docstring) for train or eval."""
    if not 0.0 <= hflip <= 1.0:
        raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")
    size = as_size(image_size)
    ops = parse_augment(spec)
    random_resized = bool(ops) and ops[0][0] == "rrc"
    if not train:
        if random_resized:
            return [Resize(math.floor(max(size) / EVAL_CROP_FRACTION)), CenterCrop(size)]
        return [Resize(size)]
    transforms = [] if random_resized else [Resize(size)]
    transforms += [_train_transform(name, value, size, hflip) for name, value in ops]
    return [t for t in transforms if t is not None]
