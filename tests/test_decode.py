"""Decoding: same pixels as Birder's transform, upright, RGB, and clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.decode import Preprocess, decode, open_rgb, read_file, to_pixels
from indexer.errors import UnreadableImage
from tests.helpers import SAMPLE_PHOTOS, shapes

PREP = Preprocess((64, 80), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("photo", SAMPLE_PHOTOS[:3], ids=lambda p: p.name)
def test_pixels_equal_birder_classification_transform(photo: Path) -> None:
    from birder import classification_transform

    image = Image.open(photo).convert("RGB")
    rgb_stats = {"mean": PREP.mean, "std": PREP.std}
    expected = classification_transform(PREP.size, rgb_stats)(image)
    ours = to_pixels(image, PREP)
    assert ours.shape == (3, 64, 80)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
    assert np.allclose(ours, expected.numpy(), atol=1e-5)


def test_exif_orientation_is_applied_and_size_is_upright() -> None:
    upright = shapes(4, size=(120, 60))
    # Orientation 6 means "rotate 90° clockwise to display": store the pixels rotated back.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "PNG", exif=exif.tobytes())
    image, width, height = open_rgb(data, "rotated.png")
    assert (width, height) == (120, 60)
    assert np.array_equal(np.asarray(image), np.asarray(upright))


def test_alpha_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    image, _, _ = open_rgb(encode(rgba, "PNG"), "alpha.png")
    pixels = np.asarray(image)
    assert tuple(pixels[4, 4]) == (255, 255, 255)
    assert tuple(pixels[0, 0]) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA"])
def test_other_modes_become_rgb(mode: str) -> None:
    image = shapes(5).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode(encode(image, fmt), f"x.{fmt.lower()}", PREP)
    assert decoded.pixels.shape == (3, 64, 80)
    assert np.isfinite(decoded.pixels).all()


def test_jpeg_draft_decoding_keeps_full_size_and_close_pixels() -> None:
    big = shapes(6, size=(1600, 1200)).resize((1600, 1200))
    data = encode(big, "JPEG", quality=95)
    decoded = decode(data, "big.jpg", PREP)
    assert (decoded.width, decoded.height) == (1600, 1200)
    full = to_pixels(Image.open(io.BytesIO(data)).convert("RGB"), PREP)
    a, b = decoded.pixels.ravel(), full.ravel()
    cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cosine > 0.99


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"this is not an image\n", "not a readable image (unknown format or not an image)"),
        (encode(shapes(7), "JPEG")[:150], "not a readable image (Truncated File Read)"),
        (encode(shapes(7), "PNG")[:60], "not a readable image ("),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png"],
)
def test_unreadable_data_raises_with_path_and_reason(content: bytes, reason: str) -> None:
    with pytest.raises(UnreadableImage) as caught:
        decode(content, "/photos/broken.jpg", PREP)
    assert caught.value.path == "/photos/broken.jpg"
    assert str(caught.value).startswith(f"/photos/broken.jpg: {reason}")
    assert "\n" not in str(caught.value) and "object at 0x" not in str(caught.value)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="the file disappeared during the run"):
        read_file(str(tmp_path / "gone.jpg"))
