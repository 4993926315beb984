"""Copy candidates from the stored vectors, with scores that mean the same everywhere.

Stage 1 of copy detection. The vectors of one image per content are centred (the collection's
mean removed, then L2-normalised) and each image's NEIGHBOURS nearest others are found. A pair's
copy score is its centred cosine minus BETA times the mean of the two images' densities, where
an image's density is its cosine to its DENSITY_K-th neighbour: in a crowd of look-alikes (star
fields, product shots, bursts) two images must be much closer than elsewhere to count. This is
the score normalisation of the Image Similarity Challenge 2021 winners and SSCD.

Regional views (the quadrants and centre of each image, stored at index time) add candidates a
global vector misses: an image whose whole matches another's view (a crop, a corner) and a view
that matches another's whole (a photo pasted small on a canvas); each pair records which view
matched, for stage 2 to look there. Rotated descriptors
(`dupes --rotations`) add pairs where one image turned by 90/180/270 degrees matches the other.
The joins run shard by shard over k-means cells (search/copies/join.py): one shard in this
process locally, many in Ray tasks with `dupes --engine ray`, with the same pairs either way.
Measured on bench/copydetect.py (bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from search.copies.cellviews import ViewSource, as_source, place_views, scratch
from search.copies.join import (
    BETA,
    DENSITY_K,
    NEIGHBOURS,
    VIEW_NEIGHBOURS,
    VIEW_PROBES,
    VIEW_REJECT,
    Engine,
    Nearests,
    Placed,
    centred,
    nearest_shard,
    place,
    shelved,
    spans,
    view_shard,
)
from search.copies.join import shards as join_shards
from store import EXACT_LIMIT, Cells, Gpu, Vectors, cells_of

AUDIT_SAMPLE = 200  # images whose neighbours are found again by exact search, to audit recall

GLOBAL, VIEWS, ROTATED = 1, 2, 4  # how a candidate was found (bits)
REDUCE_PARTS = 8  # the candidate rows are reduced to one per pair this many parts at a time
# A row is dropped below a floor by the join's cosine; the pair's score is computed again at
# the end, and may differ in its last bits: rows this close below the floor stay.
FLOOR_SLACK = 1e-4


@dataclass(frozen=True)
class Candidates:
    """Candidate pairs among `ids` (one image per content), as positions a < b into `ids`."""

    ids: NDArray[np.int64]  # (n,) image ids
    pairs: NDArray[np.int64]  # (m, 2) positions, a < b
    cosine: NDArray[np.float32]  # (m,) raw cosine of the two stored vectors
    score: NDArray[np.float32]  # (m,) copy score of the two global vectors
    view_score: NDArray[np.float32]  # (m,) best whole-against-view copy score (-inf: none)
    turn_score: NDArray[np.float32]  # (m,) best copy score with one image turned (-inf: none)
    found_by: NDArray[np.uint8]  # (m,) GLOBAL | VIEWS | ROTATED
    # (m,) the counter-clockwise turn that made the pair match: positive, b turned matches a;
    # negative, a turned matches b; 0 upright.
    angle: NDArray[np.int16]
    # (m,) the regional view behind `view_score`: r + 1 when a's whole matched b's view r
    # (indexer.decode.VIEW_BOXES[r]), -(r + 1) when b's whole matched a's view r; 0 none.
    region: NDArray[np.int8]
    # Of the NEIGHBOURS nearest others of AUDIT_SAMPLE images drawn at random (exact search),
    # the share the approximate join found: what the approximation cost (1.0 when exact).
    recall: float = 1.0


@dataclass(frozen=True)
class Descriptors:
    """What candidates are made from: unit vectors (n, d), optional views (n, R, d), and
    optional rotated descriptors: `rotated_of` (m,) positions in `ids`, `rotated_angle` (m,)
    counter-clockwise degrees, `rotated` (m, d)."""

    ids: NDArray[np.int64]
    vectors: Vectors
    # (n, R, d): float16 as stored or float32, in memory or read a chunk at a time
    views: NDArray[np.floating] | ViewSource | None = None
    rotated: Vectors | None = None
    rotated_of: NDArray[np.int64] | None = None
    rotated_angle: NDArray[np.int64] | None = None
    # The stage may centre `vectors` and `rotated` in place (float32, writeable): its caller
    # reads them no more. One float32 copy of the collection fewer (1.5 GB at 1M x 384-d).
    in_place: bool = False


class _Edges:
    """Candidate pairs as they are found (vectorised), reduced to one row per pair at the end."""

    def __init__(self, density: NDArray[np.float32]) -> None:
        self.density = density
        self.parts: list[tuple[NDArray[np.generic], ...]] = []

    def add(
        self,
        a: NDArray[np.integer[Any]],
        b: NDArray[np.integer[Any]],
        cosine: NDArray[np.float32],
        how: int,
        detail: NDArray[np.integer[Any]] | int = 0,
        floor: float = -np.inf,
    ) -> None:
        """Pairs (a[i], b[i]) at centred cosine[i]; `detail`, what of b matched a: its turn
        (ROTATED rows) or its region + 1 (VIEWS rows); pairs whose copy score is below `floor`
        are dropped. Rows are kept compact (int32 positions, float32 scores): a million images
        add tens of millions of them."""
        keep = (a >= 0) & (b >= 0) & (a != b) & np.isfinite(cosine)
        a, b, cosine = a[keep], b[keep], cosine[keep]
        of_b = np.broadcast_to(np.asarray(detail, dtype=np.int16), keep.shape)[keep]
        score = cosine - BETA * (self.density[a] + self.density[b]) / 2
        high_enough = score >= floor
        a, b, score, of_b = a[high_enough], b[high_enough], score[high_enough], of_b[high_enough]
        low, high = np.minimum(a, b).astype(np.int32), np.maximum(a, b).astype(np.int32)
        signed = np.where(b == high, of_b, -of_b)  # + : of the larger position
        how_column = np.full(len(a), how, dtype=np.uint8)
        self.parts.append((low, high, score.astype(np.float32), how_column, signed))

    def reduce(self) -> _Reduced:
        """One row per pair: how it was found, and its best score by views and by turns. The
        rows are reduced REDUCE_PARTS parts at a time (by the pair's first position: each
        pair lies in one part), so the sort's temporaries are a part's, not every row's."""
        if not self.parts:
            empty, none = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            return _Reduced(empty, empty, empty, none, none, *(np.zeros(0, np.int16),) * 2)
        rows = tuple(np.concatenate(c) for c in zip(*self.parts, strict=True))
        self.parts = []  # the rows live on concatenated only (tens of millions at 1M images)
        n = len(self.density)
        part_of = (rows[0] % REDUCE_PARTS).astype(np.uint8)  # once, a byte a row
        parts = []
        for part in range(REDUCE_PARTS):
            mine = np.nonzero(part_of == part)[0]
            parts.append(_reduced(*(column[mine] for column in rows), n=n))
        del rows, part_of
        names = [f.name for f in fields(_Reduced)]  # not astuple: it deep-copies the arrays
        merged = [np.concatenate([getattr(p, name) for p in parts]) for name in names]
        order = np.argsort(merged[0] * n + merged[1], kind="stable")  # by pair, as one would
        return _Reduced(*(column[order] for column in merged))


