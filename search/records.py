"""The records of copy detection that cross modules: how one image of a pair maps into the other
(Verification), an accepted pair (Edge), a group around its keeper (DuplicateGroup) and each
member's link to the keeper (Member)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from store import ImageRecord

# A pair is verified when at least MIN_INLIERS distinct keypoints agree and they cover at least
# MIN_COVERAGE of one of the two images (search/copies/verify.py).
MIN_INLIERS = 6
MIN_COVERAGE = 0.1


@dataclass(frozen=True)
class Verification:
    """How one image of a pair maps into the other."""

    inliers: int  # distinct keypoints in agreement (0: no transform found)
    coverage_a: float  # share of image a's frame covered by the inliers
    coverage_b: float
    scale: float  # b's frame / a's frame along the transform (1.0: same size)
    mirrored: bool  # found between a and the mirror image of b

    @property
    def verified(self) -> bool:
        return self.inliers >= MIN_INLIERS and max(self.coverage_a, self.coverage_b) >= (
            MIN_COVERAGE
        )


@dataclass(frozen=True)
class Edge:
    """An accepted copy pair of image ids."""

    a: int
    b: int
    score: float  # copy score
    cosine: float  # raw cosine of the stored vectors
    angle: int  # as Candidates.angle
    check: Verification | None  # None: accepted by its score alone


@dataclass(frozen=True)
class Member:
    record: ImageRecord
    score: float  # copy score to the keeper (1.0: the same bytes)
    cosine: float  # cosine of the stored vectors to the keeper's (1.0: the same bytes)
    how: str  # "same bytes", "score", "verified", "via #ID" (reached through another member)
    inliers: int | None = None  # verified pairs: matched keypoints


@dataclass(frozen=True)
class DuplicateGroup:
    kind: Literal["exact", "near"]
    keep: ImageRecord
    members: list[Member]  # the others, best match first; never includes the keeper
    reason: str = ""  # why the keeper won, in words
    edges: tuple[Edge, ...] = field(default=(), repr=False)  # the pairs inside the group


# Chooses the file to keep among candidate files (one or more contents) with the pairs known
# between them; returns the file and the reason in words.
Chooser = Callable[[Sequence[ImageRecord], Sequence[Edge]], tuple[ImageRecord, str]]
