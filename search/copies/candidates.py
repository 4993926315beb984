"""Copy candidates from the stored vectors, with scores that mean the same everywhere.

Stage 1 of copy detection. The vectors of one image per content are centred (the collection's
mean removed, then L2-normalised) and each image's NEIGHBOURS nearest others are found. A pair's
copy score is its centred cosine minus BETA times the mean of the two images' densities, where
an image's density is its cosine to its DENSITY_K-th neighbour: in a crowd of look-alikes (star
fields, product shots, bursts) two images must be much closer than elsewhere to count. This is
the score normalisation of the Image Similarity Challenge 2021 winners and SSCD.

Regional views (the quadrants and centre of each image, stored at index time) add candidates a
global vector misses: an image whose whole matches another's view (a crop, a corner) and a view
that matches another's whole (a photo pasted small on a canvas). Rotated descriptors
(`dupes --rotations`) add pairs where one image turned by 90/180/270 degrees matches the other.
Measured on bench/copydetect.py (bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from store import Vectors
from store.gpu import Gpu
from store.pairs import nearest, nearest_in

NEIGHBOURS = 20  # candidates per image by global score
DENSITY_K = 20  # the neighbour whose cosine measures how crowded an image's surroundings are
BETA = 0.5
VIEW_NEIGHBOURS = 10  # candidates per image (and per view) through regional views
VIEW_PROBES = 4  # k-means cells each whole or view probes in the view joins (above EXACT_LIMIT)
# Measured on bench/copydetect.py's development part (bench/RESULTS.md): pairs found through
# views below this copy score were rarely verified copies, and they are many (at a million
# images, most of the view join's rows): they are dropped as they are found.
VIEW_REJECT = 0.2

GLOBAL, VIEWS, ROTATED = 1, 2, 4  # how a candidate was found (bits)


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


@dataclass(frozen=True)
class Descriptors:
    """What candidates are made from: unit vectors (n, d), optional views (n, R, d), and
    optional rotated descriptors: `rotated_of` (m,) positions in `ids`, `rotated_angle` (m,)
    counter-clockwise degrees, `rotated` (m, d)."""

    ids: NDArray[np.int64]
    vectors: Vectors
    views: NDArray[np.floating] | None = None  # float16 as stored, or float32
    rotated: Vectors | None = None
    rotated_of: NDArray[np.int64] | None = None
    rotated_angle: NDArray[np.int64] | None = None


def centred(vectors: NDArray[np.floating], mean: NDArray[np.float32],
             chunk: int = 65_536) -> NDArray[np.float32]:  # fmt: skip
    """(vectors - mean), L2-normalised along the last axis, as float32: a chunk of rows at a
    time, so that a million images' views cost one float32 copy and no temporaries."""
    unit = np.empty(vectors.shape, dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        shifted = vectors[start : start + chunk].astype(np.float32) - mean
        norms = np.linalg.norm(shifted, axis=-1, keepdims=True)
        unit[start : start + chunk] = shifted / np.maximum(norms, 1e-12)
    return unit


class _Edges:
    """Candidate pairs as they are found (vectorised), reduced to one row per pair at the end."""

    def __init__(self, density: NDArray[np.float32]) -> None:
        self.density = density
        self.parts: list[tuple[NDArray[np.generic], ...]] = []

    def add(
        self,
        a: NDArray[np.int64],
        b: NDArray[np.int64],
        cosine: NDArray[np.float32],
        how: int,
        angle: NDArray[np.int64] | int = 0,
        floor: float = -np.inf,
    ) -> None:
        """Pairs (a[i], b[i]) at centred cosine[i]; `angle`: b's turn (positive) that matched;
        pairs whose copy score is below `floor` are dropped. Rows are kept compact (int32
        positions, float32 scores): a million images add tens of millions of them."""
        keep = (a >= 0) & (b >= 0) & (a != b) & np.isfinite(cosine)
        a, b, cosine = a[keep], b[keep], cosine[keep]
        turn = np.broadcast_to(np.asarray(angle, dtype=np.int16), keep.shape)[keep]
        score = cosine - BETA * (self.density[a] + self.density[b]) / 2
        high_enough = score >= floor
        a, b, score, turn = a[high_enough], b[high_enough], score[high_enough], turn[high_enough]
        low, high = np.minimum(a, b).astype(np.int32), np.maximum(a, b).astype(np.int32)
        signed = np.where(b == high, turn, -turn)  # + : the larger position was turned
        how_column = np.full(len(a), how, dtype=np.uint8)
        self.parts.append((low, high, score.astype(np.float32), how_column, signed))

    def reduce(self) -> _Reduced:
        """One row per pair: how it was found, and its best score by views and by turns."""
        empty = np.zeros(0, dtype=np.int64)
        if not self.parts:
            none = np.zeros(0, dtype=np.float32)
            return _Reduced(empty, empty, empty, none, none, np.zeros(0, dtype=np.int16))
        low, high, score, how, angle = (np.concatenate(c) for c in zip(*self.parts, strict=True))
        order = np.lexsort((-score, high, low))  # by pair, best score first
        low, high, score, how, angle = (
            low[order],
            high[order],
            score[order],
            how[order],
            angle[order],
        )
        first = np.ones(len(low), dtype=bool)
        first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
        group = np.cumsum(first) - 1
        pairs = int(first.sum())
        found_by = np.zeros(pairs, dtype=np.int64)
        np.bitwise_or.at(found_by, group, how)
        best: dict[int, NDArray[np.float32]] = {}
        turn = np.zeros(pairs, dtype=np.int16)
        for kind in (VIEWS, ROTATED):
            values = np.full(pairs, -np.inf, dtype=np.float32)
            mine = how == kind
            np.maximum.at(values, group[mine], score[mine])
            best[kind] = values
        # The angle of the best-scoring turn (rows are sorted best first within a pair).
        turned = np.nonzero(how == ROTATED)[0][::-1]
        turn[group[turned]] = angle[turned]
        return _Reduced(
            low[first].astype(np.int64),
            high[first].astype(np.int64),
            found_by,
            best[VIEWS],
            best[ROTATED],
            turn,
        )


@dataclass(frozen=True)
class _Reduced:
    low: NDArray[np.int64]
    high: NDArray[np.int64]
    found_by: NDArray[np.int64]
    view_score: NDArray[np.float32]
    turn_score: NDArray[np.float32]
    angle: NDArray[np.int16]


def find_candidates(found: Descriptors, gpu: Gpu | None = None) -> Candidates:
    """Stage 1: candidate pairs with copy scores."""
    n = len(found.ids)
    if n < 2:
        empty = np.zeros(0, dtype=np.float32)
        return Candidates(
            found.ids,
            np.zeros((0, 2), dtype=np.int64),
            empty,
            empty,
            empty,
            empty,
            np.zeros(0, np.uint8),
            np.zeros(0, np.int16),
        )
    mean = found.vectors.mean(axis=0)
    unit = centred(found.vectors, mean)
    neighbours, scores = nearest(unit, max(NEIGHBOURS, DENSITY_K), gpu=gpu)
    edges = _Edges(_density(scores))
    rows = np.repeat(np.arange(n), NEIGHBOURS)
    edges.add(rows, neighbours[:, :NEIGHBOURS].ravel(), scores[:, :NEIGHBOURS].ravel(), GLOBAL)
    if found.views is not None:
        _view_candidates(unit, centred(found.views, mean), edges, gpu)
    if found.rotated is not None and found.rotated_of is not None:
        angles = found.rotated_angle if found.rotated_angle is not None else 0
        near, cos = nearest_in(centred(found.rotated, mean), unit, NEIGHBOURS + 1, gpu=gpu)
        width = near.shape[1]
        edges.add(
            near.ravel(),
            np.repeat(found.rotated_of, width),
            cos.ravel(),
            ROTATED,
            np.repeat(angles, width),
        )
    found_pairs = edges.reduce()
    low, high = found_pairs.low, found_pairs.high
    pairs = np.stack([low, high], axis=1).reshape(-1, 2)
    raw = _dots(found.vectors, low, high)
    centred_cosine = _dots(unit, low, high)
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
    )


