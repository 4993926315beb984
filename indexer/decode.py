"""Turn image bytes into the backbone's input array. Torch-free (numpy and Pillow only), so a
query can embed an image with ONNX Runtime without importing torch.

The pixel path reproduces Birder's `classification_transform(size, rgb_stats)` (bicubic squash
to `size`, scale to [0, 1], normalise) without importing birder, which costs ~8 s at start-up;
`tests/test_decode.py` checks the two agree. What Birder leaves to the caller is done here:
EXIF orientation, RGB conversion with alpha over white, 16-bit scaling, a pixel limit checked on
the header before any decoding, and JPEG draft decoding.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from indexer.errors import UnreadableImage
from indexer.options import DEFAULT_MAX_PIXELS
from indexer.scan import not_indexable

try:  # HEIC/HEIF are readable only through pillow-heif's plugin.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency, but optional in spirit
    pass

# Pillow's own bomb check would refuse at a fixed 179 MP before ours could apply the configured
# limit; ours runs on the header of every image this package opens.
Image.MAX_IMAGE_PIXELS = None


Pixels = NDArray[np.float32]  # (3, H, W), or (B, 3, H, W) for a batch: normalised RGB


@dataclass(frozen=True)
class Preprocess:
    """How a backbone wants its pixels. Picklable: it travels to DataLoader workers."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Regional views (see VIEW_BOXES) are made at this (height, width); None: none.
    view_size: tuple[int, int] | None = None


Box = tuple[float, float, float, float]  # (left, top, right, bottom), fractions of the image
# The regions of an image embedded as its views: the four quadrants and the central 60 %. A
# crop or corner of a photo matches one of its views, and a photo pasted small onto a canvas
# matches one of the canvas's views (bench/RESULTS.md). Each is as wide as it is tall, as
# fractions, so a region's longer side is the same share of every image's.
VIEW_BOXES: tuple[Box, ...] = (
    (0.0, 0.0, 0.5, 0.5),
    (0.5, 0.0, 1.0, 0.5),
    (0.0, 0.5, 0.5, 1.0),
    (0.5, 0.5, 1.0, 1.0),
    (0.2, 0.2, 0.8, 0.8),
)


@dataclass(frozen=True)
class Decoded:
    """An image ready for the backbone: (3, H, W) float32, its size before resizing, and its
    views (R, 3, h, w) when the backbone takes them."""

    pixels: Pixels
    width: int
    height: int
    views: Pixels | None = None


@dataclass(frozen=True)
class FileData:
    """A file's bytes with the size and mtime of exactly those bytes (fstat of the same open)."""

    data: bytes
    size: int
    mtime_ns: int