def _reduced(*rows: NDArray[Any], n: int) -> _Reduced:
    """Rows (low, high, score, how, detail) reduced to one per pair, in the order of pairs."""
    low, high, score, how, detail = rows
    keys, group = np.unique(low.astype(np.int64) * n + high, return_inverse=True)
    del low, high  # the pair's positions are in `keys`
    found_by = np.zeros(len(keys), dtype=np.int64)
    best: dict[int, NDArray[np.float32]] = {}
    of_best: dict[int, NDArray[np.int16]] = {}
    for kind in (GLOBAL, VIEWS, ROTATED):
        mine = np.nonzero(how == kind)[0]
        found_by[group[mine]] |= kind
        if kind == GLOBAL:
            continue  # its score is the pair's global score, computed for every pair
        # The best-scoring row of each pair, and its detail.
        order = mine[np.lexsort((-score[mine], group[mine]))]
        first = np.ones(len(order), dtype=bool)
        first[1:] = group[order][1:] != group[order][:-1]
        winners = order[first]
        best[kind] = np.full(len(keys), -np.inf, dtype=np.float32)
        best[kind][group[winners]] = score[winners]
        of_best[kind] = np.zeros(len(keys), dtype=np.int16)
        of_best[kind][group[winners]] = detail[winners]
    return _Reduced(
        keys // n,
        keys % n,
        found_by,
        best[VIEWS],
        best[ROTATED],
        of_best[ROTATED],
        of_best[VIEWS],
    )


@dataclass(frozen=True)
class _Reduced:
    low: NDArray[np.int64]
    high: NDArray[np.int64]
    found_by: NDArray[np.int64]
    view_score: NDArray[np.float32]
    turn_score: NDArray[np.float32]
    angle: NDArray[np.int16]
    region: NDArray[np.int16]


