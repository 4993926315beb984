"""The store: one SQLite catalog (the truth, vectors included) and a FAISS index derived from it.

Every write is one SQLite transaction that also bumps `meta.generation`. The FAISS file is named
after the generation it reflects and recorded in `meta` (size, sha256, count, dimension), so a
file that is missing, stale, damaged or swapped is detected on open and rebuilt from SQLite with
a notice, never an error (store/cache.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

from store import faiss_files as files
from store import tags
from store.ann import AnnIndex, IndexSpec
from store.cache import CatalogVectors, fetch_vectors, load_or_rebuild
from store.caches import ResultCaches
from store.errors import HomeNotWritable, IndexNotFound, InvalidOption, ModelMismatch
from store.gpu import Gpu, gpu_for
from store.home import catalog_path
from store.kinds import IndexKinds
from store.lock import holds_writer, writer_active
from store.pairs import DEFAULT_PROBES, Pair, cross_pairs, similar_pairs
from store.reader import CatalogReader
from store.records import Embedded, Failure, Hit, IndexMeta, Vectors
from store.removed import RemovedRows
from store.schema import (
    SCHEMA_VERSION,
    blob,
    bump_generation,
    failures,
    generation_of,
    images,
    make_engine,
    meta,
    metadata,
    migrate,
    set_meta,
    views_blob,
    writing,
)

log = logging.getLogger("imgsearch.store")


class Store(CatalogReader, IndexKinds, ResultCaches, RemovedRows):
    """An index home. `Store.open(home)` reads; `writable=True` (or `Store.create`) writes, and
    the caller holds the writer lock (store.lock.exclusive_writer)."""

    def __init__(self, home: Path, engine: Engine, index_meta: IndexMeta, writer: bool) -> None:
        self.home = home
        self.meta = index_meta
        self._engine = engine
        self._write = writing(engine)
        self._index: AnnIndex | None = None
        self._writer = writer  # a writer checks the FAISS file thoroughly, and never mmaps it
        self._gpu: Gpu | None = None
        self._generation = -1  # generation the in-memory FAISS index reflects
        self._dirty = False

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, home: str | os.PathLike[str], *, writable: bool = False) -> Store:
        """Open the index in `home` (a path or a string). Raises IndexNotFound if there is none,
        HomeNotWritable if `writable` and the home is read-only."""
        home = Path(home).expanduser().absolute()
        path = catalog_path(home)
        if not path.is_file():
            raise IndexNotFound(f"no index in {home}: run `imgsearch index PATH` first")
        read_only = not os.access(home, os.W_OK) or not os.access(path, os.W_OK)
        if writable and read_only:
            raise HomeNotWritable(f"cannot write to {home}: the index home is read-only")
        engine = make_engine(path, read_only=read_only)
        try:
            with engine.connect() as conn:
                values = {k: v for k, v in conn.execute(select(meta.c.key, meta.c.value))}
            if not read_only and values.get("schema_version") != str(SCHEMA_VERSION):
                with writing(engine).begin() as conn:  # a catalog of an earlier version
                    migrate(conn)
        except OperationalError:  # a file with no tables: creation was interrupted
            values = {}
        except BaseException:
            engine.dispose()
            raise
        if "model" not in values:
            engine.dispose()
            raise IndexNotFound(f"{path} is not an imgsearch index (no model recorded)")
        return cls(home, engine, IndexMeta.from_values(values), writable)

    @classmethod
    def create(
        cls,
        home: str | os.PathLike[str],
        model: str,
        dim: int,
        settings: dict[str, str] | None = None,
    ) -> Store:
        """Open the index in `home` for writing, creating it for `model` (of dimension `dim`)
        if the home has none. `settings` are recorded when it is created.

        A run killed while creating leaves either nothing or an empty file, never a catalog
        without `meta`, and the next run completes it.
        """
        home = Path(home).expanduser().absolute()
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HomeNotWritable(f"cannot create {home}: {exc.strerror or exc}") from exc
        if not os.access(home, os.W_OK):
            raise HomeNotWritable(f"cannot write to {home}: the index home is read-only")
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
                **(settings or {}),
            }
            rows = [{"key": k, "value": v} for k, v in values.items()]
            with writing(engine).begin() as conn:
                metadata.create_all(conn)
                conn.execute(sqlite_insert(meta).on_conflict_do_nothing(), rows)
        finally:
            engine.dispose()
        store = cls.open(home, writable=True)
        if (store.meta.model, store.meta.dim) != (model, dim):  # the catalog is never mixed
            store.close()
            raise ModelMismatch(
                f"the index in {home} holds {store.meta.dim}-d vectors of "
                f"{store.meta.model!r}, not {dim}-d ones of {model!r}",
                field="model",
            )
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

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
        if queries.ndim != 2 or queries.shape[1] != self.meta.dim:
            raise InvalidOption(
                f"must be (n, {self.meta.dim}), got {queries.shape}", field="queries"
            )
        return self._ann().search(queries, k, exclude, only, self._fetch)

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

        Exact up to 20,000 vectors; above, a k-means-celled BLAS join whose recall grows with
        `probes` (store/pairs.py). Every score returned is an exact cosine.
        """
        stored_ids, vectors = self.vectors_of(ids)
        return similar_pairs(stored_ids, vectors, threshold, probes, self._gpu)

    def pairs_with(
        self, query_ids: Sequence[int], queries: Vectors, threshold: float, ids: Sequence[int]
    ) -> list[Pair]:
        """(query id, stored id, cosine >= threshold) for outside vectors against stored `ids`.

        A query id is the image the query vector was made from; pairs with itself are left out.
        """
        stored_ids, vectors = self.vectors_of(ids)
        query_array = np.asarray(query_ids, dtype=np.int64)
        found = cross_pairs(query_array, queries, stored_ids, vectors, threshold)
        return [(a, b, s) for a, b, s in found if a != b]

    def vectors_of(self, ids: Sequence[int] | None = None) -> tuple[NDArray[np.int64], Vectors]:
        """(ids, vectors) of the stored images among `ids` (all if None), in id order: from a
        flat index's storage, else from the catalog."""
        found = self._ann().all_vectors()
        if found is None:
            with self._engine.begin() as conn:
                found = CatalogVectors(conn, self.meta.dim).all()
        stored_ids, vectors = found
        order = np.argsort(stored_ids, kind="stable")
        stored_ids, vectors = stored_ids[order], vectors[order]
        if ids is None:
            return stored_ids, vectors
        keep = np.isin(stored_ids, np.asarray(list(ids), dtype=np.int64))
        return stored_ids[keep], vectors[keep]

    def _fetch(self, ids: NDArray[np.int64]) -> Vectors:
        with self._engine.connect() as conn:
            return fetch_vectors(conn, ids, self.meta.dim)

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
        with self._write.begin() as conn:
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
            tags.prune_contents(conn, old_hashes)
            if failed:
                failure_insert = sqlite_insert(failures)
                upsert = failure_insert.on_conflict_do_update(
                    index_elements=[failures.c.path],
                    set_={c: failure_insert.excluded[c] for c in ("size", "mtime_ns", "error")},
                )
                conn.execute(upsert, [f.__dict__ for f in failed])
            generation = bump_generation(conn)
        # SQLite has committed: only now does the in-memory FAISS index follow.
        if index is None:
            self._index = None  # reloaded (rebuilt) when next needed, unless installed
            return
        index.remove(np.array([i for i, _ in updated] + gone, dtype=np.int64))
        ids = np.array([i for i, _ in updated] + new_ids, dtype=np.int64)
        rows = [e.vector for _, e in updated] + [e.vector for e in new]
        if rows:
            index.add(ids, np.stack(rows))
        self._mark(generation)

    def record_setting(self, key: str, value: str) -> None:
        """Record a setting of the last run in `meta` (e.g. the precision it used)."""
        with self._write.begin() as conn:
            set_meta(conn, key, value)
        self.meta = _with_meta(self.meta, key, value)

    def flush(self) -> None:
        """Write the FAISS file for the current generation, atomically, if anything changed."""
        if self._index is not None and self._dirty:
            self._save(self._index, self._generation)
            self._dirty = False

    def _save(self, index: AnnIndex, generation: int) -> None:
        record = files.write_atomic(index, self.home, generation)
        self.record_setting("faiss_file", record.to_json())

    def _mark(self, generation: int) -> None:
        self._generation = generation
        self._dirty = True

    # -- the FAISS cache -------------------------------------------------------------------

    def verify(self) -> str | None:
        """Check the FAISS file thoroughly (sha256, count against the catalog) and rebuild it if
        it is not sound. Returns why it was rebuilt, or None."""
        self.flush()
        self._index = None
        return self._load(thorough=True)

    def _ann(self) -> AnnIndex:
        if self._index is None:
            self._load(thorough=self._writer)
        assert self._index is not None
        return self._index

    def _load(self, thorough: bool) -> str | None:
        save = self._writer or (os.access(self.home, os.W_OK) and not writer_active(self.home))
        with self._engine.begin() as conn:  # one snapshot: generation, count, vectors
            spec = IndexSpec.from_json(self.meta.index_spec)
            loaded = load_or_rebuild(
                conn,
                self.home,
                self.meta.dim,
                spec,
                mmap=not self._writer,
                thorough=thorough,
                save=save,
            )
        self._index, self._generation = loaded.index, loaded.generation
        self._index.use_gpu(self._gpu)
        if loaded.record is not None and loaded.rebuilt is not None and save:
            with contextlib.suppress(HomeNotWritable):
                self.record_setting("faiss_file", loaded.record.to_json())
        if loaded.rebuilt is not None:
            if writer_active(self.home) and not holds_writer(self.home):
                log.warning(
                    "an index run is writing to %s: this answer covers the %d images "
                    "committed so far",
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


def _with_meta(index_meta: IndexMeta, key: str, value: str) -> IndexMeta:
    """`index_meta` as it reads after `set_meta(key, value)`."""
    if key == "precision":
        return dataclasses.replace(index_meta, precision=value)
    if key == "runtime":
        return dataclasses.replace(index_meta, runtime=value)
    if key == "faiss_file":
        return dataclasses.replace(index_meta, faiss_file=value)
    return index_meta


def _row(e: Embedded) -> dict[str, object]:
    return {
        "path": e.file.path,
        "size": e.file.size,
        "mtime_ns": e.file.mtime_ns,
        "content_hash": e.file.content_hash,
        "width": e.width,
        "height": e.height,
        "vector": blob(e.vector),
        "views": views_blob(e.views),
    }
