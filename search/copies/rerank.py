"""Copies first: a query's candidates, checked with local features, verified ones ranked first.

A crop of an indexed photo, or a photo shown pasted small on a canvas, often has its source
among the top candidates of the global vector (and of the query's regional views) but not at
rank 1. The top CANDIDATES candidates are verified geometrically against the query
(search/copies/verify.py, features cached by content); those that verify move ahead of the
others, most matched keypoints first. A candidate that fails on whole frames but whose regional
view matches the query better than its whole (the query is a crop of it), or that matches one
of the query's views better (it is pasted in the query), is checked again in that region, as
`dupes` does (search/copies/decide.py); a query that verified with none is checked again in
the region, its own or a candidate's, whose pixels look most like the other whole. Cosines
stay the scores reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.decode import VIEW_BOXES
from search.copies.decide import SECOND_LOOK_LIKENESS, SECOND_LOOK_PAIRS
from search.copies.verify import (
    LOCAL_FEATURES,
    REGION_FEATURES,
    Features,
    features_or_none,
    in_whole_frame,
    likeliest_region,
    verify,
)
from search.per_content import per_content, per_contents
from store import Hit, ImageRecord, Store, Vector, Vectors

CANDIDATES = 20
REGION_TRIES = 5  # candidates failing on whole frames that are checked in a region, at most
log = logging.getLogger("imgsearch.search")


@dataclass(frozen=True)
class Query:
    """One query: its unit vector (d,), its views' (R, d) if any, its file for verification."""

    vector: Vector
    views: Vectors | None
    path: str | None


@dataclass(frozen=True)
class Checked:
    hit: Hit
    inliers: int | None  # None: not checked


def rerank(
    store: Store, query: Query, hits: Sequence[Hit], records: dict[int, ImageRecord]
) -> list[Checked]:
    """`hits` (best first) with the verified copies of the query moved to the front."""
    mine = features_or_none(query.path) if query.path is not None else None
    if mine is None or not hits:
        return [Checked(h, None) for h in hits]
    head = [h for h in hits[:CANDIDATES] if h.id in records]
    features = candidate_features(store, [records[h.id] for h in head])
    inliers: dict[int, int] = {}
    for hit in head:
        if hit.id in features:
            check = verify(mine, features[hit.id])
            inliers[hit.id] = check.inliers if check.verified else 0
    failed = [h for h in head if inliers.get(h.id) == 0]
    in_regions, tried = _in_regions(store, query, mine, failed, records)
    inliers |= in_regions
    if not any(inliers.values()):
        again = _second_look(mine, features, failed, tried)
        inliers |= _check(store, query, mine, again, records)
    checked = [Checked(hit, inliers.get(hit.id)) for hit in hits]
    verified = sorted((c for c in checked if c.inliers), key=lambda c: -(c.inliers or 0))
    return verified + [c for c in checked if not c.inliers]


@dataclass(frozen=True)
class _Try:
    hit: Hit
    region: int  # of VIEW_BOXES
    theirs: bool  # the region is the candidate's (the query is a crop of it); else the query's


def _in_regions(
    store: Store, query: Query, mine: Features, hits: list[Hit], records: dict[int, ImageRecord]
) -> tuple[dict[int, int], list[_Try]]:
    """Inliers of the candidates that verify in a region: the query's whole against the
    candidate's best region, or the candidate's whole against the query's best region; and
    the regions tried."""
    tries = _region_tries(store, query, hits)[:REGION_TRIES]
    return _check(store, query, mine, tries, records), tries


def _second_look(
    mine: Features, wholes: dict[int, Features], hits: list[Hit], tried: list[_Try]
) -> list[_Try]:
    """For a query that verified with none of its candidates: the candidates to check again
    in the region, theirs or the query's, whose pixels look most like the other whole (at
    least SECOND_LOOK_LIKENESS; the SECOND_LOOK_PAIRS likest), as `dupes` looks again at an
    image joined to nothing (search/copies/decide.py)."""
    tries = []
    for hit in (h for h in hits if h.id in wholes):
        tried_in = {
            theirs: {t.region for t in tried if t.hit.id == hit.id and t.theirs == theirs}
            for theirs in (True, False)
        }  # not again where _in_regions looked
        theirs = likeliest_region(mine, wholes[hit.id], tried_in[True])  # a crop of it
        ours = likeliest_region(wholes[hit.id], mine, tried_in[False])  # pasted in the query
        crop = theirs[1] >= ours[1]
        region, likeness = theirs if crop else ours
        if likeness >= SECOND_LOOK_LIKENESS:
            tries.append((likeness, _Try(hit, region, crop)))
    tries.sort(key=lambda t: -t[0])
    return [t for _, t in tries[:SECOND_LOOK_PAIRS]]


def _check(
    store: Store, query: Query, mine: Features, tries: list[_Try], records: dict[int, ImageRecord]
) -> dict[int, int]:
    """Inliers of the tries that verify, each in its region."""
    theirs = sorted({t.region for t in tries if t.theirs})
    orders = [
        (REGION_FEATURES[r], [records[t.hit.id] for t in tries if t.theirs and t.region == r])
        for r in theirs
    ]
    regions: dict[tuple[int, int], Features] = {}  # (image id, region) -> features
    for r, (made, _) in zip(theirs, per_contents(store, orders), strict=True):
        regions |= {(i, r): f for i, f in made.items()}
    wholes = candidate_features(store, [records[t.hit.id] for t in tries if not t.theirs])
    ours = {
        r: features_or_none(query.path or "", box=VIEW_BOXES[r])
        for r in {t.region for t in tries if not t.theirs}
    }
    inliers = {}
    for t in tries:
        a = mine if t.theirs else ours[t.region]
        b = regions.get((t.hit.id, t.region)) if t.theirs else wholes.get(t.hit.id)
        if a is None or b is None:
            continue
        check = in_whole_frame(verify(a, b), VIEW_BOXES[t.region], b_holds=t.theirs)
        if check.verified:
            inliers[t.hit.id] = check.inliers
    return inliers


def _region_tries(store: Store, query: Query, hits: list[Hit]) -> list[_Try]:
    """For each candidate, the region (its own, or the query's) that matches the other's whole
    best, when it matches better than the two wholes do: a crop or a paste."""
    ids = [h.id for h in hits]
    views = store.catalog.views(ids)
    stored, vectors = store.catalog.vectors(ids)
    whole = {int(i): v for i, v in zip(stored, vectors, strict=True)}
    none = np.full(1, -np.inf, dtype=np.float32)
    tries = []
    for hit in hits:
        in_theirs = views[hit.id] @ query.vector if hit.id in views else none
        in_ours = (
            query.views @ whole[hit.id] if query.views is not None and hit.id in whole else none
        )
        crop = bool(in_theirs.max() >= in_ours.max())
        best = in_theirs if crop else in_ours
        if float(best.max()) > hit.score:
            tries.append(_Try(hit, int(best.argmax()), crop))
    return tries


def candidate_features(store: Store, records: Sequence[ImageRecord]) -> dict[int, Features]:
    """Features of indexed files: from the catalog's cache, else from the files (and cached)."""
    found, failed = per_content(store, LOCAL_FEATURES, records)
    for path in failed:
        log.info("could not read %s to verify it", path)
    return found
