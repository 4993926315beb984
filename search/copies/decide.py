"""Stage 2 of copy detection: which candidates are copies.

A candidate whose copy score reaches the model's `accept` threshold is a copy. One in the
uncertain band (from `reject` up), and every candidate found through a regional view or a
rotation, is a copy only if local features verify it geometrically (search/copies/verify.py).
Only candidates are verified, so the cost follows them, not N^2. Features are cached in the
catalog by content hash (when this process may write it), so a re-run verifies without
decoding again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from search.copies.candidates import VIEW_REJECT, Candidates
from search.copies.verify import (
    FEATURES_VERSION,
    Features,
    Verification,
    features_or_none,
    verify,
)
from search.per_content import worker_count
from search.steps import SILENT, Advance, Steps
from store import ImageRecord

log = logging.getLogger("imgsearch.search")
MIRROR_FROM = 0.5  # a mirrored copy scores high globally: only such pairs try the mirror
PARALLEL_PAIRS = 512
CHUNK_PAIRS = 128  # pairs a worker verifies per task


@dataclass(frozen=True)
class Thresholds:
    accept: float  # a copy score at least this is a copy (global, or with one image turned)
    reject: float  # below this (global, or turned), not a copy
    verify: bool = True  # check the band with local features
    # Candidates found through views: verified from this (candidates holds none below VIEW_REJECT)
    view_reject: float = VIEW_REJECT


@dataclass(frozen=True)
class Edge:
    """An accepted copy pair of image ids."""

    a: int
    b: int
    score: float  # copy score
    cosine: float  # raw cosine of the stored vectors
    angle: int  # as Candidates.angle
    check: Verification | None  # None: accepted by its score alone


# Local features of records, by image id, and the paths that could not be read
# (search/per_content.py, with the catalog's cache).
FeaturesFor = Callable[[list[ImageRecord]], tuple[dict[int, Features], list[str]]]


@dataclass(frozen=True)
class Decided:
    edges: list[Edge]
    checked: int  # pairs verified with local features
    unreadable: list[str]  # files that could not be read again: their pairs stayed unverified
    feature_seconds: float
    verify_seconds: float


def decide(
    candidates: Candidates,
    records: dict[int, ImageRecord],
    thresholds: Thresholds,
    features_for: FeaturesFor,
    steps: Steps = SILENT,
) -> Decided:
    """The copies among `candidates` (records: by image id, for paths and hashes)."""
    ids, pairs = candidates.ids, candidates.pairs
    best = np.maximum(candidates.score, candidates.turn_score)
    accepted = best >= thresholds.accept
    band = ~accepted & (
        (best >= thresholds.reject) | (candidates.view_score >= thresholds.view_reject)
    )
    edges = [_edge(candidates, int(m), None) for m in np.nonzero(accepted)[0]]
    if not thresholds.verify or not band.any():
        return Decided(edges, 0, [], 0.0, 0.0)
    started = time.perf_counter()
    involved = np.unique(pairs[band].ravel())
    features, unreadable = features_for([records[int(ids[p])] for p in involved])
    for path in unreadable:
        log.warning("could not read %s again: its candidate pairs stay unverified", path)
    feature_seconds = time.perf_counter() - started
    started = time.perf_counter()
    jobs = []
    for m in np.nonzero(band)[0]:
        a, b = int(ids[pairs[m, 0]]), int(ids[pairs[m, 1]])
        if a in features and b in features:
            mirror = records[b].path if best[m] >= MIRROR_FROM else None
            jobs.append((int(m), a, b, mirror))
    with steps.step("verifying candidate pairs", len(jobs)) as advance:
        found = _verify_all(jobs, features, advance)
    edges += [
        _edge(candidates, m, check)
        for (m, _, _, _), check in zip(jobs, found, strict=True)
        if check.verified
    ]
    return Decided(edges, len(jobs), unreadable, feature_seconds, time.perf_counter() - started)


Job = tuple[int, int, int, str | None]  # (candidate row, image a, image b, b's path to mirror)
_FEATURES: dict[int, Features] = {}  # what forked verification workers read (copy-on-write)


def _verify_all(jobs: list[Job], features: dict[int, Features],
                advance: Advance) -> list[Verification]:  # fmt: skip
    """Verify every job, in parallel (forked workers share `features` without copying)."""
    global _FEATURES
    _FEATURES = features
    chunks = [jobs[i : i + CHUNK_PAIRS] for i in range(0, len(jobs), CHUNK_PAIRS)]
    found: list[Verification] = []
    try:
        if len(jobs) >= PARALLEL_PAIRS and worker_count() > 1 and _can_fork():
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(worker_count()) as pool:
                for part in pool.imap(_verify_chunk, chunks):
                    found += part
                    advance(len(part))
            return found
        for chunk in chunks:
            found += _verify_chunk(chunk)
            advance(len(chunk))
        return found
    finally:
        _FEATURES = {}


def _verify_chunk(jobs: list[Job]) -> list[Verification]:
    mirrors: dict[str, Features | None] = {}
    found = []
    for _, a, b, mirror_path in jobs:
        check = verify(_FEATURES[a], _FEATURES[b])
        if not check.verified and mirror_path is not None:  # a mirrored copy
            if mirror_path not in mirrors:
                mirrors[mirror_path] = features_or_none(mirror_path, mirror=True)
            mirror = mirrors[mirror_path]
            if mirror is not None:
                flipped = verify(_FEATURES[a], mirror, mirrored=True)
                check = flipped if flipped.inliers > check.inliers else check
        found.append(check)
    return found


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _edge(candidates: Candidates, m: int, check: Verification | None) -> Edge:
    a, b = candidates.pairs[m]
    return Edge(
        int(candidates.ids[a]),
        int(candidates.ids[b]),
        max(float(candidates.score[m]), float(candidates.turn_score[m])),
        float(candidates.cosine[m]),
        int(candidates.angle[m]),
        check,
    )


__all__ = ["FEATURES_VERSION", "Decided", "Edge", "FeaturesFor", "Thresholds", "decide"]