def find_candidates(
    found: Descriptors,
    gpu: Gpu | None = None,
    density_floor: float = -1.0,
    engine: Engine | None = None,
    score_floor: float = -np.inf,
) -> Candidates:
    """Stage 1: candidate pairs with copy scores. `density_floor`: the least density an image
    is given (the model card's, see indexer.models.CopyThresholds; -1: none). `score_floor`:
    pairs whose global (and turned) copy score is below it are left out as they are found,
    unless a view found them (stage 2 drops them: the card's reject score); -inf keeps every
    image's NEIGHBOURS nearest."""
    n = len(found.ids)
    if n < 2:
        return _no_candidates(found.ids)
    engine = engine or Engine()
    source = None if found.views is None else as_source(found.views)
    with scratch(source, engine.workers.local) as folder:  # the views' runs, when on disk
        mean = found.vectors.mean(axis=0)
        lengths = _lengths(found.vectors, mean)  # before they are centred, maybe in place
        placed, shards = _placed(found, mean, gpu, engine)
        if source is not None:
            placed = replace(placed, views=place_views(source, mean, placed.cells, folder))
        pieces = [] if placed.views is None else placed.views.pieces(shards)
        k = max(NEIGHBOURS, DENSITY_K)
        wholes = Nearests(n, k)
        turned = None if placed.turned is None else Nearests(len(placed.turned), NEIGHBOURS + 1)
        with engine.steps.step("finding candidate pairs", len(shards) + len(pieces)) as advance:
            named = [(f"nearest-{a}-{b}", (a, b)) for a, b in shards]
            for near in join_shards(nearest_shard, placed, named, engine, advance):
                wholes.merge((near["rows"], near["near"], near["cosine"]))
                if turned is not None:
                    turned.merge((near["t_rows"], near["t_near"], near["t_cosine"]))
            edges = _Edges(np.maximum(_density(wholes.scores), np.float32(density_floor)))
            neighbours, scores = wholes.near[:, :NEIGHBOURS], wholes.scores[:, :NEIGHBOURS]
            edges.add(
                np.repeat(np.arange(n), NEIGHBOURS),
                neighbours.ravel(),
                scores.ravel(),
                GLOBAL,
                floor=score_floor - FLOOR_SLACK,
            )
            # whole against view, both ways (join.view_shard), a piece of the cells at a time
            views = [(f"views-{a}-{b}", ((a, b), edges.density)) for a, b in pieces]
            for v in join_shards(view_shard, placed, views, engine, advance):
                edges.add(v["whole"], v["of"], v["cosine"], VIEWS, v["region"], VIEW_REJECT)
    if turned is not None and found.rotated_of is not None:
        angles = found.rotated_angle if found.rotated_angle is not None else 0
        width = turned.near.shape[1]
        edges.add(
            turned.near.ravel(),
            np.repeat(found.rotated_of, width),
            turned.scores.ravel(),
            ROTATED,
            np.repeat(angles, width),
            score_floor - FLOOR_SLACK,
        )
    found_pairs = edges.reduce()
    low, high = found_pairs.low, found_pairs.high
    pairs = np.stack([low, high], axis=1).reshape(-1, 2)
    raw, centred_cosine = _cosines(placed.unit, mean, lengths, low, high)
    score = centred_cosine - BETA * (edges.density[low] + edges.density[high]) / 2
    return Candidates(
        found.ids,
        pairs,
        raw.astype(np.float32),
        score.astype(np.float32),
        found_pairs.view_score.astype(np.float32),
        found_pairs.turn_score.astype(np.float32),
        found_pairs.found_by.astype(np.uint8),
        found_pairs.angle.astype(np.int16),
        found_pairs.region.astype(np.int8),
        audit(placed.unit, neighbours),
    )


def _no_candidates(ids: NDArray[np.int64]) -> Candidates:
    empty = np.zeros(0, dtype=np.float32)
    return Candidates(
        ids,
        np.zeros((0, 2), dtype=np.int64),
        empty,
        empty,
        empty,
        empty,
        np.zeros(0, np.uint8),
        np.zeros(0, np.int16),
        np.zeros(0, np.int8),
    )


def _placed(
    found: Descriptors, mean: NDArray[np.float32], gpu: Gpu | None, engine: Engine
) -> tuple[Placed, list[tuple[int, int]]]:
    """The centred vectors in their cells, and the shards of cells to join; the cells and
    where each vector lies are kept on the shelf (k-means and placing are the costly part,
    and a resumed run must cut the same cells)."""
    unit = centred(found.vectors, mean, in_place=found.in_place)
    turned = (
        None if found.rotated is None else centred(found.rotated, mean, in_place=found.in_place)
    )
    # One set of cells for every join. The views' join compares each whole with `regions`
    # times as many vectors, so it leaves the exact join at a smaller collection.
    regions = 0 if found.views is None else found.views.shape[1]
    remote = not engine.workers.local  # a GPU is this process's: shards elsewhere use CPUs

    def make() -> dict[str, NDArray[Any]]:
        cells = cells_of(unit, gpu, exact_up_to=int(EXACT_LIMIT / np.sqrt(1 + regions)))
        cut = spans(cells.count, engine.workers.shards(cells.count))
        return {
            **cells.saved(),
            **place(unit, cells, turned),
            "spans": np.asarray(cut, dtype=np.int64).reshape(-1, 2),
        }

    kept = shelved(engine.shelf, "cells", make)
    cells = Cells.restored(kept, None if remote else gpu)
    placed = Placed(unit, mean, cells, kept["probed"], None, turned, kept.get("turned_probed"))
    return placed, [(int(a), int(b)) for a, b in kept["spans"]]