_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
_INTEGER_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def open_rgb(
    data: bytes,
    path: str,
    draft_size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[Image.Image, int, int]:
    """Decode `data` upright and in RGB, with the upright full-resolution (width, height).

    Animated and multi-frame files give their first frame. Raises UnreadableImage naming
    `path` and the reason.
    """
    # Pillow warns about files it can still read ("Invalid APNG", odd EXIF, ...): nothing a
    # user can act on, and one line per file would bury the real failures.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _open_rgb(data, path, draft_size, max_pixels)


def _open_rgb(
    data: bytes, path: str, draft_size: tuple[int, int] | None, max_pixels: int
) -> tuple[Image.Image, int, int]:
    if not data:
        raise UnreadableImage(path, "empty file (0 bytes)")
    try:
        source = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises many types for broken files; all mean "unreadable"
        raise UnreadableImage(path, f"not a readable image ({_reason(exc)})") from exc
    if source.width * source.height > max_pixels:
        raise UnreadableImage(
            path,
            f"too many pixels ({source.width} x {source.height}; the limit is {max_pixels:,}, "
            "see --max-pixels)",
        )
    try:
        header_size = source.size
        drafted = draft_size is not None and source.format == "JPEG"
        if draft_size is not None and drafted:
            # DCT-domain downscaling: decode at 1/2, 1/4 or 1/8 scale, never below draft_size.
            source.draft("RGB", (draft_size[1], draft_size[0]))
        upright = upright_rgb(source)
    except Exception as exc:
        raise UnreadableImage(path, f"not a readable image ({_reason(exc)})") from exc
    width, height = upright.size
    if drafted:  # the decoded size is reduced: the full size is the header's, turned upright
        rotated = source.getexif().get(0x0112) in _ROTATED_ORIENTATIONS
        width, height = header_size[::-1] if rotated else header_size
    return upright, width, height


def upright_rgb(image: Image.Image, in_place: bool = False) -> Image.Image:
    """`image` turned as its EXIF orientation says, in RGB with any transparency over white: how
    every part of imgsearch sees a file's pixels (the model, verification, the keeper's look,
    thumbnails). `in_place` turns `image` itself (no copy of a full-size image)."""
    if in_place:
        ImageOps.exif_transpose(image, in_place=True)
        return to_rgb(image)
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited over white (not black, which PIL would give)."""
    if image.mode == "RGB":
        image.load()
        return image
    if image.mode in _INTEGER_MODES or image.mode == "F":
        return _high_depth_to_rgb(image)
    if has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def has_alpha(image: Image.Image) -> bool:
    """Whether an image has transparent pixels it could show."""
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale to 8 bits by scaling: Pillow's convert() would clip to white."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 65535.0 if image.mode != "I" or values.max(initial=0) > 255 else 255.0
    scaled = np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, "L").convert("RGB")


def to_pixels(image: Image.Image, prep: Preprocess) -> Pixels:
    """(3, H, W) float32, normalised as the backbone was trained."""
    height, width = prep.size
    resized = image.resize((width, height), Image.Resampling.BICUBIC)
    array = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    mean = np.asarray(prep.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(prep.std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((array / np.float32(255.0) - mean) / std, dtype=np.float32)


def read_file(path: str) -> FileData:
    """The file's bytes, with the stat of the very file object they were read from. Only a
    regular file within the size limit is read (opened without blocking, so a pipe swapped in
    since the scan cannot hang the run), and never more bytes than its stat said."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as handle:
            stat = os.fstat(handle.fileno())
            why = not_indexable(stat)
            if why is not None:
                raise UnreadableImage(path, why)
            return FileData(handle.read(stat.st_size), stat.st_size, stat.st_mtime_ns)
    except FileNotFoundError as exc:
        raise UnreadableImage(path, "the file disappeared during the run") from exc
    except OSError as exc:
        raise UnreadableImage(path, f"cannot read the file ({exc.strerror or exc})") from exc


def decode(
    data: bytes, path: str, prep: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Decoded:
    image, width, height = open_rgb(data, path, prep.size, max_pixels)
    return Decoded(to_pixels(image, prep), width, height, views_of(image, prep))


def views_of(image: Image.Image, prep: Preprocess) -> Pixels | None:
    """The image's regional views (R, 3, h, w), or None when the backbone takes none."""
    if prep.view_size is None:
        return None
    view_prep = Preprocess(prep.view_size, prep.mean, prep.std)
    crops = [image.crop(box_pixels(box, image.width, image.height)) for box in VIEW_BOXES]
    return np.stack([to_pixels(crop, view_prep) for crop in crops])


def box_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """A region given as fractions, in pixels of a width x height image (at least one)."""
    left, top = round(box[0] * width), round(box[1] * height)
    return left, top, max(left + 1, round(box[2] * width)), max(top + 1, round(box[3] * height))


def decode_file(path: str, prep: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    return decode(read_file(path).data, path, prep, max_pixels)


def _reason(exc: Exception) -> str:
    """A short, stable reason; PIL's own texts can embed object reprs."""
    if isinstance(exc, UnidentifiedImageError):
        return "unknown format or not an image"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
