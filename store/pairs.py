"""Similarity joins over stored vectors: each query's k nearest rows of a base set (copy
candidates), and every pair whose cosine clears a floor (the plain mode's range join, and the
copy candidates' whole-against-view join).

Small sets are joined exactly. Large ones are cut into k-means cells trained on the base set
(`Cells`): each base vector lies in its nearest cell, each query probes its `probes` nearest
cells, and every cell is compared with the queries that probe it in one matrix product (BLAS,
or the GPU). The work is probes * queries * (base / cells) * d multiply-adds, instead of FAISS
searches, which scan IVF lists one query at a time (a range search at 1M: 170-315 s on
this project's 2-core machines).
Top-k selection runs in FAISS's C++ heaps (`faiss.knn`: 9.5 ns a score against 16 for NumPy's
product and argpartition on this CPU), and floor joins keep only what clears the floor before
selecting anything. Every reported score is an exact cosine; recall depends on `probes`
(measured in bench/dupes_scale.py and tests/test_pairs.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from store.faiss_files import import_faiss
from store.gpu import Gpu, products
from store.records import Vectors

EXACT_LIMIT = 20_000  # base vectors up to which one cell holds them all: an exact join
DEFAULT_PROBES = 4  # cells a query probes, up to PROBES_GROW_FROM base vectors
PROBES_GROW_FROM = 1_000_000
_BLOCK = 4096  # query rows per product: bounds a score block to _BLOCK x a cell's members
_ASSIGN_CHUNK = 65_536  # vectors placed in cells at a time

Pair = tuple[int, int, float]  # (id a, id b, cosine) with a < b
Rows = NDArray[np.int64]
Gather = Callable[[Rows], Vectors]  # rows of a set by position, as float32 unit vectors


@dataclass(frozen=True)
class Cells:
    """Cells over a base set: `home` (n,) holds each base vector's cell. `centroids` is the
    FAISS index of the cells' centres (None: one cell holds everything, so joins are exact)."""

    home: NDArray[np.int64]
    centroids: Any | None
    gpu: Gpu | None = None

    @property
    def count(self) -> int:
        return 1 if self.centroids is None else int(self.centroids.ntotal)

    def saved(self) -> dict[str, NDArray[Any]]:
        """The cells as arrays, to keep on disk: `restored` gives them back."""
        faiss = import_faiss()
        centres = np.zeros(0, np.uint8)
        if self.centroids is not None:
            centres = faiss.serialize_index(self.centroids)
        return {"cell_home": self.home, "cell_centres": centres}

    @staticmethod
    def restored(saved: dict[str, NDArray[Any]], gpu: Gpu | None = None) -> Cells:
        centres = saved["cell_centres"]
        index = import_faiss().deserialize_index(centres) if len(centres) else None
        return Cells(saved["cell_home"], index, gpu)

    def nearest(self, vectors: Vectors, k: int) -> NDArray[np.int64]:
        """(len(vectors), min(k, count)) the cells nearest each vector, nearest first."""
        k = min(k, self.count)
        if self.centroids is None:
            return np.zeros((len(vectors), k), dtype=np.int64)
        found = np.empty((len(vectors), k), dtype=np.int64)
        for start in range(0, len(vectors), _ASSIGN_CHUNK):
            part = np.ascontiguousarray(vectors[start : start + _ASSIGN_CHUNK], dtype=np.float32)
            found[start : start + len(part)] = self.centroids.search(part, k)[1]
        return found


def probes_for(n: int) -> int:
    """Cells each query probes in a k-NN over n base vectors: DEFAULT_PROBES up to
    PROBES_GROW_FROM, then that times ceil(sqrt(n / PROBES_GROW_FROM)). There are about
    2 sqrt(n) cells, so a crowd of look-alikes of a given size spreads over more of them as n
    grows. Measured (bench/dupes_scale.py, near neighbours at centred cosine >= 0.8): 4 probes
    find 0.997 of them at 1M and 0.987 at 3M; 8 at 3M, 0.995. The k-NN's memory does not grow
    with the probes (`nearest_probing`), its time does, linearly."""
    return DEFAULT_PROBES * max(1, int(np.ceil(np.sqrt(n / PROBES_GROW_FROM) - 1e-9)))


