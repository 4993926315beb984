"""Similarity joins over stored vectors: every image's k nearest others (copy candidates), and
all pairs above a cosine (a range join).

Small sets: exact, as blocked matrix products. Large sets: k-means cells; each vector probes
its `probes` nearest cells, and each cell is joined with every vector that probes it in one
matrix product. The work is probes * n * (n / cells) * d multiply-adds done by BLAS, instead
of FAISS searches, which scan IVF lists one query at a time (NOTES: 170-315 s at 1M for a range
search). Every reported score is an exact cosine; recall depends on `probes` (measured in
bench/dupes_scale.py and tests/test_pairs.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from store.faiss_files import import_faiss
from store.gpu import Gpu, Products, products
from store.records import Vectors

EXACT_LIMIT = 20_000  # below this many vectors, the exact join is fast enough
DEFAULT_PROBES = 4
_BLOCK = 4096  # rows per matrix product: bounds the score matrix to _BLOCK x block columns
_CELLS_PER_BLOCK = 1 << 24

Pair = tuple[int, int, float]  # (id a, id b, cosine) with a < b
Block = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]  # rows, cols, scores


def blocks(
    queries: Vectors,
    base: Vectors,
    probes: int = DEFAULT_PROBES,
    gpu: Gpu | None = None,
    same: bool = False,
) -> Iterator[Block]:
    """Score blocks (query rows, base columns, scores (rows, cols)) that together hold every
    query's near neighbours in `base`: all of them below EXACT_LIMIT base vectors, those in
    the `probes` nearest k-means cells above. `same`: queries and base are one set."""
    product = products(gpu)
    if len(base) <= EXACT_LIMIT:
        columns = np.arange(len(base))
        step = max(64, min(_BLOCK, _CELLS_PER_BLOCK // len(base)))  # ~64 MB of scores at most
        for start in range(0, len(queries), step):
            rows = np.arange(start, min(len(queries), start + step))
            yield rows, columns, product(queries[rows], base)
        return
    yield from _cells(queries, base, probes, gpu, product, same)


def _cells(
    queries: Vectors, base: Vectors, probes: int, gpu: Gpu | None, product: Products, same: bool
) -> Iterator[Block]:
    faiss = import_faiss()
    n, dim = base.shape
    cells = int(min(max(64, 2 * np.sqrt(n)), n // 40))
    sample = base[np.random.RandomState(1338).choice(n, min(n, cells * 40), replace=False)]
    kmeans = faiss.Kmeans(dim, cells, niter=10, spherical=True, seed=1338, gpu=gpu is not None)
    kmeans.train(np.ascontiguousarray(sample))
    _, home = kmeans.index.search(np.ascontiguousarray(base), 1)  # each vector in its cell
    home = home[:, 0]
    _, nearest = kmeans.index.search(np.ascontiguousarray(queries), probes)  # (nq, probes)
    order = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[order], np.arange(cells + 1))
    probing = np.argsort(nearest.ravel(), kind="stable") // probes  # queries, by cell probed
    probe_bounds = np.searchsorted(np.sort(nearest.ravel()), np.arange(cells + 1))
    for cell in range(cells):
        members = order[bounds[cell] : bounds[cell + 1]]
        if len(members) == 0:
            continue
        asking = probing[probe_bounds[cell] : probe_bounds[cell + 1]]
        for start in range(0, len(asking), _BLOCK):
            rows = asking[start : start + _BLOCK]
            yield rows, members, product(queries[rows], base[members])


def nearest(
    vectors: Vectors, k: int, probes: int = DEFAULT_PROBES, gpu: Gpu | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Each vector's k nearest others in the set: (positions (n, k), cosines (n, k)), best
    first; -1 and -inf pad rows with fewer than k others."""
    return nearest_in(vectors, vectors, k, probes, gpu, same=True)


def nearest_in(
    queries: Vectors,
    base: Vectors,
    k: int,
    probes: int = DEFAULT_PROBES,
    gpu: Gpu | None = None,
    same: bool = False,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Each query's k nearest rows of `base` (positions, cosines), best first. `same`: the
    query set is `base` itself, and a row is not its own neighbour."""
    best = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    if not len(queries) or not len(base) or k <= 0:
        return best, scores
    for rows, cols, block in blocks(queries, base, probes, gpu, same):
        if same:
            block = np.where(rows[:, None] == cols[None, :], -np.inf, block)
        take = min(k, block.shape[1])
        top = np.argpartition(-block, take - 1, axis=1)[:, :take]
        merged_ids = np.concatenate([best[rows], cols[top]], axis=1)
        merged = np.concatenate([scores[rows], np.take_along_axis(block, top, axis=1)], axis=1)
        # A column can come from two cells: keep it once (the scores are equal).
        merged = np.where(_repeated(merged_ids), -np.inf, merged)
        keep = np.argsort(-merged, axis=1, kind="stable")[:, :k]
        best[rows] = np.take_along_axis(merged_ids, keep, axis=1)
        scores[rows] = np.take_along_axis(merged, keep, axis=1)
    best[~np.isfinite(scores)] = -1
    return best, scores


def _repeated(ids: NDArray[np.int64]) -> NDArray[np.bool_]:
    """True where an id repeats an earlier one in its row (and for padding after the first)."""
    order = np.argsort(ids, axis=1, kind="stable")
    ordered = np.take_along_axis(ids, order, axis=1)
    again = np.zeros_like(ids, dtype=bool)
    first = np.zeros((len(ids), 1), dtype=bool)
    again_sorted = np.concatenate([first, ordered[:, 1:] == ordered[:, :-1]], axis=1)
    np.put_along_axis(again, order, again_sorted, axis=1)
    return again | (ids < 0)


def similar_pairs(
    ids: NDArray[np.int64],
    vectors: Vectors,
    threshold: float,
    probes: int = DEFAULT_PROBES,
    gpu: Gpu | None = None,
) -> list[Pair]:
    """Every pair (a, b, cosine), a < b, with cosine >= threshold; vectors are (n, d) unit rows.
    With `gpu`, the matrix products and the k-means run on it."""
    found: dict[tuple[int, int], float] = {}  # a pair is often found from both of its sides
    for rows, cols, block in blocks(vectors, vectors, probes, gpu, same=True):
        r, c = np.nonzero(block >= threshold)
        a, b = ids[rows[r]], ids[cols[c]]
        keep = a != b
        for x, y, s in zip(
            np.minimum(a, b)[keep], np.maximum(a, b)[keep], block[r, c][keep], strict=True
        ):
            found[(int(x), int(y))] = float(s)
    return [(x, y, s) for (x, y), s in sorted(found.items())]


def cross_pairs(
    query_ids: NDArray[np.int64],
    queries: Vectors,
    ids: NDArray[np.int64],
    vectors: Vectors,
    threshold: float,
) -> list[Pair]:
    """(query id, stored id, cosine) for every query row and stored row with cosine >= threshold,
    exactly, in blocks of query rows (for a few extra vectors per image, such as rotations)."""
    found: list[Pair] = []
    for start in range(0, len(query_ids), _BLOCK):
        scores = queries[start : start + _BLOCK] @ vectors.T
        rows, cols = np.nonzero(scores >= threshold)
        found += [
            (int(query_ids[start + r]), int(ids[c]), float(scores[r, c]))
            for r, c in zip(rows, cols, strict=True)
        ]
    return found
