"""The store: one SQLite catalog (the truth, vectors included) and a FAISS index derived from it.

Every write is one SQLite transaction that also bumps `meta.generation`. The FAISS file is named
after the generation it reflects, so a file that is missing, stale (killed run, older generation)
or damaged is detected on open and rebuilt from SQLite with a notice, never an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

from store import tags, tuning
from store import vectors as vecs
from store.ann import AnnIndex, IndexSpec
from store.cache import CatalogVectors, all_vectors, load_or_rebuild
from store.errors import IndexNotFound, ModelMismatch
from store.gpu import Gpu, gpu_for
from store.home import catalog_path
from store.pairs import DEFAULT_PROBES, Pair, cross_pairs, similar_pairs
from store.reader import CatalogReader
from store.records import Embedded, Failure, Hit, IndexMeta, Vectors
from store.schema import (
    SCHEMA_VERSION,
    blob,
    failures,
    generation_of,
    images,
    make_engine,
    meta,
    metadata,
)

MAX_TOMBSTONES = 0.2  # HNSW: rebuild once removed/replaced vectors exceed this share


class Store(CatalogReader):
    """An index home. Open with `Store.open` (read) or `Store.open_for_model` (index)."""

    def __init__(self, home: Path, engine: Engine, index_meta: IndexMeta) -> None:
        self.home = home
        self.meta = index_meta
        self._engine = engine
        self._index: AnnIndex | None = None
        self._writer = False  # opened by open_for_model: no memory-mapped index
        self._gpu: Gpu | None = None
        self._generation = -1  # generation the in-memory FAISS index reflects
        self._dirty = False

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, home: Path) -> Store:
        path = catalog_path(home)
        if not path.is_file():
            raise IndexNotFound(f"no index in {home}: run `imgsearch index PATH` first")
        engine = make_engine(path)
        try:
            with engine.connect() as conn:
                values = {k: v for k, v in conn.execute(select(meta.c.key, meta.c.value))}
        except OperationalError:  # a file with no tables: creation was interrupted
            values = {}
        if "model" not in values:
            engine.dispose()
            raise IndexNotFound(f"{path} is not an imgsearch index (no model recorded)")
        return cls(home, engine, IndexMeta.from_values(values))

    @classmethod
    def open_for_model(
        cls, home: Path, model: str, dim: int, settings: dict[str, str] | None = None
    ) -> Store:
        """Open the index for writing with `model`, creating it if the home has none.

        `settings` (weights, input_size) are recorded when the index is created.
        """
        cls._create(home, model, dim, settings or {})
        store = cls.open(home)
        store._writer = True
        try:
            store.check_model(model, dim)
        except ModelMismatch:
            store.close()
            raise
        return store

    def check_model(self, model: str, dim: int | None = None) -> None:
        """Raise ModelMismatch unless this index was built with `model` (and `dim`)."""
        if self.meta.model != model or dim not in (None, self.meta.dim):
            raise ModelMismatch(
                f"the index in {self.home} was built with {self.meta.model!r}, not {model!r}: "
                f"use --model {self.meta.model} or another --home"
            )

    @staticmethod
    def _create(home: Path, model: str, dim: int, settings: dict[str, str]) -> None:
        """Create the schema and `meta` in one transaction; a no-op on an existing index.

        A run killed while creating leaves either nothing or an empty file, never a catalog
        without `meta`, and the next run completes it.
        """
        home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(catalog_path(home))
        try:
            values = {
                "model": model,
                "dim": str(dim),
                "metric": "cosine",
                "index_type": IndexSpec().factory,
                "index_spec": IndexSpec().to_json(),
                "schema_version": str(SCHEMA_VERSION),
                "generation": "0",
            }
            values.update(settings)
            rows = [{"key": k, "value": v} for k, v in values.items()]
            with engine.begin() as conn:
                metadata.create_all(conn)
                conn.execute(sqlite_insert(meta).on_conflict_do_nothing(), rows)
        finally:
            engine.dispose()

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def search(
        self,
        queries: Vectors,
        k: int,
        exclude: frozenset[int] = frozenset(),
        only: frozenset[int] | None = None,
    ) -> list[list[Hit]]:
        """Top-k by cosine for each query row (n, d): exact on a flat index, tuned to the
        recall target on the others. `exclude` ids never appear; only `only` ids do if given."""
        if queries.ndim != 2 or queries.shape[1] != self.meta.dim:
            raise ValueError(f"queries must be (n, {self.meta.dim}), got {queries.shape}")
        return self._ann().search(queries, k, exclude, only, self._fetch)

    def use_device(self, device: str) -> None:
        """Search and join on a GPU for `device` (auto, cpu, cuda, cuda:N) when FAISS can.
        Without a usable GPU: the CPU (with a notice for cuda)."""
        self._gpu = gpu_for(device)
        if self._index is not None:
            self._index.use_gpu(self._gpu)

    def is_current(self) -> bool:
        """Whether the loaded FAISS index still reflects the catalog (True when none is loaded):
        a long-lived reader reopens the store when another process has written."""
        if self._index is None:
            return True
        with self._engine.connect() as conn:
            return generation_of(conn) == self._generation

    def faiss_count(self) -> int:
        """Live vectors in the FAISS index (tombstones left out)."""
        return self._ann().count

    def similar_pairs(
        self, threshold: float, ids: Sequence[int] | None = None, probes: int = DEFAULT_PROBES
    ) -> list[Pair]:
        """Every pair (a, b, cosine), a < b, with cosine >= threshold; both among `ids` if given.

        Exact up to 20,000 vectors; above, a k-means-celled join whose recall grows with
        `probes` (store/pairs.py). Every score returned is an exact cosine.
        """
        stored_ids, vectors = self._vectors_of(ids)
        return similar_pairs(stored_ids, vectors, threshold, probes, self._gpu)

    def pairs_with(
        self, query_ids: Sequence[int], queries: Vectors, threshold: float, ids: Sequence[int]
    ) -> list[Pair]:
        """(query id, stored id, cosine >= threshold) for outside vectors against stored `ids`.

        A query id is the image the query vector was made from; pairs with itself are left out.
        """
        stored_ids, vectors = self._vectors_of(ids)
        query_array = np.asarray(query_ids, dtype=np.int64)
        found = cross_pairs(query_array, queries, stored_ids, vectors, threshold)
        return [(a, b, s) for a, b, s in found if a != b]

    def _vectors_of(self, ids: Sequence[int] | None) -> tuple[NDArray[np.int64], Vectors]:
        """(ids, vectors) of the stored images among `ids` (all if None): from a flat index's
        storage, else from the catalog."""
        found = self._ann().all_vectors()
        if found is None:
            with self._engine.begin() as conn:
                found = all_vectors(conn, self.meta.dim)
        stored_ids, vectors = found
        if ids is None:
            return stored_ids, vectors
        keep = np.isin(stored_ids, np.asarray(list(ids), dtype=np.int64))
        return stored_ids[keep], vectors[keep]

    # -- writing ---------------------------------------------------------------------------

    def commit_batch(
        self, embedded: Sequence[Embedded], failed: Sequence[Failure], update_index: bool = True
    ) -> None:
        """Write one batch in one transaction: new or changed images, and files that failed.

        A path already indexed keeps its id (its vector is replaced); a path that now fails
        leaves the index, since its old vector no longer describes the file. Without
        `update_index` the FAISS index is left behind (dropped from memory, its file stale):
        for a bulk load that `install`s an index built elsewhere.
        """
        index = self._ann() if update_index else None
        paths = [e.file.path for e in embedded] + [f.path for f in failed]
        with self._engine.begin() as conn:
            query = select(images.c.path, images.c.id, images.c.content_hash).where(
                images.c.path.in_(paths)
            )
            known: dict[str, int] = {}
            old_hashes: list[str] = []
            for path, image_id, content_hash in conn.execute(query):
                known[path] = image_id
                old_hashes.append(content_hash)
            updated = [(known[e.file.path], e) for e in embedded if e.file.path in known]
            for image_id, e in updated:
                conn.execute(update(images).where(images.c.id == image_id).values(_row(e)))
            new = [e for e in embedded if e.file.path not in known]
            new_ids: list[int] = []
            if new:
                returning = insert(images).returning(images.c.id, sort_by_parameter_order=True)
                new_ids = list(conn.execute(returning, [_row(e) for e in new]).scalars())
            gone = [known[f.path] for f in failed if f.path in known]
            if gone:
                conn.execute(delete(images).where(images.c.id.in_(gone)))
            if embedded:
                done = [e.file.path for e in embedded]
                conn.execute(delete(failures).where(failures.c.path.in_(done)))
            tags.write(conn, embedded)
            tags.prune(conn, old_hashes)
            if failed:
                failure_insert = sqlite_insert(failures)
                upsert = failure_insert.on_conflict_do_update(
                    index_elements=[failures.c.path],
                    set_={c: failure_insert.excluded[c] for c in ("size", "mtime_ns", "error")},
                )
                conn.execute(upsert, [f.__dict__ for f in failed])
            generation = self._bump_generation(conn)
        # SQLite has committed: only now does the in-memory FAISS index follow.
        if index is None:
            self._index = None  # reloaded (rebuilt) when next needed, unless installed
            return
        replaced = np.array([i for i, _ in updated] + gone, dtype=np.int64)
        index.remove(replaced)
        ids = np.array([i for i, _ in updated] + new_ids, dtype=np.int64)
        rows = [e.vector for _, e in updated] + [e.vector for e in new]
        if rows:
            index.add(ids, np.stack(rows))
        self._mark(generation)

    def remove_paths(self, paths: Sequence[str]) -> int:
        """Forget files that no longer exist. Returns how many indexed images were removed."""
        if not paths:
            return 0
        index = self._ann()
        with self._engine.begin() as conn:
            query = select(images.c.id, images.c.content_hash).where(images.c.path.in_(paths))
            rows = conn.execute(query).all()
            ids = [image_id for image_id, _ in rows]
            conn.execute(delete(images).where(images.c.id.in_(ids)))
            conn.execute(delete(failures).where(failures.c.path.in_(paths)))
            tags.prune(conn, (content_hash for _, content_hash in rows))
            generation = self._bump_generation(conn)
        index.remove(np.array(ids, dtype=np.int64))
        self._mark(generation)
        return len(ids)

    # -- the FAISS index's kind ----------------------------------------------------------

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
            spec = tuning.choose(choice, source.count(), self.meta.dim, budget)
            return tuning.trained(self.meta.dim, spec, source)

    def install(self, index: AnnIndex, choice: str | None = None,
                max_memory: int | None = None) -> IndexSpec:  # fmt: skip
        """Make `index`, which must hold every stored vector, the store's index: tune its
        search parameters, save it as a new generation, record its kind in `meta`."""
        choice = choice or self.meta.index_choice
        budget = max_memory or self.meta.max_index_memory or tuning.DEFAULT_MAX_INDEX_MEMORY
        with self._engine.begin() as conn:
            source = CatalogVectors(conn, self.meta.dim)
            if index.count != source.count():
                raise ValueError(f"the index holds {index.count} vectors, the catalog more")
            spec = tuning.tune(index, source)
            index.use_gpu(self._gpu)
            generation = self._bump_generation(conn)
            vecs.write_atomic(index, self.home, generation)
            settings = {"index_choice": choice, "max_index_memory": str(budget),
                        "index_type": spec.factory, "index_spec": spec.to_json()}  # fmt: skip
            for key, value in settings.items():
                self._set_meta(conn, key, value)
        self._index, self._generation, self._dirty = index, generation, False
        self.meta = dataclasses.replace(
            self.meta, index_choice=choice, max_index_memory=budget,
            index_type=spec.factory, index_spec=spec.to_json(),
        )  # fmt: skip
        return spec

    def maintain(self) -> IndexSpec | None:
        """After a writing run: rebuild when the recorded choice now means another index (a
        size boundary crossed) or HNSW tombstones pile up. Returns the new spec if rebuilt."""
        index = self._ann()
        budget = self.meta.max_index_memory or tuning.DEFAULT_MAX_INDEX_MEMORY
        wanted = tuning.choose(self.meta.index_choice, index.count, self.meta.dim, budget)
        same = (wanted.kind, wanted.nlist, wanted.pq) == (index.spec.kind, index.spec.nlist,
                                                          index.spec.pq)  # fmt: skip
        if same and index.tombstones <= MAX_TOMBSTONES * max(1, index.count):
            return None
        return self.reindex()

    def record_setting(self, key: str, value: str) -> None:
        """Record a setting of the last run in `meta` (e.g. the precision it used)."""
        with self._engine.begin() as conn:
            self._set_meta(conn, key, value)

    @staticmethod
    def _set_meta(conn: Connection, key: str, value: str) -> None:
        upsert = sqlite_insert(meta).on_conflict_do_update(
            index_elements=[meta.c.key], set_={"value": value}
        )
        conn.execute(upsert, {"key": key, "value": value})

    def flush(self) -> None:
        """Write the FAISS file for the current generation, atomically, if anything changed."""
        if self._index is not None and self._dirty:
            vecs.write_atomic(self._index, self.home, self._generation)
            self._dirty = False

    def _bump_generation(self, conn: Connection) -> int:
        current = int(
            conn.execute(select(meta.c.value).where(meta.c.key == "generation")).scalar_one()
        )
        conn.execute(update(meta).where(meta.c.key == "generation").values(value=str(current + 1)))
        return current + 1

    def _mark(self, generation: int) -> None:
        self._generation = generation
        self._dirty = True

    # -- the FAISS cache -------------------------------------------------------------------

    def _ann(self) -> AnnIndex:
        if self._index is None:
            with self._engine.begin() as conn:  # one snapshot: generation, count, vectors
                spec = IndexSpec.from_json(self.meta.index_spec)
                mmap = not self._writer
                loaded = load_or_rebuild(conn, self.home, self.meta.dim, spec, mmap)
                self._index, self._generation = loaded
                self._index.use_gpu(self._gpu)
        return self._index


def _row(e: Embedded) -> dict[str, object]:
    return {
        "path": e.file.path,
        "size": e.file.size,
        "mtime_ns": e.file.mtime_ns,
        "content_hash": e.file.content_hash,
        "width": e.width,
        "height": e.height,
        "vector": blob(e.vector),
    }
