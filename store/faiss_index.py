"""The FAISS part of a Store (`store.index`): the index derived from the catalog's vectors.

It owns the loaded index, the catalog generation it reflects and whether it has changes to save.
Loading checks the FAISS file against what the catalog records and rebuilds it from SQLite when
it is missing, stale or damaged (store/rebuild.py). It searches and joins (on a GPU when asked
and FAISS can), saves the file atomically per generation, and builds whole indexes: `reindex`
from the stored vectors, `install` of one built elsewhere (the Ray engine's parallel fill), and
`maintain` when the recorded choice now means another kind.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from store import faiss_files as files
from store import tuning
from store.ann import AnnIndex, IndexSpec
from store.errors import HomeNotWritable, InvalidOption
from store.gpu import Gpu, gpu_for
from store.lock import holds_writer, writer_active
from store.pairs import DEFAULT_PROBES, Pair, similar_pairs
from store.rebuild import CatalogVectors, fetch_vectors, load_or_rebuild
from store.records import Hit, Vectors
from store.rows import Catalog
from store.schema import bump_generation, generation_of, set_meta

MAX_TOMBSTONES = 0.2  # HNSW: rebuild once removed/replaced vectors exceed this share
log = logging.getLogger("imgsearch.store")
# A Ray engine's fill: the trained empty index's bytes in, the filled copies' bytes out, a
# batch at a time as they finish (indexer/distributed.py).
FillParts = Callable[[bytes, str], Iterable[list[bytes]]]


class FaissIndex:
    """The FAISS index of one home, loaded when first needed."""

    def __init__(self, home: Path, catalog: Catalog, writer: bool) -> None:
        self.home = home
        self._catalog = catalog
        self._writer = writer  # a writer checks the FAISS file thoroughly, and never mmaps it
        self._index: AnnIndex | None = None
        self._gpu: Gpu | None = None
        self._generation = -1  # generation the in-memory FAISS index reflects
        self._dirty = False

    # -- searching -------------------------------------------------------------------------

    def search(
        self,
        queries: Vectors,
        k: int,
        exclude: frozenset[int] = frozenset(),
        only: frozenset[int] | None = None,
    ) -> list[list[Hit]]:
        """Top-k by cosine for each query row (n, d): exact on a flat index, tuned to the
        recall target on the others. `exclude` ids never appear; only `only` ids do if given."""
        dim = self._catalog.meta.dim
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise InvalidOption(f"must be (n, {dim}), got {queries.shape}", field="queries")
        return self.ann().search(queries, k, exclude, only, self._fetch)

    def use_device(self, device: str) -> None:
        """Search and join on a GPU for `device` (auto, cpu, cuda, cuda:N) when FAISS can.
        Without a usable GPU: the CPU (with a notice for cuda)."""
        self._gpu = gpu_for(device)
        if self._index is not None:
            self._index.use_gpu(self._gpu)

    @property
    def gpu(self) -> Gpu | None:
        """The GPU joins and searches run on (None: the CPU); see `use_device`."""
        return self._gpu

    @property
    def count(self) -> int:
        """Live vectors in the FAISS index (tombstones left out)."""
        return self.ann().count

    def is_current(self) -> bool:
        """Whether the loaded index still reflects the catalog (True when none is loaded): a
        long-lived reader reopens the store when another process has written."""
        if self._index is None:
            return True
        with self._catalog.engine.connect() as conn:
            return generation_of(conn) == self._generation

    def similar_pairs(
        self, threshold: float, ids: Sequence[int] | None = None, probes: int = DEFAULT_PROBES
    ) -> list[Pair]:
        """Every pair (a, b, cosine), a < b, with cosine >= threshold; both among `ids` if given.

        Exact up to 20,000 vectors; above, a k-means-celled BLAS join whose recall grows with
        `probes` (store/pairs.py). Every score returned is an exact cosine.
        """
        stored_ids, vectors = self.all_vectors() if ids is None else self._catalog.vectors(ids)
        return similar_pairs(stored_ids, vectors, threshold, probes, self._gpu)

    def all_vectors(self) -> tuple[NDArray[np.int64], Vectors]:
        """Every stored (id, vector), in id order: from a flat index's storage, else streamed
        from the catalog. For whole-collection joins; a query fetches by id (catalog.vectors)."""
        found = self.ann().all_vectors()
        if found is None:
            with self._catalog.engine.begin() as conn:
                return CatalogVectors(conn, self._catalog.meta.dim).all()
        stored_ids, vectors = found
        order = np.argsort(stored_ids, kind="stable")
        return stored_ids[order], vectors[order]

    def _fetch(self, ids: NDArray[np.int64]) -> Vectors:
        with self._catalog.engine.connect() as conn:
            return fetch_vectors(conn, ids, self._catalog.meta.dim)

    # -- following the catalog -------------------------------------------------------------

    def changed(self, generation: int, removed: Sequence[int], added: dict[int, Vectors]) -> None:
        """The catalog committed `generation`: drop `removed` ids, add `added` (id: (d,) rows)."""
        index = self.ann()
        if removed:
            index.remove(np.array(removed, dtype=np.int64))
        if added:
            index.add(np.array(list(added), dtype=np.int64), np.stack(list(added.values())))
        self._generation, self._dirty = generation, True

    def drop(self) -> None:
        """Forget the loaded index (reloaded, or rebuilt, when next needed)."""
        self._index = None

    def flush(self) -> None:
        """Write the FAISS file for the current generation, atomically, if anything changed."""
        if self._index is not None and self._dirty:
            record = files.write_atomic(self._index, self.home, self._generation)
            self._catalog.record_setting("faiss_file", record.to_json())
            self._dirty = False

    def verify(self) -> str | None:
        """Check the FAISS file thoroughly (sha256, count against the catalog) and rebuild it if
        it is not sound. Returns why it was rebuilt, or None."""
        self.flush()
        self._index = None
        return self._load(thorough=True)

    def ann(self) -> AnnIndex:
        if self._index is None:
            self._load(thorough=self._writer)
        assert self._index is not None
        return self._index

    def _load(self, thorough: bool) -> str | None:
        save = self._writer or (os.access(self.home, os.W_OK) and not writer_active(self.home))
        meta = self._catalog.meta
        with self._catalog.engine.begin() as conn:  # one snapshot: generation, count, vectors
            spec = IndexSpec.from_json(meta.index_spec)
            loaded = load_or_rebuild(
                conn, self.home, meta.dim, spec, mmap=not self._writer, thorough=thorough, save=save
            )
        self._index, self._generation = loaded.index, loaded.generation
        self._index.use_gpu(self._gpu)
        if loaded.record is not None and loaded.rebuilt is not None and save:
            with contextlib.suppress(HomeNotWritable):
                self._catalog.record_setting("faiss_file", loaded.record.to_json())
        if loaded.rebuilt is None:
            return None
        if writer_active(self.home) and not holds_writer(self.home):
            log.warning(
                "an index run is writing to %s: this answer covers the %d images committed so far",
                self.home,
                loaded.index.count,
            )
        else:
            log.warning(
                "FAISS file %s: rebuilt from the catalog (%d vectors)",
                loaded.rebuilt,
                loaded.index.count,
            )
        return loaded.rebuilt

    # -- whole indexes ---------------------------------------------------------------------

    def reindex(self, choice: str | None = None, max_memory: int | None = None) -> IndexSpec:
        """Rebuild the FAISS index from the stored vectors (no re-embedding) as `choice`
        (auto, flat, hnsw, ivf, ivfpq; default: as recorded), tune it, record it in `meta`."""
        index = self.trained_index(choice, max_memory)
        with self._catalog.engine.begin() as conn:
            for ids, vectors in CatalogVectors(conn, self._catalog.meta.dim).chunks():
                index.add(ids, vectors)  # streamed
        return self.install(index, choice, max_memory)

    def fill_in_parts(self, fill: FillParts) -> IndexSpec | None:
        """A large first load: an IVF index trained on a sample of the catalog, handed to `fill`
        as bytes, which returns copies filled in parallel (each from a part of the catalog);
        they are merged as they come and installed. No process holds every vector but the
        final index itself (IVF-PQ: codes only). None when the recorded kind is not IVF."""
        empty = self.trained_index()
        if empty.spec.kind not in ("ivf", "ivfpq"):
            return None
        for parts in fill(empty.to_bytes(), empty.spec.to_json()):
            # each merge rebuilds the id hashtable: merge what is done, not nothing
            empty.merge([AnnIndex.from_bytes(empty.spec, part) for part in parts])
        return self.install(empty)

    def trained_index(self, choice: str | None = None, max_memory: int | None = None) -> AnnIndex:
        """An empty index of the kind `choice` means for this catalog's size, trained on a
        sample of its vectors. Fill it with every stored vector, then `install` it."""
        meta = self._catalog.meta
        choice = choice or meta.index_choice
        budget = max_memory or meta.max_index_memory or tuning.DEFAULT_MAX_INDEX_MEMORY
        with self._catalog.engine.begin() as conn:
            source = CatalogVectors(conn, meta.dim)
            count = source.count()
            spec = tuning.choose(choice, count, meta.dim, budget)
            if choice not in ("auto", "flat") and spec.kind != choice:
                needed = tuning.intended(choice, count, meta.dim, budget).min_vectors()
                log.warning(
                    "%s needs at least %d vectors to train (the index has %d): it "
                    "stays flat until then",
                    choice,
                    needed,
                    count,
                )
            return tuning.trained(meta.dim, spec, source)

    def install(
        self, index: AnnIndex, choice: str | None = None, max_memory: int | None = None
    ) -> IndexSpec:
        """Make `index`, which must hold every stored vector, the store's index: tune its
        search parameters, save it as a new generation, record its kind in `meta`."""
        meta = self._catalog.meta
        choice = choice or meta.index_choice
        budget = max_memory or meta.max_index_memory or tuning.DEFAULT_MAX_INDEX_MEMORY
        with self._catalog.write.begin() as conn:
            source = CatalogVectors(conn, meta.dim)
            stored = source.count()
            if index.count != stored:
                raise InvalidOption(
                    f"holds {index.count} vectors, the catalog {stored}", field="index"
                )
            spec = tuning.tune(index, source)
            index.use_gpu(self._gpu)
            generation = bump_generation(conn)
            record = files.write_atomic(index, self.home, generation)
            settings = {
                "index_choice": choice,
                "max_index_memory": str(budget),
                "index_type": spec.factory,
                "index_spec": spec.to_json(),
                "faiss_file": record.to_json(),
            }
            for key, value in settings.items():
                set_meta(conn, key, value)
        self._index, self._generation, self._dirty = index, generation, False
        self._catalog.remember(**settings)
        return spec

    def maintain(self) -> IndexSpec | None:
        """After a writing run: rebuild when the recorded choice now means another index (a
        size boundary crossed) or HNSW tombstones pile up. Returns the new spec if rebuilt."""
        index = self.ann()
        meta = self._catalog.meta
        budget = meta.max_index_memory or tuning.DEFAULT_MAX_INDEX_MEMORY
        wanted = tuning.choose(meta.index_choice, index.count, meta.dim, budget)
        same = (wanted.kind, wanted.nlist, wanted.pq) == (
            index.spec.kind,
            index.spec.nlist,
            index.spec.pq,
        )
        if same and index.tombstones <= MAX_TOMBSTONES * max(1, index.count):
            return None
        return self.reindex()


def fill_part(trained: bytes, spec_json: str, ids: NDArray[np.int64], vectors: Vectors) -> bytes:
    """A copy of a trained index (`FaissIndex.fill_in_parts`) with `ids`' vectors added."""
    part = AnnIndex.from_bytes(IndexSpec.from_json(spec_json), trained)
    if len(ids):
        part.add(ids, vectors)
    return part.to_bytes()