def audit(unit: NDArray[np.float32], found: NDArray[np.int64], chunk: int = 20_000) -> float:
    """The share of the NEIGHBOURS nearest others (exact search, by blocks of `chunk` base
    vectors: memory follows the block, about 200 MB; blocks of 100,000 made the audit the
    candidate stage's peak) of AUDIT_SAMPLE random images that `found` (n, k) holds for them:
    the candidate join's neighbour recall, measured in every run."""
    n, k = int(found.shape[0]), int(found.shape[1])
    if n <= k + 1:
        return 1.0
    rows = np.random.default_rng(0).choice(n, min(AUDIT_SAMPLE, n), replace=False)
    queries = unit[rows]
    best = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(rows), k), dtype=np.int64)
    for start in range(0, n, chunk):
        scores = queries @ unit[start : start + chunk].T
        mine = (rows >= start) & (rows < start + chunk)
        scores[np.nonzero(mine)[0], rows[mine] - start] = -np.inf  # not itself
        ids = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        merged = np.concatenate([best, scores], axis=1)
        merged_ids = np.concatenate([best_ids, ids], axis=1)
        top = np.argpartition(-merged, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(merged, top, axis=1)
        best_ids = np.take_along_axis(merged_ids, top, axis=1)
    hits = 0
    for exact, row in zip(best_ids.tolist(), rows.tolist(), strict=True):
        hits += len(set(exact) & set(found[row].tolist()))
    return hits / (len(rows) * k)


def _lengths(vectors: Vectors, mean: NDArray[np.float32]) -> NDArray[np.float64]:
    """|x - m| of each row, from |x|^2 - 2 x.m + m.m (no centred copy)."""
    along = np.einsum("nd,d->n", vectors, mean).astype(np.float64)
    squares = np.einsum("nd,nd->n", vectors, vectors).astype(np.float64)
    middle = float(mean.astype(np.float64) @ mean)
    lengths: NDArray[np.float64] = np.sqrt(np.maximum(squares - 2 * along + middle, 1e-24))
    return lengths


def _cosines(
    unit: Vectors,
    mean: NDArray[np.float32],
    lengths: NDArray[np.float64],
    low: NDArray[np.int64],
    high: NDArray[np.int64],
    chunk: int = 65_536,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The raw and the centred cosine of each pair of rows, from one gather of their centred
    unit vectors (the raw ones may be centred in place by now), a chunk of pairs at a time
    (gathering all at once would hold two copies of (pairs, d) floats: gigabytes at a million
    images). With x = m + |x - m| u, x.y is m.m + |x - m| m.u + |y - m| m.v + |x - m||y - m| u.v."""
    along = lengths * np.einsum("nd,d->n", unit, mean).astype(np.float64)  # |x - m| m.u
    middle = float(mean.astype(np.float64) @ mean)
    raw = np.empty(len(low), dtype=np.float32)
    centred_cosine = np.empty(len(low), dtype=np.float32)
    for start in range(0, len(low), chunk):
        a, b = low[start : start + chunk], high[start : start + chunk]
        cosine = np.einsum("md,md->m", unit[a], unit[b])
        centred_cosine[start : start + chunk] = cosine
        raw[start : start + chunk] = middle + along[a] + along[b] + lengths[a] * lengths[b] * cosine
    return raw, centred_cosine


def _density(scores: NDArray[np.float32]) -> NDArray[np.float32]:
    """Each image's cosine to its DENSITY_K-th neighbour (the farthest it has, in a small set)."""
    finite = np.where(np.isfinite(scores), scores, np.nan)
    column = min(DENSITY_K, scores.shape[1]) - 1
    kth = finite[:, column]
    fallback = np.nanmin(np.where(np.isnan(finite), np.inf, finite), axis=1)
    fallback = np.where(np.isfinite(fallback), fallback, 0.0)
    return np.where(np.isnan(kth), fallback, kth).astype(np.float32)


__all__ = [
    "BETA",
    "DENSITY_K",
    "NEIGHBOURS",
    "VIEW_NEIGHBOURS",
    "VIEW_PROBES",
    "VIEW_REJECT",
    "Candidates",
    "Descriptors",
    "Engine",
    "audit",
    "centred",
    "find_candidates",
]
