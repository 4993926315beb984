"""Small JPEG thumbnails of image files, upright (EXIF), transparency drawn over a checkerboard
(as image editors show it: a transparent picture is not a white or black one), for the HTML
sheet and the server."""

from __future__ import annotations

import io
from typing import Any


class TooManyPixels(ValueError):
    """An image that would be decoded in full (not a JPEG) and is larger than allowed."""


def jpeg_thumbnail(path: str, pixels: int, max_pixels: int | None = None) -> bytes:
    """A JPEG at most `pixels` on its longer side. JPEGs are decoded at a reduced DCT scale;
    other formats larger than `max_pixels` raise TooManyPixels before decoding. Raises OSError
    (and PIL's errors) when the file cannot be read as an image."""
    from PIL import Image, ImageOps  # Pillow only when a thumbnail is asked for

    from indexer.decode import has_alpha, upright_rgb

    with Image.open(path) as image:
        if image.format != "JPEG" and max_pixels and image.width * image.height > max_pixels:
            raise TooManyPixels(f"{image.width} x {image.height} pixels")
        image.draft("RGB", (pixels, pixels))
        if has_alpha(image):
            clear = ImageOps.exif_transpose(image).convert("RGBA")
            clear.thumbnail((pixels, pixels))
            thumb = Image.alpha_composite(checkerboard(clear.size), clear).convert("RGB")
        else:
            thumb = upright_rgb(image)
            thumb.thumbnail((pixels, pixels))
        buffer = io.BytesIO()
        thumb.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def checkerboard(size: tuple[int, int], square: int = 8) -> Any:
    """An RGBA checkerboard of light greys, `size` (width, height): what shows through
    transparent pixels."""
    import numpy as np
    from PIL import Image

    width, height = size
    rows, columns = np.indices((height, width)) // square
    grey = np.where((rows + columns) % 2 == 0, 255, 204).astype(np.uint8)
    return Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA")
