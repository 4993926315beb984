"""Copies first: a query's candidates, checked with local features, verified ones ranked first.

A crop of an indexed photo, or a photo shown pasted small on a canvas, often has its source
among the top candidates of the global vector (and of the query's regional views) but not at
rank 1. The top CANDIDATES candidates are verified geometrically against the query
(search/copies/verify.py, features cached by content); those that verify move ahead of the
others, most matched keypoints first. Cosines stay the scores reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from search.copies.verify import LOCAL_FEATURES, Features, features_or_none, verify
from search.per_content import per_content
from store import Hit, ImageRecord, Store

CANDIDATES = 20
log = logging.getLogger("imgsearch.search")


@dataclass(frozen=True)
class Checked:
    hit: Hit
    inliers: int | None  # None: not checked


def rerank(store: Store, query: Features | None, hits: Sequence[Hit],
           records: dict[int, ImageRecord]) -> list[Checked]:  # fmt: skip
    """`hits` (best first) with the verified copies of the query moved to the front."""
    if query is None or not hits:
        return [Checked(h, None) for h in hits]
    head = [h for h in hits[:CANDIDATES] if h.id in records]
    features = candidate_features(store, [records[h.id] for h in head])
    checked = []
    for hit in hits:
        found = features.get(hit.id) if hit in head else None
        inliers = None
        if found is not None:
            check = verify(query, found)
            inliers = check.inliers if check.verified else 0
        checked.append(Checked(hit, inliers))
    verified = sorted((c for c in checked if c.inliers), key=lambda c: -(c.inliers or 0))
    return verified + [c for c in checked if not c.inliers]


def candidate_features(store: Store, records: Sequence[ImageRecord]) -> dict[int, Features]:
    """Features of indexed files: from the catalog's cache, else from the files (and cached)."""
    found, failed = per_content(store, LOCAL_FEATURES, records)
    for path in failed:
        log.info("could not read %s to verify it", path)
    return found


def query_features(path: str) -> Features | None:
    return features_or_none(path)
