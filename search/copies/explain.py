"""Why two files are copies, drawn: the keypoints that agree and where one image's frame lands
in the other, for the review page's side-by-side view (search/server/compare.py).

The same checks as `dupes` makes (search/copies/decide.py): the whole images, then the mirror
image, then each region of either image (a crop, or a copy pasted into a bigger picture), with
the same verify() and in_whole_frame(). Everything is returned as fractions of each image's
upright frame, so a page can draw it over pictures of any size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from indexer.decode import VIEW_BOXES, Box
from search.copies.verify import (
    LOCAL_FEATURES,
    NO_MATCH,
    REGION_FEATURES,
    Features,
    features_of,
    fit,
    in_whole_frame,
    judge,
)
from search.per_content import per_content
from search.records import Verification
from store import ImageRecord, Store

Point = tuple[float, float]  # (x, y), fractions of an image's width and height
WHOLE: Box = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Explained:
    """How image a maps into image b (both upright)."""

    check: Verification  # as `dupes` would judge the pair, in whole frames
    points_a: list[Point]  # the keypoints in agreement, in a
    points_b: list[Point]  # and the same keypoints in b
    frame_in_b: list[Point]  # the corners of a's matched part, mapped into b
    region: Box  # the part of a (region_of "a") or of b ("b") that the match was found in
    region_of: str  # "a", "b", or "" for the whole images


# An image's local features, whole (region None) or of region r of VIEW_BOXES. Raises OSError
# (or PIL's errors) when the file cannot be read.
FeaturesOf = Callable[[ImageRecord, int | None], Features]


def from_file(record: ImageRecord, region: int | None) -> Features:
    """Features made from the file now (the review's compare: nothing cached to wait on)."""
    return features_of(record.path, None if region is None else VIEW_BOXES[region])


def cached_in(store: Store) -> FeaturesOf:
    """Features from the catalog's content cache, made and saved there when missing (what
    `dupes` verifies with: a second run reads no image)."""

    def features(record: ImageRecord, region: int | None) -> Features:
        recipe = LOCAL_FEATURES if region is None else REGION_FEATURES[region]
        found = per_content(store, recipe, [record])[0].get(record.id)
        if found is None:
            raise OSError(f"{record.path}: cannot be read")
        return found

    return features


def explain(a: ImageRecord, b: ImageRecord, features: FeaturesOf = from_file) -> Explained:
    """The best of the checks `dupes` makes between two files (the most keypoints in
    agreement among the verified ones, else among all). Raises OSError (or PIL's errors) when
    either cannot be read."""
    whole_a, whole_b = features(a, None), features(b, None)
    tries = [
        _attempt(whole_a, whole_b, WHOLE, WHOLE, mirrored=False),
        _attempt(whole_a, whole_b.mirrored(), WHOLE, WHOLE, mirrored=True),
    ]
    for region, box in enumerate(VIEW_BOXES):
        tries.append(_attempt(whole_a, features(b, region), WHOLE, box, mirrored=False))
        tries.append(_attempt(features(a, region), whole_b, box, WHOLE, mirrored=False))
    verified = [t for t in tries if t.check.verified]
    return max(verified or tries, key=lambda t: t.check.inliers)


def confirming(features: FeaturesOf) -> Callable[[ImageRecord, ImageRecord], Verification | None]:
    """groups.py's `confirm`: a pair checked directly, as `dupes` checks one; None when either
    file cannot be read."""

    def confirm(a: ImageRecord, b: ImageRecord) -> Verification | None:
        try:
            return explain(a, b, features).check
        except Exception:  # PIL and OpenCV raise many kinds for a changed or broken file
            return None

    return confirm


def _attempt(a: Features, b: Features, box_a: Box, box_b: Box, mirrored: bool) -> Explained:
    region_of = "b" if box_b != WHOLE else "a" if box_a != WHOLE else ""
    found = fit(a, b)
    check = judge(found, a, b, mirrored)
    if region_of:
        check = in_whole_frame(check, box_b if region_of == "b" else box_a, region_of == "b")
    if found is None:
        return Explained(NO_MATCH, [], [], [], box_b if region_of == "b" else box_a, region_of)
    height, width = a.shape
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    mapped = corners @ found.transform[:, :2].T + found.transform[:, 2]
    return Explained(
        check,
        _fractions(found.src, a, box_a, False),
        _fractions(found.dst, b, box_b, mirrored),
        _fractions(mapped, b, box_b, mirrored),
        box_b if region_of == "b" else box_a,
        region_of,
    )


def _fractions(
    points: NDArray[np.floating], frame: Features, box: Box, mirrored: bool
) -> list[Point]:
    """Pixels of a feature frame (of `box` of an image; mirrored: of its mirror) as fractions
    of the whole image."""
    height, width = frame.shape
    x = points[:, 0] / width
    if mirrored:  # the mirror's x, back in the image itself
        x = (width - 1 - points[:, 0]) / width
    y = points[:, 1] / height
    x = box[0] + x * (box[2] - box[0])
    y = box[1] + y * (box[3] - box[1])
    return [(round(float(p), 4), round(float(q), 4)) for p, q in zip(x, y, strict=True)]


__all__ = ["Explained", "cached_in", "confirming", "explain", "from_file"]