def _dots(vectors: Vectors, low: NDArray[np.int64], high: NDArray[np.int64],
          chunk: int = 65_536) -> NDArray[np.float32]:  # fmt: skip
    """The dot product of each pair of rows, a chunk of pairs at a time (gathering all the
    rows at once would hold two copies of (pairs, d) floats: gigabytes at a million images)."""
    out = np.empty(len(low), dtype=np.float32)
    for start in range(0, len(low), chunk):
        part = slice(start, start + chunk)
        out[part] = np.einsum("md,md->m", vectors[low[part]], vectors[high[part]])
    return out


def _density(scores: NDArray[np.float32]) -> NDArray[np.float32]:
    """Each image's cosine to its DENSITY_K-th neighbour (the farthest it has, in a small set)."""
    finite = np.where(np.isfinite(scores), scores, np.nan)
    column = min(DENSITY_K, scores.shape[1]) - 1
    kth = finite[:, column]
    fallback = np.nanmin(np.where(np.isnan(finite), np.inf, finite), axis=1)
    fallback = np.where(np.isfinite(fallback), fallback, 0.0)
    return np.where(np.isnan(kth), fallback, kth).astype(np.float32)


def _view_candidates(
    unit: Vectors, views: NDArray[np.float32], edges: _Edges, gpu: Gpu | None
) -> None:  # views: centred
    """Whole against view, both ways: a crop matches a view of its source, and a view of a
    canvas matches the photo pasted on it."""
    n, regions, dim = views.shape
    flat = np.ascontiguousarray(views.reshape(n * regions, dim))
    owner = np.repeat(np.arange(n), regions)
    # Whole -> views: an image's own views are left out by masking them to -1.
    near, cos = nearest_in(unit, flat, (VIEW_NEIGHBOURS + 1) * regions, VIEW_PROBES, gpu)
    owners = np.where(near >= 0, owner[np.maximum(near, 0)], -1)
    owners = np.where(owners == np.arange(n)[:, None], -1, owners)
    rows = np.repeat(np.arange(n), near.shape[1])
    edges.add(rows, owners.ravel(), cos.ravel(), VIEWS, floor=VIEW_REJECT)
    # Views -> wholes.
    near, cos = nearest_in(flat, unit, VIEW_NEIGHBOURS + 1, VIEW_PROBES, gpu)
    edges.add(np.repeat(owner, near.shape[1]), near.ravel(), cos.ravel(), VIEWS, floor=VIEW_REJECT)
