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
