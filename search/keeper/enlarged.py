"""Whether a larger copy is an enlargement of a smaller one: do the smaller one's pixels,
enlarged, explain the larger one's?

An enlargement holds nothing its source does not: enlarging the smaller copy again (by the
usual interpolations, the best of them) gives back the larger one's pixels up to JPEG noise.
A real original holds detail its reduced copy lost, however soft it is, and a photo's top
octave is not what tells them apart: soft originals of 200 pixels and 2x enlargements both
measured 0.3-0.4 there (the keeper once called such originals enlargements of their quarter
copies). Compared on the central crops every look keeps at full resolution
(look.central_square), on bench/copyset.py's development originals against their half and
quarter copies the residual was 0.034 and up (mostly above 0.1); enlargements of a photo's decoded
pixels by bicubic, bilinear, Lanczos or nearest interpolation, saved as JPEG q90,
0.008-0.038 (0.027 and below but for nearest-neighbour enlargements of a quarter-size copy);
enlargements of pixels other than the smaller file's own (each re-encoded apart) 0.03-0.08.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from search.keeper.look import Look, central_square

ENLARGED = 0.03  # residual (of the larger crop's mean contrast) up to which it is enlarged
# Up to this, enlarged when the larger copy's top octave is also flat (keeper.best._upscaled):
# an enlargement of other pixels than the file's (re-encoded twice) left 0.03-0.07.
AMBIGUOUS = 0.05
_METHODS = (
    Image.Resampling.BICUBIC,
    Image.Resampling.BILINEAR,
    Image.Resampling.LANCZOS,
    Image.Resampling.NEAREST,
)
Size = tuple[int, int]  # (width, height) as the look saw the file (upright)


def residual(small: Look, small_size: Size, large: Look, large_size: Size) -> float | None:
    """What of the larger copy's central crop the smaller copy, enlarged, does not explain:
    the mean absolute difference over the crop's mean contrast (0: all of it). None when the
    crops do not tell (a size that does not match its crop, a crop too small to compare)."""
    small_crop, large_crop = _grey(small, small_size), _grey(large, large_size)
    if small_crop is None or large_crop is None or min(large_crop.shape) < 16:
        return None
    (sw, sh), (lw, lh) = small_size, large_size
    rx, ry = lw / sw, lh / sh
    # Where the larger crop lies in the smaller copy's pixels, then in its crop.
    lx, ly, _ = central_square(lw, lh)
    sx, sy, _ = central_square(sw, sh)
    height, width = large_crop.shape
    box = (lx / rx - sx, ly / ry - sy, (lx + width) / rx - sx, (ly + height) / ry - sy)
    inside = small_crop.shape[1], small_crop.shape[0]
    # Up to a pixel over the edge: the two crops' corners are rounded apart (central_square).
    if box[0] < -1 or box[1] < -1 or box[2] > inside[0] + 1 or box[3] > inside[1] + 1:
        return None
    box = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], inside[0]), min(box[3], inside[1]))
    source = Image.fromarray(small_crop)
    contrast = float(np.abs(large_crop - large_crop.mean()).mean())
    if contrast < 1.0:  # a flat crop: nothing to tell
        return None
    found = []
    for method in _METHODS:
        again = np.asarray(source.resize((width, height), method, box=box), dtype=np.float32)
        found.append(float(np.abs(large_crop - again)[4:-4, 4:-4].mean()))
    return min(found) / contrast


def _grey(look: Look, size: Size) -> np.ndarray | None:
    """The look's central crop as grey levels, or None when `size` does not fit it."""
    width, height = size
    side = central_square(width, height)[2]
    if len(look.crop) != side * side * 3 or width * height != look.pixels:
        return None
    rgb = np.frombuffer(look.crop, np.uint8).reshape(side, side, 3).astype(np.float32)
    return (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)
