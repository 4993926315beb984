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
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from search.copies.candidates import ROTATED, VIEWS, Candidates
from search.copies.verify import (
    FEATURES_VERSION,
    Features,
    Verification,
    features_of,
    verify,
    worker_count,
)
from store import ImageRecord

log = logging.getLogger("imgsearch.search")
PARALLEL_FROM = 48  # images: below this, one process extracts features faster than a pool


@dataclass(frozen=True)
class Thresholds:
    accept: float  # a copy score at least this is a copy
    reject: float  # below this (found by the global vector alone), not a copy
    verify: bool = True  # check the band with local features


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
class Decided:
    edges: list[Edge]
    checked: int  # pairs verified with local features
    unreadable: list[str]  # files that could not be read again: their pairs stayed unverified
    feature_seconds: float
    verify_seconds: float


class FeatureCache:
    """Local features by content hash: the catalog's cache first, then the files."""

    def __init__(
        self,
        load: Callable[[list[str]], dict[str, bytes]],
        save: Callable[[dict[str, bytes]], object],
    ) -> None:
        self.load, self.save = load, save

    def get(self, records: Iterable[ImageRecord]) -> tuple[dict[int, Features], list[str]]:
        """Features by image id, and the paths that could not be read."""
        wanted = {r.id: r for r in records}
        hashes = sorted({r.content_hash for r in wanted.values()})
        cached = {h: Features.from_bytes(d) for h, d in self.load(hashes).items()}
        missing = [r for r in wanted.values() if r.content_hash not in cached]
        fresh, failed = _extract([r.path for r in missing])
        made = {r.content_hash: fresh[r.path] for r in missing if r.path in fresh}
        if made:
            self.save({h: f.to_bytes() for h, f in made.items()})
        cached.update(made)
        found = {i: cached[r.content_hash] for i, r in wanted.items() if r.content_hash in cached}
        return found, failed


def _extract(paths: list[str]) -> tuple[dict[str, Features], list[str]]:
    found: dict[str, Features] = {}
    failed: list[str] = []
    if len(paths) >= PARALLEL_FROM and worker_count() > 1:
        with ProcessPoolExecutor(worker_count()) as pool:
            results = list(pool.map(_try_features, paths, chunksize=8))
    else:
        results = [_try_features(path) for path in paths]
    for path, result in zip(paths, results, strict=True):
        if result is None:
            failed.append(path)
        else:
            found[path] = result
    return found, failed


def _try_features(path: str) -> Features | None:
    try:
        return features_of(path)
    except Exception:
        return None


def decide(
    candidates: Candidates,
    records: dict[int, ImageRecord],
    thresholds: Thresholds,
    cache: FeatureCache,
) -> Decided:
    """The copies among `candidates` (records: by image id, for paths and hashes)."""
    ids, pairs = candidates.ids, candidates.pairs
    accepted = candidates.score >= thresholds.accept
    special = (candidates.found_by & (VIEWS | ROTATED)) > 0
    band = ~accepted & ((candidates.score >= thresholds.reject) | special)
    edges = [_edge(candidates, int(m), None) for m in np.nonzero(accepted)[0]]
    if not thresholds.verify or not band.any():
        return Decided(edges, 0, [], 0.0, 0.0)
    started = time.perf_counter()
    involved = np.unique(pairs[band].ravel())
    features, unreadable = cache.get(records[int(ids[p])] for p in involved)
    for path in unreadable:
        log.warning("could not read %s again: its candidate pairs stay unverified", path)
    feature_seconds = time.perf_counter() - started
    started = time.perf_counter()
    checked = 0
    mirrors: dict[int, Features | None] = {}
    for m in np.nonzero(band)[0]:
        a, b = int(ids[pairs[m, 0]]), int(ids[pairs[m, 1]])
        if a not in features or b not in features:
            continue
        checked += 1
        found = verify(features[a], features[b])
        if not found.verified:  # a mirrored copy: against the mirror image of b
            mirror = _mirror(b, records, mirrors)
            if mirror is not None:
                flipped = verify(features[a], mirror, mirrored=True)
                found = flipped if flipped.inliers > found.inliers else found
        if found.verified:
            edges.append(_edge(candidates, int(m), found))
    return Decided(edges, checked, unreadable, feature_seconds, time.perf_counter() - started)


def _mirror(
    image_id: int, records: dict[int, ImageRecord], made: dict[int, Features | None]
) -> Features | None:
    if image_id not in made:
        try:
            made[image_id] = features_of(records[image_id].path, mirror=True)
        except Exception:
            made[image_id] = None
    return made[image_id]


def _edge(candidates: Candidates, m: int, check: Verification | None) -> Edge:
    a, b = candidates.pairs[m]
    return Edge(
        int(candidates.ids[a]),
        int(candidates.ids[b]),
        float(candidates.score[m]),
        float(candidates.cosine[m]),
        int(candidates.angle[m]),
        check,
    )


__all__ = ["FEATURES_VERSION", "Decided", "Edge", "FeatureCache", "Thresholds", "decide"]
