"""Small JPEG thumbnails of image files, upright (EXIF), transparency over white, for the HTML
sheet and the server."""

from __future__ import annotations

import io


class TooManyPixels(ValueError):
    """An image that would be decoded in full (not a JPEG) and is larger than allowed."""


def jpeg_thumbnail(path: str, pixels: int, max_pixels: int | None = None) -> bytes:
    """A JPEG at most `pixels` on its longer side. JPEGs are decoded at a reduced DCT scale;
    other formats larger than `max_pixels` raise TooManyPixels before decoding. Raises OSError
    (and PIL's errors) when the file cannot be read as an image."""
    from PIL import Image  # Pillow only when a thumbnail is asked for

    from indexer.decode import upright_rgb

    with Image.open(path) as image:
        if image.format != "JPEG" and max_pixels and image.width * image.height > max_pixels:
            raise TooManyPixels(f"{image.width} x {image.height} pixels")
        image.draft("RGB", (pixels, pixels))
        thumb = upright_rgb(image)
        thumb.thumbnail((pixels, pixels))
        buffer = io.BytesIO()
        thumb.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()
