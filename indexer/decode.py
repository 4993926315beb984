"""Turn image bytes into the backbone's input tensor.

The pixel path reproduces Birder's `classification_transform(size, rgb_stats)` (bicubic squash
to `size`, scale to [0, 1], normalise) without importing birder, which costs ~8 s at start-up;
`tests/test_decode.py` checks the two agree. What Birder leaves to the caller is done here:
EXIF orientation, RGB conversion with alpha over white, and JPEG draft decoding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from indexer.errors import UnreadableImage

try:  # HEIC/HEIF are readable only through pillow-heif's plugin.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency, but optional in spirit
    pass


@dataclass(frozen=True)
class Preprocess:
    """How a backbone wants its pixels. Picklable: it travels to DataLoader workers."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Decoded:
    """An image ready for the backbone: (3, H, W) float32, and its size before resizing."""

    pixels: torch.Tensor
    width: int
    height: int


_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


def open_rgb(
    data: bytes, path: str, draft_size: tuple[int, int] | None = None
) -> tuple[Image.Image, int, int]:
    """Decode `data` upright and in RGB, with the upright full-resolution (width, height).

    Raises UnreadableImage naming `path` and the reason.
    """
    if not data:
        raise UnreadableImage(path, "empty file (0 bytes)")
    try:
        source = Image.open(io.BytesIO(data))
        width, height = source.size
        if source.getexif().get(0x0112) in _ROTATED_ORIENTATIONS:
            width, height = height, width
        if draft_size is not None and source.format == "JPEG":
            # DCT-domain downscaling: decode at 1/2, 1/4 or 1/8 scale, never below draft_size.
            source.draft("RGB", (draft_size[1], draft_size[0]))
        return to_rgb(ImageOps.exif_transpose(source)), width, height
    except Exception as exc:  # PIL raises many types for broken files; all mean "unreadable"
        raise UnreadableImage(path, f"not a readable image ({_reason(exc)})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited over white (not black, which PIL would give)."""
    if image.mode == "RGB":
        image.load()
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def to_pixels(image: Image.Image, prep: Preprocess) -> torch.Tensor:
    """(3, H, W) float32, normalised as the backbone was trained."""
    height, width = prep.size
    resized = image.resize((width, height), Image.Resampling.BICUBIC)
    array = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)
    mean = torch.tensor(prep.mean).view(3, 1, 1)
    std = torch.tensor(prep.std).view(3, 1, 1)
    return (array.to(torch.float32) / 255.0 - mean) / std


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UnreadableImage(path, f"cannot read the file ({exc.strerror or exc})") from exc


def decode(data: bytes, path: str, prep: Preprocess) -> Decoded:
    image, width, height = open_rgb(data, path, draft_size=prep.size)
    return Decoded(to_pixels(image, prep), width, height)


def _reason(exc: Exception) -> str:
    """A short, stable reason; PIL's own texts can embed object reprs."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"more pixels than the limit of {Image.MAX_IMAGE_PIXELS}"
    if isinstance(exc, UnidentifiedImageError):
        return "unknown format or not an image"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
