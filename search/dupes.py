"""Exact and near duplicates among indexed images, grouped around the copy to keep.

Exact duplicates share a content hash. Near duplicates have cosine >= threshold, found by FAISS
range search over one representative per content. Pairs are merged with union-find, then each
connected component is split around keepers so that chains cannot glue far images together:
the best record of the component (by the keep policy) becomes a keeper, the records that match
*the keeper itself* join its group, and the rest of the component is grouped again the same way.
A≈B≈C with A far from C therefore gives {A, B} and leaves C out (or in a group of its own).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from indexer.options import EmbedOptions
from search.keep import LARGEST, KeepPolicy
from search.query import index_embedder
from store import ImageRecord, Store

# Calibrated with bench/calibrate_dupes.py (bench/RESULTS.md): the best recall of edited copies
# at a pair precision >= 0.99. A model without an entry needs --threshold.
DEFAULT_THRESHOLDS = {"effnet-lite0": 0.94}
FALLBACK_THRESHOLD = 0.90


@dataclass(frozen=True)
class Member:
    record: ImageRecord
    score: float  # cosine similarity to the keeper (1.0 for exact copies)


@dataclass(frozen=True)
class DuplicateGroup:
    kind: Literal["exact", "near"]
    keep: ImageRecord
    members: list[Member]  # the others, best match first; never includes the keeper


@dataclass(frozen=True)
class DupeOptions:
    threshold: float | None = None  # None: the model's calibrated default
    exact_only: bool = False
    keep: KeepPolicy = LARGEST
    rotations: bool = False  # also find copies turned by 90/180/270 degrees (runs the model)
    embedding: EmbedOptions = field(default_factory=EmbedOptions)


def default_threshold(model: str) -> float:
    return DEFAULT_THRESHOLDS.get(model, FALLBACK_THRESHOLD)


def find_duplicates(store: Store, options: DupeOptions) -> tuple[float, list[DuplicateGroup]]:
    """The threshold used and the groups: exact ones first, then near ones, largest first."""
    threshold = (
        options.threshold if options.threshold is not None else default_threshold(store.meta.model)
    )
    records = {r.id: r for r in store.file_states().values()}
    by_hash: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records.values():
        by_hash[record.content_hash].append(record)
    groups = [
        DuplicateGroup("exact", keep, [Member(r, 1.0) for r in same if r is not keep])
        for same in by_hash.values()
        if len(same) > 1
        for keep in [options.keep.choose(same)]
    ]
    if not options.exact_only:
        # One representative per content: exact copies are already grouped above.
        representatives = {h: options.keep.choose(same) for h, same in by_hash.items()}
        ids = [r.id for r in representatives.values()]
        found = store.similar_pairs(threshold, ids)
        if options.rotations:
            found += rotated_pairs(store, list(representatives.values()), threshold, options)
        ignored = store.ignored_pairs()
        pairs = [
            (a, b, score)
            for a, b, score in found
            if _hash_pair(records[a], records[b]) not in ignored
        ]
        groups += near_groups(pairs, records, options.keep)
    groups.sort(key=lambda g: (g.kind != "exact", -len(g.members), g.keep.path))
    return threshold, groups


def near_groups(
    pairs: Iterable[tuple[int, int, float]], records: dict[int, ImageRecord], keep: KeepPolicy
) -> list[DuplicateGroup]:
    """Groups from scored pairs: components split around keepers (see the module docstring)."""
    score: dict[tuple[int, int], float] = {}
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, s in pairs:
        best = max(s, score.get((a, b), s))  # a pair may come both upright and rotated
        score[(a, b)] = score[(b, a)] = best
        parent[find(a)] = find(b)
    components: dict[int, list[int]] = defaultdict(list)
    for node in parent:
        components[find(node)].append(node)

    groups = []
    for nodes in components.values():
        remaining = {records[n].id: records[n] for n in nodes}
        while len(remaining) > 1:
            keeper = keep.choose(list(remaining.values()))
            members = [
                Member(r, score[(keeper.id, r.id)])
                for r in remaining.values()
                if (keeper.id, r.id) in score
            ]
            del remaining[keeper.id]
            if not members:
                continue  # matches nothing left: it stays alone
            members.sort(key=lambda m: (-m.score, m.record.path))
            groups.append(DuplicateGroup("near", keeper, members))
            for m in members:
                del remaining[m.record.id]
    return groups


def rotated_pairs(
    store: Store, images: list[ImageRecord], threshold: float, options: DupeOptions
) -> list[tuple[int, int, float]]:
    """Pairs where one image, turned by 90/180/270 degrees, matches the other upright."""
    from indexer.pipeline import embed_rotations

    embedder = index_embedder(store, options.embedding)
    rows, vectors = embed_rotations(
        [r.path for r in images], embedder, options.embedding.batch_size
    )
    query_ids = [images[row].id for row in rows]
    found = store.pairs_with(query_ids, vectors, threshold, [r.id for r in images])
    return [(min(a, b), max(a, b), s) for a, b, s in found]


def _hash_pair(a: ImageRecord, b: ImageRecord) -> tuple[str, str]:
    return (a.content_hash, b.content_hash) if a.content_hash < b.content_hash else (
        b.content_hash, a.content_hash)  # fmt: skip
