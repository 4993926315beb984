"""The FAISS side of the store: build, search, and the atomic file that caches it.

FAISS is imported lazily here and nowhere else: it is an extra (`cpu` or `gpu`), and a missing
install must become a clear error, not an ImportError deep in a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from store.errors import FaissUnavailable
from store.records import Hit, Vectors

if TYPE_CHECKING:
    import faiss

INDEX_TYPE_FLAT = "IDMap2,Flat"
FILE_PREFIX = "vectors.g"
FILE_SUFFIX = ".faiss"


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise FaissUnavailable(
            "faiss is not installed: pip install 'imgsearch-engine[cpu]' (or [gpu])"
        ) from exc
    return faiss


def new_index(dim: int, index_type: str) -> faiss.Index:
    lib = import_faiss()
    if index_type != INDEX_TYPE_FLAT:
        raise ValueError(f"unsupported index type {index_type!r}")
    index: faiss.Index = lib.index_factory(dim, index_type, lib.METRIC_INNER_PRODUCT)
    return index


def add(index: faiss.Index, ids: NDArray[np.int64], vectors: Vectors) -> None:
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))


def remove(index: faiss.Index, ids: NDArray[np.int64]) -> None:
    if len(ids):
        lib = import_faiss()
        index.remove_ids(lib.IDSelectorBatch(ids.astype(np.int64)))


def search(
    index: faiss.Index,
    queries: Vectors,
    k: int,
    exclude: frozenset[int] = frozenset(),
    only: frozenset[int] | None = None,
) -> list[list[Hit]]:
    """Top-k hits per query row, best first; ids in `exclude` never appear, and only ids in
    `only` do when it is given (a FAISS ID selector: the search itself skips the others)."""
    if index.ntotal == 0 or k <= 0 or (only is not None and not only):
        return [[] for _ in range(len(queries))]
    # Ask for a few more than k so that excluded ids can be dropped without a second search.
    want = min(k + len(exclude), index.ntotal)
    params = None
    if only is not None:
        lib = import_faiss()
        selector = lib.IDSelectorBatch(np.fromiter(only, dtype=np.int64, count=len(only)))
        params = lib.SearchParameters(sel=selector)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), want, params=params)
    results: list[list[Hit]] = []
    for row_scores, row_ids in zip(scores, ids, strict=True):
        hits = [
            Hit(int(i), float(s))
            for s, i in zip(row_scores, row_ids, strict=True)
            if i >= 0 and int(i) not in exclude
        ]
        results.append(hits[:k])
    return results


def all_vectors(index: faiss.Index) -> tuple[NDArray[np.int64], Vectors]:
    """Every stored (id, vector), in storage order: a copy of the flat storage, no search."""
    lib = import_faiss()
    if index.ntotal == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, index.d), dtype=np.float32)
    id_map: Any = index  # an IndexIDMap2 (INDEX_TYPE_FLAT); the stubs only know faiss.Index
    ids = lib.vector_to_array(id_map.id_map).astype(np.int64)
    vectors = lib.downcast_index(id_map.index).reconstruct_n(0, index.ntotal)
    return ids, np.asarray(vectors, dtype=np.float32)


def file_for(home: Path, generation: int) -> Path:
    return home / f"{FILE_PREFIX}{generation}{FILE_SUFFIX}"


def read(path: Path) -> faiss.Index:
    """Read an index file. Raises OSError or RuntimeError when it is missing or damaged."""
    lib = import_faiss()
    if not path.is_file():
        raise FileNotFoundError(path)
    index: faiss.Index = lib.read_index(str(path))
    return index


def write_atomic(index: faiss.Index, home: Path, generation: int) -> Path:
    """Write to a temp file, fsync, rename; then drop files of older generations.

    `faiss.write_index` is not atomic: a kill mid-write leaves an unreadable file (NOTES.md).
    """
    lib = import_faiss()
    target = file_for(home, generation)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        lib.write_index(index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    # Only older generations: a reader that rebuilt from an older snapshot must not delete the
    # newer file a concurrent writer has just saved.
    for old in home.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"):
        if _generation_of(old) < generation:
            old.unlink(missing_ok=True)
    return target


def _generation_of(path: Path) -> int:
    digits = path.name.removeprefix(FILE_PREFIX).removesuffix(FILE_SUFFIX)
    return int(digits) if digits.isdigit() else -1
