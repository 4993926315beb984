"""Choosing an index kind for a collection, building it, and tuning its search parameters.

`auto` picks by size and memory budget: exact `flat` below FLAT_LIMIT vectors; above, IVF
(inverted lists of full vectors, memory-mapped when read) while the vectors fit the budget,
else IVF-PQ (`dim / 8` bytes per vector, re-scored exactly). HNSW is there to be asked for.
Tuning measures recall@10 against exact search on a sample of the stored vectors (each
query's own vector left out) and takes the cheapest setting that reaches the target.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from store.ann import KINDS, PQ_CENTROIDS, AnnIndex, Fetch, IndexSpec
from store.errors import InvalidOption
from store.records import Vectors

FLAT_LIMIT = 50_000  # below this, exact search answers a single query in a few ms
DEFAULT_MAX_INDEX_MEMORY = 8 << 30  # bytes
TARGET_RECALL = 0.95
# Tuning queries are stored vectors; real queries are not, and score a little lower (about
# 0.02 for HNSW in bench/scale.py), so the setting is chosen at the target plus this margin.
TUNING_MARGIN = 0.02
TUNING_QUERIES = 500
_BUILD_CHUNK = 50_000
_NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024)
_RERANK = (2, 4, 8, 16)


def choose(
    kind: str, count: int, dim: int, max_memory: int = DEFAULT_MAX_INDEX_MEMORY
) -> IndexSpec:
    """The spec to build for `count` vectors (untuned). `kind` is one of KINDS or `auto`.

    A kind that cannot be trained on so few vectors falls back to flat (said by the caller).
    """
    spec = intended(kind, count, dim, max_memory)
    return IndexSpec() if count < spec.min_vectors() else spec


def intended(
    kind: str, count: int, dim: int, max_memory: int = DEFAULT_MAX_INDEX_MEMORY
) -> IndexSpec:
    """The spec `kind` means at this size, whether or not there are enough vectors to train."""
    if kind not in (*KINDS, "auto"):
        raise InvalidOption(f"{kind!r} is not one of auto, {', '.join(KINDS)}", field="index_type")
    if kind == "auto" and count < FLAT_LIMIT:
        kind = "flat"
    elif kind == "auto":
        kind = "ivf" if count * dim * 4 <= max_memory else "ivfpq"
    nlist = nlist_for(count)
    return IndexSpec(
        kind=kind,
        nlist=nlist if kind in ("ivf", "ivfpq") else 0,
        pq=pq_bytes(dim) if kind == "ivfpq" else 0,
    )


def nlist_for(count: int) -> int:
    """A power of two near 4 sqrt(n), with >= 39 training points per list."""
    if count < 39 * 2:
        return 1
    target = 4 * math.sqrt(count)
    nlist = 2 ** max(0, round(math.log2(target)))
    return int(max(1, min(nlist, 65536, count // 39)))


def pq_bytes(dim: int) -> int:
    """Sub-quantizers for IVF-PQ: the largest divisor of dim not above dim / 8."""
    return max(d for d in range(1, dim // 8 + 1) if dim % d == 0) if dim >= 8 else dim


class VectorSource(Protocol):
    """Stored vectors, read a chunk at a time so that no process holds them all at once."""

    def count(self) -> int: ...

    def chunks(self) -> Iterator[tuple[NDArray[np.int64], Vectors]]: ...

    def sample(self, n: int, seed: int) -> tuple[NDArray[np.int64], Vectors]: ...

    def fetch(self, ids: NDArray[np.int64]) -> Vectors: ...


def trained(dim: int, spec: IndexSpec, source: VectorSource) -> AnnIndex:
    """A new, empty index of `spec`, trained on a sample of `source` when its kind trains."""
    train = None
    if spec.kind in ("ivf", "ivfpq"):
        count = source.count()
        wanted = min(count, max(spec.min_vectors(), 64 * max(spec.nlist, PQ_CENTROIDS)))
        train = source.sample(wanted, seed=0)[1]
    return AnnIndex.new(dim, spec, train)


def build(dim: int, spec: IndexSpec, source: VectorSource) -> AnnIndex:
    """A new index of `spec` over `source`: trained on a sample, filled chunk by chunk."""
    index = trained(dim, spec, source)
    for ids, vectors in source.chunks():
        index.add(ids, vectors)
    return index


def tune(index: AnnIndex, source: VectorSource, target: float = TARGET_RECALL) -> IndexSpec:
    """The cheapest search setting with recall@10 >= target + margin (or the best there is),
    with its measured recall, on a sample of the stored vectors (`source`: all of them).

    Settings are tried from the cheapest up (`cost`); each is measured with one batched search
    of all the sample's queries (IVF-PQ: one catalog fetch for all its re-scoring).
    """
    count = source.count()
    if index.spec.kind == "flat" or count <= 10:
        return dataclasses.replace(index.spec, recall=1.0)
    query_ids, queries = source.sample(min(TUNING_QUERIES, count), seed=1)
    truth = _exact_top10(queries, query_ids, source)
    best = index.spec
    for candidate in sorted(_ladder(index.spec), key=lambda s: cost(s, count)):
        index.spec = candidate
        recall = _recall(index, queries, query_ids, truth, source.fetch)
        if best.recall is None or recall > best.recall or recall >= target + TUNING_MARGIN:
            best = dataclasses.replace(candidate, recall=recall)
        if recall >= target + TUNING_MARGIN:
            break
    index.spec = best
    return best


# A vector fetched from the catalog and scored exactly (IVF-PQ re-ranking) costs about as much
# as scanning this many PQ codes (an SQLite row read of 1.5 KB vs a few table lookups per code).
FETCH_COST_IN_CODES = 200


def cost(spec: IndexSpec, count: int) -> float:
    """The work of one query at `spec`, in PQ-code (or list-entry) scans, to order the ladder."""
    if spec.kind == "hnsw":
        return float(spec.ef_search)
    per_list = count / max(1, spec.nlist)
    scanned = spec.nprobe * per_list
    if spec.kind == "ivfpq":
        return scanned + spec.rerank * 10 * FETCH_COST_IN_CODES
    return scanned


def _ladder(spec: IndexSpec) -> Iterator[IndexSpec]:
    if spec.kind == "hnsw":
        for ef in _EF_SEARCH:
            yield dataclasses.replace(spec, ef_search=ef)
    elif spec.kind == "ivf":
        for nprobe in (p for p in _NPROBES if p <= spec.nlist):
            yield dataclasses.replace(spec, nprobe=nprobe)
    elif spec.kind == "ivfpq":
        for nprobe in (p for p in _NPROBES if p <= spec.nlist):
            for rerank in _RERANK:
                yield dataclasses.replace(spec, nprobe=nprobe, rerank=rerank)


def _recall(
    index: AnnIndex,
    queries: Vectors,
    query_ids: NDArray[np.int64],
    truth: list[set[int]],
    fetch: Fetch,
) -> float:
    """recall@10 of one batched search, each query's own vector left out."""
    rows = index.search(queries, 11, fetch=fetch)
    found = 0
    for own, hits, expected in zip(query_ids.tolist(), rows, truth, strict=True):
        top = [h.id for h in hits if h.id != own][:10]
        found += len(set(top) & expected)
    return found / max(1, sum(len(t) for t in truth))


def _exact_top10(
    queries: Vectors, query_ids: NDArray[np.int64], source: VectorSource
) -> list[set[int]]:
    """Each query's 10 nearest stored ids by exact cosine, itself left out (streamed)."""
    best_scores = np.full((len(queries), 11), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), 11), -1, dtype=np.int64)
    for ids, vectors in source.chunks():
        scores = queries @ vectors.T
        chunk_ids = np.broadcast_to(ids, scores.shape)
        scores = np.where(chunk_ids == query_ids[:, None], -np.inf, scores)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, chunk_ids], axis=1)
        top = np.argpartition(-all_scores, 10, axis=1)[:, :11]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    order = np.argsort(-best_scores, axis=1)[:, :10]
    return [set(row.tolist()) for row in np.take_along_axis(best_ids, order, axis=1)]
