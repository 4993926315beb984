"""Small JPEG thumbnails of image files, upright (EXIF), for the HTML sheet and the server."""

from __future__ import annotations

import io


def jpeg_thumbnail(path: str, pixels: int) -> bytes:
    """A JPEG at most `pixels` on its longer side. Raises OSError (and PIL's errors) when the
    file cannot be read as an image."""
    from PIL import Image, ImageOps  # Pillow only when a thumbnail is asked for

    with Image.open(path) as image:
        image.draft("RGB", (pixels, pixels))
        thumb = ImageOps.exif_transpose(image).convert("RGB")
        thumb.thumbnail((pixels, pixels))
        buffer = io.BytesIO()
        thumb.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()
