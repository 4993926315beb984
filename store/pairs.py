"""All pairs of stored vectors with cosine >= threshold (a similarity self-join).

Small sets: exact, as blocked matrix products. Large sets: k-means cells; each vector probes
its `probes` nearest cells, and each cell is joined with every vector that probes it in one
matrix product. The work is probes * n * (n / cells) * d multiply-adds done by BLAS, instead
of FAISS range search, which scans IVF lists one query at a time (NOTES.md: 170-315 s at 1M).
Every reported score is an exact cosine, so precision is 1; recall depends on `probes`
(measured in bench/dupes_scale.py and tests/test_pairs.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from store.gpu import Gpu, Products, products
from store.records import Vectors
from store.vectors import import_faiss

EXACT_LIMIT = 20_000  # below this many vectors, the exact join is fast enough
DEFAULT_PROBES = 4
_BLOCK = 4096  # rows per matrix product: bounds the score matrix to _BLOCK x block columns

Pair = tuple[int, int, float]  # (id a, id b, cosine) with a < b


def similar_pairs(
    ids: NDArray[np.int64],
    vectors: Vectors,
    threshold: float,
    probes: int = DEFAULT_PROBES,
    gpu: Gpu | None = None,
) -> list[Pair]:
    """Every pair (a, b, cosine), a < b, with cosine >= threshold; vectors are (n, d) unit rows.
    With `gpu`, the matrix products and the k-means run on it."""
    if len(ids) < 2:
        return []
    if len(ids) <= EXACT_LIMIT:
        return _exact(ids, vectors, threshold, products(gpu))
    return _cells(ids, vectors, threshold, probes, gpu)


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


def _exact(
    ids: NDArray[np.int64], vectors: Vectors, threshold: float, product: Products
) -> list[Pair]:
    found: list[Pair] = []
    for start in range(0, len(ids), _BLOCK):
        scores = product(vectors[start : start + _BLOCK], vectors[start:])
        rows, cols = np.nonzero(scores >= threshold)
        keep = cols > rows  # the upper triangle of this block row: each pair once, no self
        found += _as_pairs(
            ids[start + rows[keep]], ids[start + cols[keep]], scores[rows[keep], cols[keep]]
        )
    return found


def _cells(ids: NDArray[np.int64], vectors: Vectors, threshold: float, probes: int,
           gpu: Gpu | None) -> list[Pair]:  # fmt: skip
    faiss = import_faiss()
    product = products(gpu)
    n, dim = vectors.shape
    cells = int(min(max(64, 2 * np.sqrt(n)), n // 40))
    sample = vectors[np.random.RandomState(1338).choice(n, min(n, cells * 40), replace=False)]
    kmeans = faiss.Kmeans(dim, cells, niter=10, spherical=True, seed=1338, gpu=gpu is not None)
    kmeans.train(np.ascontiguousarray(sample))
    _, nearest = kmeans.index.search(np.ascontiguousarray(vectors), probes)  # (n, probes)
    home = nearest[:, 0]  # each vector is stored in its nearest cell
    order = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[order], np.arange(cells + 1))
    # Which vectors probe each cell (their own cell included).
    probing = np.argsort(nearest.ravel(), kind="stable") // probes
    probe_bounds = np.searchsorted(np.sort(nearest.ravel()), np.arange(cells + 1))
    found: dict[tuple[int, int], float] = {}  # a pair is often found from both of its sides
    for cell in range(cells):
        members = order[bounds[cell] : bounds[cell + 1]]
        if len(members) == 0:
            continue
        queries = probing[probe_bounds[cell] : probe_bounds[cell + 1]]
        for start in range(0, len(queries), _BLOCK):
            block = queries[start : start + _BLOCK]
            scores = product(vectors[block], vectors[members])
            rows, cols = np.nonzero(scores >= threshold)
            a, b = ids[block[rows]], ids[members[cols]]
            keep = a != b
            for x, y, s in _as_pairs(a[keep], b[keep], scores[rows[keep], cols[keep]]):
                found[(x, y)] = s
    return [(x, y, s) for (x, y), s in sorted(found.items())]


def _as_pairs(a: Sequence[int] | NDArray[np.int64], b: Sequence[int] | NDArray[np.int64],
              scores: NDArray[np.float32]) -> list[Pair]:  # fmt: skip
    low, high = np.minimum(a, b), np.maximum(a, b)
    return [(int(x), int(y), float(s)) for x, y, s in zip(low, high, scores, strict=True)]