def cells_of(base: Vectors, gpu: Gpu | None = None, exact_up_to: int = EXACT_LIMIT) -> Cells:
    """k-means cells over unit vectors `base` (about 2 sqrt(n) of them), or one cell for all
    when there are at most `exact_up_to`."""
    n, dim = base.shape
    if n <= exact_up_to:
        return Cells(np.zeros(n, dtype=np.int64), None, gpu)
    faiss = import_faiss()
    count = int(min(max(64, 2 * np.sqrt(n)), n // 40))
    sample = base[np.random.RandomState(1338).choice(n, min(n, count * 40), replace=False)]
    kmeans = faiss.Kmeans(dim, count, niter=10, spherical=True, seed=1338, gpu=gpu is not None)
    kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
    cells = Cells(np.zeros(n, dtype=np.int64), kmeans.index, gpu)
    return Cells(cells.nearest(base, 1)[:, 0], kmeans.index, gpu)


def nearest_in(
    queries: Vectors,
    base: Vectors,
    k: int,
    cells: Cells,
    probed: NDArray[np.int64],
    same: bool = False,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Each query's k nearest rows of `base` among the cells it probes (`probed`: (nq, P) cells
    of `cells`, trained on `base`): (positions, cosines), best first, -1 and -inf padding.
    `same`: the queries are `base` itself, and a row is not its own neighbour."""
    best = np.full((len(queries), max(k, 0)), -1, dtype=np.int64)
    scores = np.full(best.shape, -np.inf, dtype=np.float32)
    rows, near, found = nearest_probing(queries, base, k, cells, probed, same)
    best[rows], scores[rows] = near, found
    return best, scores


def nearest_probing(
    queries: Vectors,
    base: Vectors,
    k: int,
    cells: Cells,
    probed: NDArray[np.int64],
    same: bool = False,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """`nearest_in` for the queries that probe a cell at all: (those rows, their positions,
    their cosines). A probe of -1 is none: a shard of the cells (search/copies/join.py) is
    the queries' probes of its cells only. Each cell's finds are merged into the running best
    as they come, so memory follows (queries, k), whatever the number of probes."""
    active = np.nonzero((probed >= 0).any(axis=1))[0]
    slot_of = np.full(len(queries), -1, dtype=np.int64)
    slot_of[active] = np.arange(len(active))
    kept = Nearests(len(active), max(k, 0))
    if not len(active) or not len(base) or k <= 0:
        return active, kept.near, kept.scores
    knn = _knn(cells.gpu)
    members = _members(cells.home, cells.count)
    for cell, rows in _probing(probed, cells.count):
        mine = members[cell]
        if not len(mine):
            continue
        take = min(k + same, len(mine))
        found, near = knn(queries[rows], base[mine], take)
        near = np.where(near >= 0, mine[np.maximum(near, 0)], -1)
        if same:  # a row's own vector lies in its cell: drop it (else the last), keep the order
            other = near != rows[:, None]
            other[other.all(axis=1), -1] = False
            near, found = near[other].reshape(len(rows), -1), found[other].reshape(len(rows), -1)
        # A query probes a cell once, and each base vector lies in one cell: the lists merged
        # for a query never share a row.
        kept.merge((slot_of[rows], near, found))
    return active, kept.near, kept.scores


def merge_nearest(
    scores: NDArray[np.float32], best: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(S, nq, k) lists of disjoint neighbours (best first) merged into (nq, k), best first."""
    out_scores, out = import_faiss().merge_knn_results(
        np.ascontiguousarray(scores), np.ascontiguousarray(best), keep_max=True
    )
    out_scores[out < 0] = -np.inf  # FAISS pads with -FLT_MAX
    return out_scores, out


Nearest = tuple[Rows, Rows, NDArray[np.float32]]  # (query rows, their neighbours, cosines)


class Nearests:
    """Each query's k nearest (`near`, -1 padding; `scores`, -inf), merged from disjoint
    lists (cells, shards) as they come."""

    def __init__(self, n: int, k: int) -> None:
        self.near = np.full((n, k), -1, dtype=np.int64)
        self.scores = np.full((n, k), -np.inf, dtype=np.float32)

    def merge(self, found: Nearest) -> None:
        """Lists (rows (m,), near (m, w), cosines (m, w)), best first, rows distinct."""
        rows, near, scores = found
        if not len(rows) or not self.near.shape[1]:
            return
        width = min(near.shape[1], self.near.shape[1])
        both = np.stack([self.near[rows], _padded(near[:, :width], self.near.shape[1], -1)])
        both_scores = np.stack(
            [self.scores[rows], _padded(scores[:, :width], self.near.shape[1], -np.inf)]
        )
        merged_scores, merged = merge_nearest(both_scores, both)
        self.near[rows], self.scores[rows] = merged, merged_scores


def _padded(a: NDArray[Any], width: int, fill: float) -> NDArray[Any]:
    if a.shape[1] == width:
        return a
    out = np.full((len(a), width), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


@dataclass(frozen=True)
class Side:
    """One side of a floor join. Rows probe cells (`cells` (n, P)); columns lie in one
    (`cells` (m, 1), their home). A pair counts from floor[row] + floor[column]; `cap` keeps at
    most that many pairs of each vector in each cell, best first (None: all)."""

    vectors: Gather
    cells: NDArray[np.int64]
    floor: NDArray[np.float32]
    cap: int | None = None


Found = tuple[Rows, Rows, NDArray[np.float32]]  # (row positions, column positions, cosines)


def floor_join(rows: Side, columns: Side, count: int, gpu: Gpu | None = None) -> Iterator[Found]:
    """The pairs of a row and a column in a cell the row probes whose cosine reaches
    rows.floor[row] + columns.floor[column], a block at a time (`count`: the cells). A pair
    within either side's cap is kept."""
    above = _above(gpu)
    members = _members(columns.cells[:, 0], count)
    for cell, probing in _probing(rows.cells, count):
        mine = members[cell]
        if not len(mine):
            continue
        # Both floors ride along as two more coordinates: x' = (x, 1, -floor_x) and
        # y' = (y, -floor_y, 1) make x'.y' = x.y - floor_x - floor_y, so a pair counts when its
        # product is at least 0, one test for every pair of the block.
        col_floor = columns.floor[mine]
        base = _extended(columns.vectors(mine), -col_floor, np.ones_like(col_floor))
        for start in range(0, len(probing), _BLOCK):
            at = probing[start : start + _BLOCK]
            floor = rows.floor[at]
            r, c, margin = above(_extended(rows.vectors(at), np.ones_like(floor), -floor), base)
            score = margin + floor[r] + col_floor[c]
            keep = _within(r, score, rows.cap) | _within(c, score, columns.cap)
            yield at[r[keep]], mine[c[keep]], score[keep]


def _extended(vectors: Vectors, first: NDArray[np.float32], second: NDArray[np.float32]) -> Vectors:
    out = np.empty((len(vectors), vectors.shape[1] + 2), dtype=np.float32)
    out[:, :-2], out[:, -2], out[:, -1] = vectors, first, second
    return out


def _above(gpu: Gpu | None) -> Callable[[Vectors, Vectors], tuple[Rows, Rows, Any]]:
    """(rows, columns, products) of the pairs of a and b whose product is at least 0: FAISS's
    range search on the CPU (BLAS products, the test in C++: 7.6 ns a pair against 9.6 for
    NumPy's product and nonzero), the GPU's products otherwise."""
    faiss = import_faiss()
    if gpu is not None:
        product = products(gpu)

        def on_gpu(a: Vectors, b: Vectors) -> tuple[Rows, Rows, Any]:
            block = product(a, b)
            r, c = np.nonzero(block >= 0)
            return r, c, block[r, c]

        return on_gpu

    def on_cpu(a: Vectors, b: Vectors) -> tuple[Rows, Rows, Any]:
        index = faiss.IndexFlatIP(b.shape[1])
        index.add(b)
        # FAISS keeps what is above the radius: just below 0, so that 0 itself counts.
        limits, found, near = index.range_search(a, -1e-6)
        r = np.repeat(np.arange(len(a)), np.diff(limits).astype(np.int64))
        return r, near.astype(np.int64), found

    return on_cpu


def _within(group: Rows, score: NDArray[np.float32], cap: int | None) -> NDArray[np.bool_]:
    """Whether each entry is among the `cap` best of its group."""
    if cap is None:
        return np.ones(len(group), dtype=bool)
    order = np.lexsort((-score, group))
    ordered = group[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    keep = np.zeros(len(order), dtype=bool)
    keep[order] = np.arange(len(order)) - first < cap
    return keep


def _members(home: NDArray[np.int64], count: int) -> list[Rows]:
    """The positions lying in each cell."""
    order = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[order], np.arange(count + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(count)]


def _probing(probed: NDArray[np.int64], count: int) -> Iterator[tuple[int, Rows]]:
    """For each cell, the rows probing it (a row probes a cell at most once)."""
    flat = probed.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(count + 1))
    width = probed.shape[1]
    for cell in range(count):
        at = order[bounds[cell] : bounds[cell + 1]]
        if len(at):
            yield cell, at // width


def _knn(gpu: Gpu | None) -> Callable[[Vectors, Vectors, int], tuple[Any, Any]]:
    """(cosines, positions) of each query's k best rows of a base, best first: FAISS's BLAS
    products and heaps on the CPU, its brute force on a GPU."""
    faiss = import_faiss()
    if gpu is None:
        return lambda q, b, k: faiss.knn(q, b, k, metric=faiss.METRIC_INNER_PRODUCT)
    return lambda q, b, k: faiss.knn_gpu(
        gpu.resources,
        np.ascontiguousarray(q),
        np.ascontiguousarray(b),
        k,
        metric=faiss.METRIC_INNER_PRODUCT,
        device=gpu.device,
    )


def similar_pairs(
    ids: NDArray[np.int64],
    vectors: Vectors,
    threshold: float,
    probes: int = DEFAULT_PROBES,
    gpu: Gpu | None = None,
) -> list[Pair]:
    """Every pair (a, b, cosine), a < b, with cosine >= threshold; vectors are (n, d) unit rows.
    With `gpu`, the matrix products and the k-means run on it."""
    cells = cells_of(vectors, gpu)
    half = np.full(len(vectors), threshold / 2, dtype=np.float32)  # the sum is exact

    def gather(rows: Rows) -> Vectors:
        return vectors[rows]

    rows = Side(gather, cells.nearest(vectors, probes), half)
    columns = Side(gather, cells.home[:, None], half)
    found: dict[tuple[int, int], float] = {}  # a pair is often found from both of its sides
    for r, c, score in floor_join(rows, columns, cells.count, gpu):
        a, b = ids[r], ids[c]
        keep = a != b
        for x, y, s in zip(
            np.minimum(a, b)[keep], np.maximum(a, b)[keep], score[keep], strict=True
        ):
            found[(int(x), int(y))] = float(s)
    return [(x, y, s) for (x, y), s in sorted(found.items())]
