"""Hardened decoding: every hard image kind, every way a file can be bad, draft decoding."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from jaxcnn.data.decode import SkipReason, UnreadableImage, decode_image, probe_image

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def noise(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def reason_of(path, **kwargs):
    with pytest.raises(UnreadableImage) as info:
        decode_image(path, **kwargs)
    return info.value.reason


def png_header_only(path, width, height):
    """A PNG that claims width x height (8-bit gray) with valid chunks: what a bomb's header says."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def test_exif_orientation_is_applied(tmp_path):
    left_red = np.zeros((20, 40, 3), np.uint8)
    left_red[:, :20] = RED
    left_red[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.fromarray(left_red).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    image = decode_image(tmp_path / "rot.jpg")
    assert image.shape == (40, 20, 3)
    upright = np.rot90(left_red, k=-1)  # the left (red) half is now on top
    assert np.abs(image.astype(int) - upright).mean() < 8  # JPEG blurs colour at the red/blue edge


def test_palette_and_its_transparency(tmp_path):
    colours = np.zeros((4, 4, 3), np.uint8)
    colours[:2] = RED
    colours[2:] = BLUE
    palette = Image.fromarray(colours).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "p.png"), colours)
    transparent_index = palette.getpixel((0, 0))  # the red one
    palette.save(tmp_path / "pt.png", transparency=transparent_index)
    expected = colours.copy()
    expected[:2] = WHITE
    np.testing.assert_array_equal(decode_image(tmp_path / "pt.png"), expected)
    Image.fromarray(colours).save(tmp_path / "p.gif")
    assert decode_image(tmp_path / "p.gif").shape == (4, 4, 3)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "rgba.png")[0], [WHITE, BLUE, (127, 127, 127)])
    la = np.array([[[0, 0], [0, 255], [200, 255]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert probe_image(tmp_path / "la.png").grayscale
    np.testing.assert_array_equal(decode_image(tmp_path / "la.png", channels=1)[0, :, 0], [255, 0, 200])


def test_cmyk_tiff_and_jpeg(tmp_path):
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[..., 1:3] = 255  # magenta + yellow = red
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.tif")
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert not probe_image(tmp_path / "cmyk.tif").grayscale
    np.testing.assert_array_equal(decode_image(tmp_path / "cmyk.tif"), np.broadcast_to(RED, (8, 8, 3)))
    np.testing.assert_allclose(decode_image(tmp_path / "cmyk.jpg"), np.broadcast_to(RED, (8, 8, 3)), atol=8)


def test_sixteen_bit_keeps_the_top_byte(tmp_path):
    values = np.array([[0, 256, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode == "I;16"
    assert probe_image(tmp_path / "i16.png").grayscale
    np.testing.assert_array_equal(decode_image(tmp_path / "i16.png", channels=1)[0, :, 0], [0, 1, 128, 255])
    rgb = decode_image(tmp_path / "i16.png", channels=3)
    np.testing.assert_array_equal(rgb[0], np.repeat([[0], [1], [128], [255]], 3, axis=1))
    Image.fromarray(np.array([[-5, 0, 65535, 70000]], np.int32), "I").save(tmp_path / "i32.tif")
    np.testing.assert_array_equal(decode_image(tmp_path / "i32.tif", channels=1)[0, :, 0], [0, 0, 255, 255])


def test_gray_kept_one_channel_or_expanded_and_colour_to_luma(tmp_path):
    gray = noise(6, 5, 1)[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "g.png", channels=1)[..., 0], gray)
    np.testing.assert_array_equal(decode_image(tmp_path / "g.png", channels=3), np.repeat(gray[..., None], 3, -1))
    Image.fromarray(np.full((2, 2, 3), RED, np.uint8)).save(tmp_path / "red.png")
    assert decode_image(tmp_path / "red.png", channels=1).tolist() == [[[76], [76]], [[76], [76]]]  # 0.299 * 255


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "webp"])
def test_lossless_formats_round_trip_and_resize_is_torchvision_bilinear(tmp_path, ext):
    pixels = noise(30, 50)
    path = tmp_path / f"x.{ext}"
    Image.fromarray(pixels).save(path, **({"lossless": True} if ext == "webp" else {}))
    np.testing.assert_array_equal(decode_image(path), pixels)
    resized = decode_image(path, size=(12, 20))
    assert resized.shape == (12, 20, 3)
    # torchvision.transforms.Resize((12, 20)) on a PIL image is exactly this call.
    np.testing.assert_array_equal(resized, np.asarray(Image.fromarray(pixels).resize((20, 12), Image.BILINEAR)))


def test_jpeg_draft_decodes_near_the_target_size(tmp_path, monkeypatch):
    smooth = np.asarray(Image.fromarray(noise(12, 16)).resize((1600, 1200), Image.BICUBIC))
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    drafted_sizes = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(self, mode, size):
        result = original_draft(self, mode, size)
        drafted_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)
    image = decode_image(tmp_path / "big.jpg", size=224)
    assert drafted_sizes == [(400, 300)]  # 1/4 scale: the smallest DCT scale still >= 224 both ways
    assert image.shape == (224, 224, 3)
    full = np.asarray(Image.open(tmp_path / "big.jpg").resize((224, 224), Image.BILINEAR))
    assert np.abs(image.astype(int) - full).mean() < 3
    gray = decode_image(tmp_path / "big.jpg", size=100, channels=1)
    assert gray.shape == (100, 100, 1) and drafted_sizes[-1] == (200, 150)


def test_bad_files_have_typed_reasons(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    Image.fromarray(noise(64, 64)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 6 // 10])
    Image.fromarray(noise(64, 64)).save(tmp_path / "whole.png")
    broken = bytearray((tmp_path / "whole.png").read_bytes())
    start = broken.index(b"IDAT") + 8
    broken[start:start + 64] = noise(1, 64, 1, seed=1).tobytes()
    (tmp_path / "garbled.png").write_bytes(bytes(broken))
    assert reason_of(tmp_path / "empty.jpg") is SkipReason.EMPTY
    assert reason_of(tmp_path / "text.png") is SkipReason.NOT_AN_IMAGE
    assert reason_of(tmp_path / "cut.jpg") is SkipReason.TRUNCATED
    assert reason_of(tmp_path / "cut.jpg", size=16) is SkipReason.TRUNCATED
    assert reason_of(tmp_path / "garbled.png") is SkipReason.CORRUPT
    assert reason_of(tmp_path / "missing.png") is SkipReason.UNREADABLE_FILE
    probe_image(tmp_path / "cut.jpg")  # the header is intact: only decoding finds it out
    with pytest.raises(UnreadableImage, match="empty file"):
        probe_image(tmp_path / "empty.jpg")


def test_decompression_bombs_are_skipped(tmp_path, monkeypatch):
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)  # 900 Mpx: Pillow raises
    assert reason_of(bomb) is SkipReason.TOO_LARGE
    with pytest.raises(UnreadableImage, match="decompression bomb"):
        probe_image(bomb)
    Image.fromarray(noise(12, 12)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 144 px: over the limit, under 2x (Pillow only warns)
    with pytest.warns(Image.DecompressionBombWarning):
        assert reason_of(tmp_path / "big.png") is SkipReason.TOO_LARGE
