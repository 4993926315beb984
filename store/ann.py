"""The FAISS index of a store, of one of four kinds, with deletions and updates on each.

- flat:  `IDMap2,Flat`, exact inner product; remove_ids is native.
- hnsw:  `IDMap2` over `HNSW{m},Flat`. HNSW cannot remove: a removed or replaced vector's
         position becomes a tombstone, left out at search time by an ID-selector bitmap and
         saved beside the index file; the store rebuilds the index when tombstones pile up.
- ivf:   `IVF{nlist},Flat` with the catalog ids as native ids and a hashtable direct map
         (remove and reconstruct both work; `IDMap2(IVF)` cannot do both in faiss 1.15). Its
         inverted lists can be memory-mapped, so a cold process reads only what it probes.
- ivfpq: `IVF{nlist},PQ{pq}` likewise, with `pq` bytes per vector; each search takes `rerank`
         times more candidates and re-scores them exactly from the catalog's vectors.

Ids are the catalog's keys. Search parameters (efSearch, nprobe, rerank) live in the spec,
tuned when the index is built (store/tuning.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from store.errors import InvalidOption
from store.faiss_files import import_faiss, tombstone_file
from store.gpu import Gpu, to_gpu
from store.records import Hit, Vectors

KINDS = ("flat", "hnsw", "ivf", "ivfpq")
MIN_TRAIN_PER_LIST = 39  # FAISS k-means wants >= 39 points per centroid
PQ_CENTROIDS = 256  # 8-bit codes: each sub-quantizer trains 256 centroids
Fetch = Callable[[NDArray[np.int64]], Vectors]  # exact vectors by id, in the order asked


@dataclass(frozen=True)
class IndexSpec:
    """What kind of index, how it is built, and how it is searched (tuned)."""

    kind: str = "flat"
    nlist: int = 0  # ivf, ivfpq: inverted lists
    m: int = 32  # hnsw: neighbours per node
    pq: int = 0  # ivfpq: bytes per vector (sub-quantizers)
    nprobe: int = 16  # ivf, ivfpq: lists visited per query
    ef_search: int = 64  # hnsw: candidate list size
    rerank: int = 4  # ivfpq: candidates per result, re-scored exactly
    recall: float | None = None  # recall@10 against exact search, measured at these settings

    @property
    def factory(self) -> str:
        """A FAISS-style name, shown by `info`."""
        return {
            "flat": "IDMap2,Flat",
            "hnsw": f"IDMap2,HNSW{self.m},Flat",
            "ivf": f"IVF{self.nlist},Flat",
            "ivfpq": f"IVF{self.nlist},PQ{self.pq}",
        }[self.kind]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> IndexSpec:
        return cls(**json.loads(text)) if text else cls()

    def min_vectors(self) -> int:
        """How many vectors training needs (0: no training)."""
        if self.kind == "ivf":
            return MIN_TRAIN_PER_LIST * self.nlist
        if self.kind == "ivfpq":
            return MIN_TRAIN_PER_LIST * max(self.nlist, PQ_CENTROIDS)
        return 0


class AnnIndex:
    """A FAISS index of one kind plus, for HNSW, its position -> id map and tombstones."""

    def __init__(self, spec: IndexSpec, index: Any, dead: NDArray[np.bool_] | None = None):
        self.spec = spec
        self.index = index  # a downcast proxy: the owning proxy it came from is kept too
        self._owner: Any = None
        self._gpu: Gpu | None = None
        self._gpu_index: Any = None  # a GPU copy for search, made again after changes
        self._gpu_ids = np.zeros(0, dtype=np.int64)  # flat on a GPU: position -> id
        self._ids: NDArray[np.int64] | None = None  # hnsw: position -> catalog id
        self._dead = np.zeros(0, dtype=bool)
        if spec.kind == "hnsw":
            lib = import_faiss()
            self._ids = lib.vector_to_array(index.id_map).astype(np.int64)
            self._dead = dead if dead is not None else np.zeros(len(self._ids), dtype=bool)

    # -- building --------------------------------------------------------------------------

    @classmethod
    def new(cls, dim: int, spec: IndexSpec, train: Vectors | None = None) -> AnnIndex:
        lib = import_faiss()
        ip = lib.METRIC_INNER_PRODUCT
        if spec.kind == "flat":
            index = lib.index_factory(dim, "IDMap2,Flat", ip)
        elif spec.kind == "hnsw":
            index = lib.IndexIDMap2(lib.IndexHNSWFlat(dim, spec.m, ip))
        elif spec.kind in ("ivf", "ivfpq"):
            if train is None or len(train) < spec.min_vectors():
                raise InvalidOption(
                    f"{spec.factory} needs at least {spec.min_vectors()} vectors",
                    field="index_type",
                )
            quantizer = lib.IndexFlatIP(dim)
            if spec.kind == "ivf":
                index = lib.IndexIVFFlat(quantizer, dim, spec.nlist, ip)
            else:
                index = lib.IndexIVFPQ(quantizer, dim, spec.nlist, spec.pq, 8, ip)
            index.own_fields = True
            quantizer.this.disown()  # the IVF index owns and frees its quantizer
            index.train(np.ascontiguousarray(train, dtype=np.float32))
            index.set_direct_map_type(lib.DirectMap.Hashtable)
        else:
            raise InvalidOption(f"unknown index kind {spec.kind!r}", field="index_type")
        return cls(spec, index)

    # -- changing --------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Live vectors (tombstones excluded)."""
        return int(self.index.ntotal) - int(self._dead.sum())

    @property
    def tombstones(self) -> int:
        return int(self._dead.sum())

    def use_gpu(self, gpu: Gpu | None) -> None:
        """Search (flat, IVF, IVF-PQ) on this GPU from now on; None: the CPU."""
        self._gpu, self._gpu_index = gpu, None

    def add(self, ids: NDArray[np.int64], vectors: Vectors) -> None:
        if not len(ids):
            return
        self._gpu_index = None
        self.index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64)
        )
        if self._ids is not None:
            self._ids = np.concatenate([self._ids, ids.astype(np.int64)])
            self._dead = np.concatenate([self._dead, np.zeros(len(ids), dtype=bool)])

    def remove(self, ids: NDArray[np.int64]) -> None:
        if not len(ids):
            return
        self._gpu_index = None
        lib = import_faiss()
        wanted = np.ascontiguousarray(ids, dtype=np.int64)
        if self._ids is not None:  # hnsw: tombstones
            self._dead |= np.isin(self._ids, wanted)
        elif self.spec.kind == "flat":
            self.index.remove_ids(lib.IDSelectorBatch(wanted))
        else:  # the IVF hashtable direct map removes only through an IDSelectorArray
            self.index.remove_ids(lib.IDSelectorArray(len(wanted), lib.swig_ptr(wanted)))

    # -- searching -------------------------------------------------------------------------

    def search(
        self,
        queries: Vectors,
        k: int,
        exclude: frozenset[int] = frozenset(),
        only: frozenset[int] | None = None,
        fetch: Fetch | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits per query row, best first; `exclude` ids never appear, only `only` ids
        do when given. `fetch` gives exact vectors for re-scoring (ivfpq)."""
        if self.count == 0 or k <= 0 or (only is not None and not only):
            return [[] for _ in range(len(queries))]
        want = k + len(exclude)
        if self.spec.kind == "ivfpq" and fetch is not None:
            want *= self.spec.rerank
        want = min(want, int(self.index.ntotal))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, ids = self._search(queries, want, only)
        if self.spec.kind == "ivfpq" and fetch is not None:
            scores, ids = _rescore(queries, ids, fetch)
        results = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            hits = [
                Hit(int(i), float(s))
                for s, i in zip(row_scores, row_ids, strict=True)
                if i >= 0 and int(i) not in exclude
            ]
            results.append(hits[:k])
        return results

    def _search(
        self, queries: Vectors, want: int, only: frozenset[int] | None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        lib = import_faiss()
        wanted = None if only is None else np.fromiter(only, dtype=np.int64, count=len(only))
        if self._gpu is not None and wanted is None and self.spec.kind != "hnsw":
            return self._search_gpu(queries, want)  # GPU indexes take no ID selectors
        if self.spec.kind == "flat":
            params = (
                None if wanted is None else lib.SearchParameters(sel=lib.IDSelectorBatch(wanted))
            )
            scores, ids = self.index.search(queries, want, params=params)
            return scores, ids
        if self.spec.kind in ("ivf", "ivfpq"):
            sel = None if wanted is None else lib.IDSelectorBatch(wanted)
            params = lib.SearchParametersIVF(nprobe=self.spec.nprobe, sel=sel)
            scores, ids = self.index.search(queries, want, params=params)
            return scores, ids
        assert self._ids is not None
        alive = ~self._dead
        if wanted is not None:
            alive &= np.isin(self._ids, wanted)
        bits = np.packbits(alive, bitorder="little")
        sel = None if alive.all() else lib.IDSelectorBitmap(len(alive), lib.swig_ptr(bits))
        params = lib.SearchParametersHNSW(efSearch=self.spec.ef_search, sel=sel)
        inner = lib.downcast_index(self.index.index)
        scores, positions = inner.search(queries, want, params=params)
        ids = np.where(positions >= 0, self._ids[np.maximum(positions, 0)], -1)
        return scores, ids

    def _search_gpu(
        self, queries: Vectors, want: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        assert self._gpu is not None
        lib = import_faiss()
        if self._gpu_index is None:
            if self.spec.kind == "flat":  # the flat storage on the GPU; ids mapped back here
                self._gpu_index = to_gpu(self.index.index, self._gpu)
                self._gpu_ids = lib.vector_to_array(self.index.id_map).astype(np.int64)
            else:
                self._gpu_index = to_gpu(self.index, self._gpu)
                lib.GpuParameterSpace().set_index_parameter(
                    self._gpu_index, "nprobe", self.spec.nprobe
                )
        scores, found = self._gpu_index.search(queries, want)
        if self.spec.kind == "flat":
            found = np.where(found >= 0, self._gpu_ids[np.maximum(found, 0)], -1)
        return scores, found

    # -- reading the stored vectors back ---------------------------------------------------

    def all_vectors(self) -> tuple[NDArray[np.int64], Vectors] | None:
        """Every (id, vector) from a flat index's storage; None for other kinds."""
        if self.spec.kind != "flat":
            return None
        lib = import_faiss()
        if self.index.ntotal == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.index.d), dtype=np.float32)
        ids = lib.vector_to_array(self.index.id_map).astype(np.int64)
        vectors = lib.downcast_index(self.index.index).reconstruct_n(0, self.index.ntotal)
        return ids, np.asarray(vectors, dtype=np.float32)

    # -- moving between processes (parallel fills) ---------------------------------------

    def to_bytes(self) -> bytes:
        """The index serialised, to fill a copy elsewhere (an IVF kind) or send it back."""
        lib = import_faiss()
        return bytes(lib.serialize_index(self.index))

    @classmethod
    def from_bytes(cls, spec: IndexSpec, data: bytes) -> AnnIndex:
        lib = import_faiss()
        owner = lib.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        loaded = cls(spec, lib.downcast_index(owner))
        loaded._owner = owner
        return loaded

    def merge(self, parts: Sequence[AnnIndex]) -> None:
        """Move the parts' vectors into this index: all IVF, clones of one trained index.

        FAISS merges only without direct maps: they are dropped for the merge, and this
        index's hashtable is built again from its lists once all parts are in.
        """
        if self.spec.kind not in ("ivf", "ivfpq"):
            raise InvalidOption(
                f"{self.spec.factory} cannot merge parts (IVF kinds only)", field="index_type"
            )
        lib = import_faiss()
        self.index.set_direct_map_type(lib.DirectMap.NoMap)
        for part in parts:
            part.index.set_direct_map_type(lib.DirectMap.NoMap)
            self.index.merge_from(part.index, 0)  # ids are kept (native ids)
        self.index.set_direct_map_type(lib.DirectMap.Hashtable)
        self._gpu_index = None

    # -- files -----------------------------------------------------------------------------

    def write(self, path: Path) -> None:
        """Write the index to `path` (and the tombstones to its sidecar). Not atomic."""
        lib = import_faiss()
        lib.write_index(self.index, str(path))
        if self.spec.kind == "hnsw":
            with open(tombstone_file(path), "wb") as handle:
                np.save(handle, self._dead)

    @classmethod
    def read(cls, path: Path, spec: IndexSpec, mmap: bool = False) -> AnnIndex:
        """Read an index file. Raises OSError or RuntimeError when it is missing or damaged,
        or is not of the kind `spec` says."""
        lib = import_faiss()
        if not path.is_file():
            raise FileNotFoundError(path)
        flags = lib.IO_FLAG_MMAP | lib.IO_FLAG_READ_ONLY if mmap and spec.kind != "hnsw" else 0
        owner = lib.read_index(str(path), flags)
        index = lib.downcast_index(owner)  # shares the C++ object that `owner` frees
        if _kind_of(index, lib) != spec.kind:
            raise RuntimeError(f"{path} holds {type(index).__name__}, not {spec.factory}")
        dead = None
        if spec.kind == "hnsw":
            dead = np.load(tombstone_file(path))
            if len(dead) != index.ntotal:
                raise RuntimeError(f"{tombstone_file(path)} does not match {path}")
        loaded = cls(spec, index, dead)
        loaded._owner = owner
        return loaded


def _kind_of(index: Any, lib: Any) -> str:
    if isinstance(index, lib.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, lib.IndexIVFFlat):
        return "ivf"
    if isinstance(index, lib.IndexIDMap2):
        inner = lib.downcast_index(index.index)
        return "hnsw" if isinstance(inner, lib.IndexHNSW) else "flat"
    return type(index).__name__


def _rescore(
    queries: Vectors, ids: NDArray[np.int64], fetch: Fetch
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact cosines for the candidate ids of each query, best first (one fetch for all)."""
    flat = np.unique(ids[ids >= 0])
    vectors = fetch(flat) if len(flat) else np.zeros((0, queries.shape[1]), dtype=np.float32)
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)
    if len(flat):
        valid = ids >= 0
        positions = np.searchsorted(flat, np.where(valid, ids, flat[0]))
        exact = np.einsum("qmd,qd->qm", vectors[positions], queries)
        scores = np.where(valid, exact, -np.inf).astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(ids, order, axis=1)
    return np.take_along_axis(scores, order, axis=1), sorted_ids
