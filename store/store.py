"""The store: one SQLite catalog (the truth, vectors included) and a FAISS index derived from it.

A Store is a small face over three parts that own their state: `catalog` (the SQL rows and the
recorded settings, store/rows.py), `index` (the FAISS index, store/faiss_index.py) and `caches`
(derived results, store/caches.py). What changes rows and the index together is here: each write
is one SQLite transaction that also bumps `meta.generation`, and only then does the in-memory
FAISS index follow. The FAISS file is named after the generation it reflects and recorded in
`meta`, so a file that is missing, stale, damaged or swapped is rebuilt on open with a notice.

`Store.open(home)` reads. `Store.writer(home)` is the one way to write: it takes the home's writer
lock, removes temp files of killed runs, then opens (or, for an index run, creates) the catalog.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, delete, insert, inspect, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

from store import tags
from store.ann import IndexSpec
from store.atomic import remove_stale_temp
from store.caches import Caches
from store.errors import CatalogDamaged, HomeNotWritable, IndexNotFound, ModelMismatch
from store.faiss_index import FaissIndex
from store.home import catalog_path
from store.lock import exclusive_writer
from store.records import Embedded, Failure, IndexMeta, Vectors
from store.removed import forget_rows, restore_rows
from store.rows import Catalog
from store.schema import (
    SCHEMA_VERSION,
    blob,
    bump_generation,
    failures,
    folder_of,
    images,
    make_engine,
    meta,
    metadata,
    migrate,
    views_blob,
    writing,
)

log = logging.getLogger("imgsearch.store")


@dataclass(frozen=True)
class NewIndex:
    """What a new catalog records: its model, the dimension of its vectors, run settings."""

    model: str
    dim: int
    settings: dict[str, str] = field(default_factory=dict)


class Store:
    """An index home: `catalog`, `index` and `caches`, and the writes that span them."""

    def __init__(self, home: Path, catalog: Catalog, writer: bool) -> None:
        self.home = home
        self._lock: Writer | None = None  # held by a store from `writer`, released by close()
        self.catalog = catalog
        self.index = FaissIndex(home, catalog, writer)
        self.caches = Caches(home, catalog.engine, catalog.write)

    @property
    def meta(self) -> IndexMeta:
        return self.catalog.meta

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, home: str | os.PathLike[str]) -> Store:
        """Open the index in `home` (a path or a string) to read. Raises IndexNotFound."""
        return cls._open(Path(home).expanduser().absolute(), writable=False)

    @classmethod
    def writer(
        cls, home: str | os.PathLike[str], wait: float = 0.0, new: NewIndex | None = None
    ) -> Store:
        """The index in `home`, open for writing while this process holds its writer lock
        (waiting up to `wait` seconds for another command; IndexBusy after that); created for
        `new` when the home has none (IndexNotFound without it). `close()` releases the lock:
        `with Store.writer(home) as store: ...`."""
        lock = Writer(Path(home), wait).__enter__()
        try:
            store = lock.create(new) if new is not None else lock.open()
        except BaseException:
            lock.__exit__(None, None, None)
            raise
        store._lock = lock
        return store

    @classmethod
    def _open(cls, home: Path, writable: bool) -> Store:
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
        try:
            recorded = _sound_meta(engine, values)
        except BaseException:
            engine.dispose()
            raise
        return cls(home, Catalog(engine, recorded), writable)

    @classmethod
    def _create(cls, home: Path, new: NewIndex) -> Store:
        """Open the index in `home` for writing, creating it for `new` if the home has none.
        A run killed while creating leaves either nothing or an empty file, never a catalog
        without `meta`, and the next run completes it."""
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HomeNotWritable(f"cannot create {home}: {exc.strerror or exc}") from exc
        if not os.access(home, os.W_OK):
            raise HomeNotWritable(f"cannot write to {home}: the index home is read-only")
        engine = make_engine(catalog_path(home))
        try:
            values = {
                "model": new.model,
                "dim": str(new.dim),
                "metric": "cosine",
                "index_type": IndexSpec().factory,
                "index_spec": IndexSpec().to_json(),
                "schema_version": str(SCHEMA_VERSION),
                "generation": "0",
                **new.settings,
            }
            rows = [{"key": k, "value": v} for k, v in values.items()]
            with writing(engine).begin() as conn:
                metadata.create_all(conn)
                conn.execute(sqlite_insert(meta).on_conflict_do_nothing(), rows)
        finally:
            engine.dispose()
        store = cls._open(home, writable=True)
        if (store.meta.model, store.meta.dim) != (new.model, new.dim):  # never mixed
            store.close()
            raise ModelMismatch(
                f"the index in {home} holds {store.meta.dim}-d vectors of "
                f"{store.meta.model!r}, not {new.dim}-d ones of {new.model!r}",
                field="model",
            )
        return store

    def close(self) -> None:
        try:
            self.catalog.engine.dispose()
        finally:
            if self._lock is not None:
                self._lock.__exit__(None, None, None)
                self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- writing rows and the index together ----------------------------------------------

    def commit_batch(
        self, embedded: Sequence[Embedded], failed: Sequence[Failure], update_index: bool = True
    ) -> None:
        """Write one batch in one transaction: new or changed images, and files that failed.

        A path already indexed keeps its id (its vector is replaced); a path that now fails
        leaves the index, since its old vector no longer describes the file. Without
        `update_index` the FAISS index is left behind (dropped from memory, its file stale):
        for a bulk load that installs an index built elsewhere.
        """
        if update_index:
            self.index.ann()  # loaded (or rebuilt) from the catalog as it was before this batch
        paths = [e.file.path for e in embedded] + [f.path for f in failed]
        with self.catalog.write.begin() as conn:
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
        if not update_index:
            self.index.drop()  # reloaded (rebuilt) when next needed, unless installed
            return
        added: dict[int, Vectors] = {i: e.vector for i, e in updated}
        added.update(zip(new_ids, (e.vector for e in new), strict=True))
        self.index.changed(generation, [i for i, _ in updated] + gone, added)

    def remove_paths(self, paths: Sequence[str], journal: str | None = None) -> int:
        """Forget indexed files. With `journal` (an action moved or deleted them), their rows
        are kept aside so that `restore_paths` can bring them back. Returns how many."""
        if not paths:
            return 0
        self.index.ann()
        with self.catalog.write.begin() as conn:
            ids = forget_rows(conn, paths, journal)
            generation = bump_generation(conn)
        self.index.changed(generation, ids, {})
        return len(ids)

    def restore_paths(self, journal: str, paths: Sequence[str]) -> int:
        """Put back the rows `remove_paths(paths, journal)` kept aside: same ids, same vectors,
        for files that are back on disk unchanged. Returns how many."""
        if not paths:
            return 0
        self.index.ann()
        with self.catalog.write.begin() as conn:
            restored = restore_rows(conn, journal, paths, self.meta.dim)
            generation = bump_generation(conn)
        ids = [i for i, _ in restored]
        self.index.changed(generation, ids, dict(restored))
        return len(restored)

    def flush(self) -> None:
        """Write the FAISS file for the current generation, if anything changed."""
        self.index.flush()


class Writer:
    """The writer lock on a home, held, and the one way to open its store for writing: a
    context manager that takes the lock and removes temp files of killed runs."""

    def __init__(self, home: Path, wait: float = 0.0) -> None:
        self.home = home.expanduser().absolute()
        self._lock = exclusive_writer(self.home, wait=wait)

    def __enter__(self) -> Writer:
        self._lock.__enter__()
        try:
            if self.home.is_dir():
                for removed in remove_stale_temp(self.home):
                    log.info("removed %s, left by a killed run", removed)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(None, None, None)

    def open(self) -> Store:
        """The store, for writing. Raises IndexNotFound when the home has no index yet."""
        return Store._open(self.home, writable=True)

    def create(self, new: NewIndex) -> Store:
        """The store, for writing, created for `new` when the home has none."""
        return Store._create(self.home, new)


def _row(e: Embedded) -> dict[str, object]:
    return {
        "path": e.file.path,
        "folder": folder_of(e.file.path),
        "size": e.file.size,
        "mtime_ns": e.file.mtime_ns,
        "content_hash": e.file.content_hash,
        "width": e.width,
        "height": e.height,
        "vector": blob(e.vector),
        "views": views_blob(e.views),
    }


def _sound_meta(engine: Engine, values: dict[str, str]) -> IndexMeta:
    """The catalog's record of itself, or CatalogDamaged naming what does not parse or is
    missing (every command then fails in one line instead of deep inside a read)."""
    try:
        recorded = IndexMeta.from_values(values)
        IndexSpec.from_json(recorded.index_spec)
        int(values.get("generation", "0"))
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise CatalogDamaged(
            f"{engine.url.database}: its record of itself (meta) is damaged ({type(exc).__name__}: "
            f"{exc}); restore a backup, or index into a new home"
        ) from exc
    missing = sorted(set(metadata.tables) - set(inspect(engine).get_table_names()))
    if missing:
        raise CatalogDamaged(
            f"{engine.url.database}: the table(s) {', '.join(missing)} are missing; restore a "
            "backup, or index into a new home"
        )
    return recorded
