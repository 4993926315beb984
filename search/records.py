"""The records of copy detection that cross modules: how one image of a pair maps into the other
(Verification), an accepted pair (Edge), a group around its keeper (DuplicateGroup) and each
member's link to the keeper (Member)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from store import ImageRecord

# A pair is verified when at least MIN_INLIERS distinct keypoints agree and they cover at least
# MIN_COVERAGE of one of the two images (search/copies/verify.py).
MIN_INLIERS = 6
MIN_COVERAGE = 0.1
# A frame whose shared part is at most this share of the other's reaches beyond it: it
# contains the other (a crop's source, or a picture the other is pasted on).
CONTAINS = 0.8


@dataclass(frozen=True)
class Verification:
    """How one image of a pair maps into the other."""

    inliers: int  # distinct keypoints in agreement (0: no transform found)
    coverage_a: float  # share of image a's frame covered by the inliers
    coverage_b: float
    scale: float  # b's frame / a's frame along the transform (1.0: same size)
    mirrored: bool  # found between a and the mirror image of b
    # Found against a region of one of them (a crop in its source, a photo pasted on a canvas),
    # given in whole frames (search/copies/verify.py: in_whole_frame).
    in_region: bool = False
    # The share of b's frame's border, where it lies inside a's frame, along which a's pixels
    # step sharply across it (b shown pasted on another picture in a); seam_b: a's in b.
    seam_a: float = 0.0
    seam_b: float = 0.0
    # The counter-clockwise turn, in degrees, that maps a's frame onto b's (-180 to 180).
    turn: float = 0.0

    @property
    def tilt(self) -> float | None:
        """How far the turn is off a right angle, in degrees (-45 to 45): a copy straightened
        or tilted by hand, not turned by 90 degrees. None when the pair did not verify."""
        if not self.verified:
            return None
        return (self.turn + 45.0) % 90.0 - 45.0

    @property
    def verified(self) -> bool:
        return self.inliers >= MIN_INLIERS and max(self.coverage_a, self.coverage_b) >= (
            MIN_COVERAGE
        )

    @property
    def how(self) -> str:
        """How a member linked by this check is said to be linked (Member.how)."""
        return "verified in a region" if self.in_region else "verified"


@dataclass(frozen=True)
class Edge:
    """An accepted copy pair of image ids."""

    a: int
    b: int
    score: float  # copy score
    cosine: float  # raw cosine of the stored vectors
    angle: int  # as Candidates.angle
    check: Verification | None  # None: accepted by its score alone
    # A pair accepted by its score (check None): the tilt its check measured all the same
    # (Verification.tilt; None: that check did not verify).
    scored_tilt: float | None = None

    @property
    def tilt(self) -> float | None:
        """How far the pair is turned off a right angle, as a check measured it (None: none
        verified it)."""
        return self.check.tilt if self.check is not None else self.scored_tilt


@dataclass(frozen=True)
class Member:
    record: ImageRecord
    score: float  # copy score to the keeper (1.0: the same bytes)
    cosine: float  # cosine of the stored vectors to the keeper's (1.0: the same bytes)
    # "same bytes", "score", "verified", "verified in a region" (Verification.how), or "via #ID":
    # found through member ID (score: of that pair), and verified against the keeper itself
    # when `inliers` is given
    how: str
    inliers: int | None = None  # verified pairs: matched keypoints


@dataclass(frozen=True)
class DuplicateGroup:
    kind: Literal["exact", "near"]
    keep: ImageRecord
    members: list[Member]  # the others, best match first; never includes the keeper
    reason: str = ""  # why the keeper won, in words
    edges: tuple[Edge, ...] = field(default=(), repr=False)  # the pairs inside the group

    @property
    def files(self) -> list[ImageRecord]:
        """The keeper, then the members."""
        return [self.keep, *(m.record for m in self.members)]

    @property
    def id(self) -> str:
        """A name made of its files alone (not of its keeper, nor of its place in a list): a
        review acts on a group only while it still has the files that were shown."""
        files = ",".join(str(i) for i in sorted(r.id for r in self.files))
        return hashlib.blake2b(files.encode(), digest_size=6).hexdigest()

    def with_keep(self, image_id: int, reason: str) -> DuplicateGroup:
        """The same files with another of them kept (a person's choice). Each other file is
        linked to the new keeper by their pair when the group holds one; otherwise through
        the file that was kept before, with its link to that file."""
        files = {r.id: r for r in self.files}
        keep = files[image_id]
        if keep.id == self.keep.id:
            return DuplicateGroup(self.kind, keep, self.members, reason, self.edges)
        pairs = {frozenset((e.a, e.b)): e for e in self.edges}
        same_bytes = {r.id for r in self.files if r.content_hash == keep.content_hash}
        old = {m.record.id: m for m in self.members}
        members = []
        for record in self.files:
            if record.id == keep.id:
                continue
            edge = pairs.get(frozenset((record.id, keep.id)))
            if record.id in same_bytes:
                members.append(Member(record, 1.0, 1.0, "same bytes"))
            elif edge is not None:
                inliers = edge.check.inliers if edge.check else None
                how = edge.check.how if edge.check else "score"
                members.append(Member(record, edge.score, edge.cosine, how, inliers))
            elif record.id == self.keep.id:
                was = old[keep.id]
                members.append(Member(record, was.score, was.cosine, was.how, was.inliers))
            else:
                was = old[record.id]
                members.append(Member(record, was.score, was.cosine, f"via #{self.keep.id}"))
        members.sort(key=lambda m: -m.score)
        return DuplicateGroup(self.kind, keep, members, reason, self.edges)


# Chooses the file to keep among candidate files (one or more contents) with the pairs known
# between them; returns the file and the reason in words.
Chooser = Callable[[Sequence[ImageRecord], Sequence[Edge]], tuple[ImageRecord, str]]
