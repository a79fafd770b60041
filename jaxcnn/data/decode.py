"""Hardened image decoding: any file Pillow reads becomes uint8 (H, W, C), or a typed reason to skip it.

Conversions (what torchvision's `Image.open(f).convert("RGB")` gets wrong or leaves implicit):
- EXIF orientation is applied (`ImageOps.exif_transpose`), so phone photos stand upright.
- Alpha (RGBA, LA, PA, palette with transparency) is composited on WHITE, as an image viewer
  shows it; dropping alpha instead exposes whatever colour the transparent pixels happen to store.
- 16-bit grayscale (I;16*; I, 32-bit integers, read as 16-bit) keeps its top 8 bits: Pillow's
  own `convert("L")` clips everything above 255 to white. F is clipped to 0..255 by Pillow.
- Palette, 1-bit, CMYK, YCbCr: Pillow's conversion to L or RGB. Gray sources give 1 channel,
  expanded to 3 when 3 are asked for; colour asked as 1 channel becomes ITU-R 601 luma.
- With a target size, JPEGs are decoded with `Image.draft` (DCT scaling by 1/2, 1/4, 1/8) to the
  smallest scale still at least that size, then resized with antialiased bilinear, exactly like
  torchvision's `Resize((h, w))` on a PIL image.
"""

from __future__ import annotations

import dataclasses
import enum
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Modes whose pixels carry no colour; LA/La lose nothing when composited to L.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class SkipReason(enum.Enum):
    """Why a file is left out of a dataset."""

    UNREADABLE_FILE = "cannot read file"  # missing, no permission, I/O error
    EMPTY = "empty file"
    NOT_AN_IMAGE = "not an image"
    TRUNCATED = "truncated image"
    CORRUPT = "corrupt image"
    TOO_LARGE = "decompression bomb"  # more pixels than PIL.Image.MAX_IMAGE_PIXELS


class UnreadableImage(Exception):
    """A file that cannot be used as an image; `reason` says why, `detail` what Pillow said."""

    def __init__(self, reason: SkipReason, detail: str = ""):
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):
        return type(self), (self.reason, self.detail)


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What an image's header says, read without decoding pixels."""

    width: int
    height: int
    mode: str

    @property
    def grayscale(self) -> bool:
        return self.mode in GRAYSCALE_MODES


def _open(path: str | os.PathLike) -> Image.Image:
    """`Image.open` with every way it fails turned into an `UnreadableImage`."""
    try:
        empty = os.path.getsize(path) == 0
    except OSError as e:
        raise UnreadableImage(SkipReason.UNREADABLE_FILE, f"{type(e).__name__}: {e}") from e
    if empty:
        raise UnreadableImage(SkipReason.EMPTY)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as e:
        raise UnreadableImage(SkipReason.TOO_LARGE, str(e)) from e
    except UnidentifiedImageError as e:
        raise UnreadableImage(SkipReason.NOT_AN_IMAGE, "Pillow cannot identify it") from e
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise UnreadableImage(SkipReason.UNREADABLE_FILE, f"{type(e).__name__}: {e}") from e
    except Exception as e:  # Pillow plugins raise OSError, SyntaxError, ValueError... on bad headers
        raise UnreadableImage(SkipReason.CORRUPT, f"{type(e).__name__}: {e}") from e
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        # Pillow only warns between 1x and 2x its limit; a dataset should not decode those either.
        image.close()
        raise UnreadableImage(
            SkipReason.TOO_LARGE, f"{image.width}x{image.height} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS={limit}"
        )
    return image


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Header check (no pixel decoding): size and mode, or `UnreadableImage` if it is not an image.

    Callers indexing many files may want to silence `PIL.Image.DecompressionBombWarning`, which
    Pillow emits while opening; such files are reported here as `SkipReason.TOO_LARGE` anyway.
    """
    with _open(path) as image:
        return ImageInfo(image.width, image.height, image.mode)


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return int(height), int(width)


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert a loaded image of any Pillow mode to "L" (channels=1) or "RGB" (channels=3)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image.mode in _SIXTEEN_BIT_MODES:
        sixteen_bit = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        image = Image.fromarray((sixteen_bit >> 8).astype(np.uint8), "L")
    elif image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        image = _composite_on_white(image)
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def decode_image(
    path: str | os.PathLike, *, channels: int = 3, size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """Decode `path` to uint8 (H, W, channels), upright, resized to `size` ((h, w) or square) if given.

    Raises `UnreadableImage` (with a `SkipReason`) for empty, non-image, truncated, corrupt or
    oversized files; never any other error for bad data.
    """
    target = _as_size(size) if size is not None else None
    with _open(path) as image:
        try:
            if target is not None:
                # Both sides at least the larger target side, so an EXIF 90-degree turn cannot make it short.
                side = max(target)
                image.draft("L" if channels == 1 else "RGB", (side, side))
            image.load()
            upright = to_mode(ImageOps.exif_transpose(image), channels)
            if target is not None and upright.size != (target[1], target[0]):
                upright = upright.resize((target[1], target[0]), Image.Resampling.BILINEAR)
            array = np.asarray(upright)
        except Exception as e:  # Pillow decoders raise OSError, SyntaxError, ValueError, EOFError... on bad data
            reason = SkipReason.TRUNCATED if "truncated" in str(e) else SkipReason.CORRUPT
            raise UnreadableImage(reason, f"{type(e).__name__}: {e}") from e
    return array[:, :, None] if array.ndim == 2 else array
