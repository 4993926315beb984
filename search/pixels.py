"""Pixel analysis that copy verification and the keeper's look share, on OpenCV."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray


@cache
def opencv() -> Any:
    """OpenCV, on one thread in this process. Its thread pool must not exist when a process
    forks workers (search/per_content.py, decide.py): a forked child that reconfigures the
    inherited pool waits forever on its dead threads, and the workers already fill the cores
    (one thread each made SIFT 1.3x faster than two threads each, bench/RESULTS.md)."""
    import cv2

    cv2.setNumThreads(1)
    return cv2


def content_mask(grey: NDArray[np.uint8]) -> NDArray[np.uint8] | None:
    """255 on content, 0 on flat regions connected to the border (None: there are none)."""
    cv2 = opencv()

    height, width = grey.shape
    mask = np.zeros((height + 2, width + 2), np.uint8)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (255 << 8) | cv2.FLOODFILL_FIXED_RANGE
    step = max(4, min(height, width) // 24)
    xs, ys = range(0, width, step), range(0, height, step)
    border = [(x, 0) for x in xs] + [(x, height - 1) for x in xs]
    border += [(0, y) for y in ys] + [(width - 1, y) for y in ys]
    work = grey.copy()
    for x, y in border:
        if not mask[y + 1, x + 1]:
            cv2.floodFill(work, mask, (x, y), 0, loDiff=3, upDiff=3, flags=flags)
    padding = mask[1:-1, 1:-1]
    if padding.mean() / 255 < 0.002:
        return None
    content = np.where(padding == 0, 255, 0).astype(np.uint8)
    eroded: NDArray[np.uint8] = np.asarray(
        cv2.erode(content, np.ones((5, 5), np.uint8)), dtype=np.uint8
    )
    return eroded


SEAM_STEP = 1.5  # pixels either side of a border where seam() compares the frame
SEAM_SAMPLES = 24  # points along each side of a border
_MIN_SEEN = 6  # points of a side inside the frame for the side to count


def seam(grey: NDArray[np.uint8], corners: NDArray[np.float64]) -> float:
    """The share of a quadrilateral's border (`corners` (4, 2): x, y in `grey`'s pixels, in
    order), where it lies inside the frame, along which the pixels step sharply across it: the
    change across (SEAM_STEP inside against as far outside) more than twice the mean change
    beside it on either side (as far again) plus 6 grey levels. A picture pasted on another
    sits behind such a seam; a crop's border runs through one continuous photo (on
    bench/copyset.py's development part, at a quarter of verification's frame: pastes
    0.08-1.0, most over 0.65, crops at most 0.52). 0.0 when no side lies inside the frame."""
    cv2 = opencv()

    height, width = grey.shape
    starts, ends = corners, np.roll(corners, -1, axis=0)
    edge = ends - starts
    length = np.maximum(np.linalg.norm(edge, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-edge[:, 1], edge[:, 0]], axis=1) / length
    outwards = np.sum(normal * ((starts + ends) / 2 - corners.mean(axis=0)), axis=1) >= 0
    normal[~outwards] *= -1
    along = np.linspace(0.1, 0.9, SEAM_SAMPLES)[None, :, None]
    points = starts[:, None] + along * edge[:, None]  # (4 sides, samples, xy)
    offsets = np.stack([points + f * SEAM_STEP * normal[:, None] for f in (-3, -1, 1, 3)])
    inside = (offsets[..., 0] >= 0) & (offsets[..., 0] <= width - 1)
    inside &= (offsets[..., 1] >= 0) & (offsets[..., 1] <= height - 1)
    seen = inside.all(axis=0)  # (4, samples): all four points in the frame
    seen &= (seen.sum(axis=1, keepdims=True) >= _MIN_SEEN) & (length > 1e-6)
    if not seen.any():
        return 0.0
    xy = offsets[:, seen].reshape(-1, 2).astype(np.float32)
    values = cv2.remap(
        grey.astype(np.float32), xy[:, :1], xy[:, 1:], interpolation=cv2.INTER_LINEAR
    ).reshape(4, -1)
    inner2, inner1, outer1, outer2 = values
    step = np.abs(outer1 - inner1)
    beside = (np.abs(inner1 - inner2) + np.abs(outer1 - outer2)) / 2
    return float(np.mean(step > 2 * beside + 6))
