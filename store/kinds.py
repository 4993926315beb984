"""The FAISS index's kind: rebuilding it from the stored vectors, installing an index built
elsewhere (the Ray engine's parallel fill), and choosing again when a collection grows."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from sqlalchemy import Engine

from store import faiss_files as files
from store import tuning
from store.ann import AnnIndex, IndexSpec
from store.cache import CatalogVectors
from store.errors import InvalidOption
from store.gpu import Gpu
from store.records import IndexMeta
from store.schema import bump_generation, set_meta

MAX_TOMBSTONES = 0.2  # HNSW: rebuild once removed/replaced vectors exceed this share
log = logging.getLogger("imgsearch.store")


class IndexKinds:
    """The part of Store that builds whole FAISS indexes (mixed into store.catalog.Store)."""

    home: Path
    meta: IndexMeta
    _engine: Engine
    _write: Engine
    _gpu: Gpu | None
    _index: AnnIndex | None
    _generation: int
    _dirty: bool

    def _ann(self) -> AnnIndex:
        raise NotImplementedError

    def reindex(self, choice: str | None = None, max_memory: int | None = None) -> IndexSpec:
        """Rebuild the FAISS index from the stored vectors (no re-embedding) as `choice`
        (auto, flat, hnsw, ivf, ivfpq; default: as recorded), tune it, record it in `meta`."""
        index = self.trained_index(choice, max_memory)
        with self._engine.begin() as conn:
            for ids, vectors in CatalogVectors(conn, self.meta.dim).chunks():  # streamed
                index.add(ids, vectors)
        return self.install(index, choice, max_memory)

    def trained_index(self, choice: str | None = None, max_memory: int | None = None) -> AnnIndex:
        """An empty index of the kind `choice` means for this catalog's size, trained on a
        sample of its vectors. Fill it (or clones of it, in parallel, then merged) with every
        stored vector, then `install` it."""
        choice = choice or self.meta.index_choice
        budget = max_memory or self.meta.max_index_memory or tuning.DEFAULT_MAX_INDEX_MEMORY
        with self._engine.begin() as conn:
            source = CatalogVectors(conn, self.meta.dim)
            count = source.count()
            spec = tuning.choose(choice, count, self.meta.dim, budget)
            if choice not in ("auto", "flat") and spec.kind != choice:
                needed = tuning.intended(choice, count, self.meta.dim, budget).min_vectors()
                log.warning(
                    "%s needs at least %d vectors to train (the index has %d): it stays "
                    "flat until then",
                    choice,
                    needed,
                    count,
                )
            return tuning.trained(self.meta.dim, spec, source)

    def install(
        self, index: AnnIndex, choice: str | None = None, max_memory: int | None = None
    ) -> IndexSpec:
        """Make `index`, which must hold every stored vector, the store's index: tune its
        search parameters, save it as a new generation, record its kind in `meta`."""
        choice = choice or self.meta.index_choice
        budget = max_memory or self.meta.max_index_memory or tuning.DEFAULT_MAX_INDEX_MEMORY
        with self._write.begin() as conn:
            source = CatalogVectors(conn, self.meta.dim)
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
        self.meta = dataclasses.replace(
            self.meta,
            index_choice=choice,
            max_index_memory=budget,
            index_factory=spec.factory,
            index_spec=spec.to_json(),
            faiss_file=record.to_json(),
        )
        return spec

    def maintain(self) -> IndexSpec | None:
        """After a writing run: rebuild when the recorded choice now means another index (a
        size boundary crossed) or HNSW tombstones pile up. Returns the new spec if rebuilt."""
        index = self._ann()
        budget = self.meta.max_index_memory or tuning.DEFAULT_MAX_INDEX_MEMORY
        wanted = tuning.choose(self.meta.index_choice, index.count, self.meta.dim, budget)
        same = (wanted.kind, wanted.nlist, wanted.pq) == (
            index.spec.kind,
            index.spec.nlist,
            index.spec.pq,
        )
        if same and index.tombstones <= MAX_TOMBSTONES * max(1, index.count):
            return None
        return self.reindex()
