"""The catalog part of a Store: the SQL rows (records, vectors, failures, tags, review decisions)
and the index's recorded settings (`meta`). SQL only, no FAISS."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, func, literal, select

from store import decisions, ignored, tags
from store.errors import CatalogDamaged, ItemNotFound
from store.rebuild import fetch_present, rows_by_id
from store.records import Failure, ImageRecord, IndexMeta, Vector, Vectors
from store.schema import (
    decisions_of,
    failures,
    generation_of,
    has_folders,
    has_views,
    images,
    set_meta,
    unblob,
    views_half,
    views_unblob,
    writing,
)

_RECORD_COLUMNS = (
    images.c.id,
    images.c.path,
    images.c.size,
    images.c.mtime_ns,
    images.c.content_hash,
    images.c.width,
    images.c.height,
)


@dataclass(frozen=True)
class StoredVector:
    """A stored embedding with the pixel size of its image, reusable for a same-content file."""

    vector: Vector
    width: int
    height: int
    views: Vectors | None = None


def _record(row: Any) -> ImageRecord:
    return ImageRecord(*row)


MIN_ID, MAX_ID = 1, 2**63 - 1  # SQLite's integer keys: anything else is no image


class Catalog:
    """The SQL side of a Store (`store.catalog`): it owns the engines and the recorded `meta`."""

    def __init__(self, engine: Engine, index_meta: IndexMeta) -> None:
        self.engine = engine
        self.meta = index_meta
        self.write = writing(engine)
        self._counts: dict[str | None, tuple[int, int]] = {}  # by folder: (generation, count)
        self._folders_column = False  # images.folder seen (schema 4)

    def record_setting(self, key: str, value: str) -> None:
        """Record a setting of the last run in `meta` (e.g. the precision it used)."""
        with self.write.begin() as conn:
            set_meta(conn, key, value)
        self.remember(**{key: value})

    def remember(self, **values: str) -> None:
        """`meta` as it reads after those keys were written in a transaction that committed."""
        self.meta = self.meta.with_values(values)

    # -- reading ---------------------------------------------------------------------------

    def generation(self) -> int:
        """The catalog's generation now: bumped by every write that changes its images."""
        with self.engine.connect() as conn:
            return generation_of(conn)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(images)).scalar_one())

    def records(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        wanted = [i for i in ids if MIN_ID <= i <= MAX_ID]
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_RECORD_COLUMNS).where(images.c.id.in_(wanted)))
            return {row.id: _record(row) for row in rows}

    def record_by_path(self, path: str) -> ImageRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_RECORD_COLUMNS).where(images.c.path == path)).first()
        if row is None:
            raise ItemNotFound(f"{path} is not in the index")
        return _record(row)

    def ids_of(self, paths: Sequence[str]) -> dict[str, int]:
        """The ids of those `paths` that are indexed."""
        found: dict[str, int] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(paths), 10_000):
                chunk = list(paths[start : start + 10_000])
                query = select(images.c.path, images.c.id).where(images.c.path.in_(chunk))
                found.update((path, int(i)) for path, i in conn.execute(query))
        return found

    def vector(self, image_id: int) -> Vector:
        if not MIN_ID <= image_id <= MAX_ID:
            raise ItemNotFound(f"no image with id {image_id} in the index")
        with self.engine.connect() as conn:
            blob = conn.execute(select(images.c.vector).where(images.c.id == image_id)).scalar()
        if blob is None:
            raise ItemNotFound(f"no image with id {image_id} in the index")
        return unblob(blob, self.meta.dim)

    def vectors(self, ids: Iterable[int]) -> tuple[NDArray[np.int64], Vectors]:
        """(ids, vectors) of those `ids` that are stored, in id order: only their rows are read,
        whatever the size of the collection."""
        wanted = np.unique(np.array([i for i in ids if MIN_ID <= i <= MAX_ID], dtype=np.int64))
        with self.engine.connect() as conn:
            return fetch_present(conn, wanted, self.meta.dim)

    def file_states(self) -> dict[str, ImageRecord]:
        """Every indexed file by path, to decide what a scan has to do."""
        with self.engine.connect() as conn:
            return {row.path: _record(row) for row in conn.execute(select(*_RECORD_COLUMNS))}

    def newest(
        self, folder: str | None = None, offset: int = 0, limit: int = 60
    ) -> tuple[int, list[ImageRecord]]:
        """(how many, one page of them): images newest first (mtime, then path), optionally only
        those directly in `folder`. Read in the order of the images_by_mtime (or
        images_by_folder) index, so a page costs the page and its offset, not a sort of the
        catalog; a page past the middle is read from the other end (half the offset at
        most), and the count is kept for the catalog's generation."""
        where = []
        if folder is not None:
            inside = folder.rstrip(os.sep) + os.sep
            where = [images.c.folder == inside]
        with self.engine.connect() as conn:
            if folder is not None and not self._has_folders(conn):  # a catalog not migrated
                depth = len(os.fsencode(inside))
                where = [
                    images.c.path >= inside,  # [folder/, folder0): every path below the folder
                    images.c.path < inside[:-1] + chr(ord(os.sep) + 1),
                    func.instr(func.substr(images.c.path, depth + 1), literal(os.sep.encode()))
                    == 0,
                ]
            total = self._count(conn, folder, where)
            order = [images.c.mtime_ns.desc(), images.c.path]
            backwards = offset + limit > total - offset  # nearer the end: read from there
            if backwards:
                order = [images.c.mtime_ns.asc(), images.c.path.desc()]
                offset, limit = max(0, total - offset - limit), min(limit, max(0, total - offset))
            query = select(*_RECORD_COLUMNS).where(*where).order_by(*order)
            rows = [_record(row) for row in conn.execute(query.offset(offset).limit(limit))]
        return total, rows[::-1] if backwards else rows

    def _has_folders(self, conn: Any) -> bool:
        """Whether the catalog has images.folder (asked once: a migration only adds it)."""
        if not self._folders_column:
            self._folders_column = has_folders(conn)
        return self._folders_column

    def _count(self, conn: Any, folder: str | None, where: list[Any]) -> int:
        generation = generation_of(conn)
        known = self._counts.get(folder)
        if known is None or known[0] != generation:
            found = conn.execute(select(func.count()).select_from(images).where(*where))
            known = self._counts[folder] = (generation, int(found.scalar_one()))
        return known[1]

    def chunks(self, size: int = 10_000) -> Iterator[tuple[list[ImageRecord], Vectors]]:
        """Every image and its vector in id order, `size` at a time, from one snapshot."""
        with self.engine.begin() as conn:
            last = -1
            while True:
                query = (
                    select(*_RECORD_COLUMNS, images.c.vector)
                    .where(images.c.id > last)
                    .order_by(images.c.id)
                    .limit(size)
                )
                rows = conn.execute(query).all()
                if not rows:
                    return
                vectors = np.stack([unblob(row.vector, self.meta.dim) for row in rows])
                yield [_record(row[:-1]) for row in rows], vectors
                last = rows[-1].id

    def records_of_contents(self, hashes: Iterable[str]) -> dict[str, ImageRecord]:
        """One indexed file (the lowest id) of each of these contents that still has one."""
        wanted = sorted(set(hashes))
        found: dict[str, ImageRecord] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 10_000):
                query = (
                    select(*_RECORD_COLUMNS)
                    .where(images.c.content_hash.in_(wanted[start : start + 10_000]))
                    .order_by(images.c.id.desc())
                )
                found.update((r.content_hash, _record(r)) for r in conn.execute(query))
        return found

    def failures(self) -> dict[str, Failure]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(failures)).all()
        return {row.path: Failure(*row) for row in rows}

    def stored_vectors(self, hashes: Iterable[str]) -> dict[str, StoredVector]:
        """One stored vector per content hash, for files whose content is already indexed."""
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        query = select(
            images.c.content_hash, images.c.vector, images.c.width, images.c.height, images.c.views
        )
        dim = self.meta.dim
        with self.engine.connect() as conn:
            rows = conn.execute(query.where(images.c.content_hash.in_(wanted)))
            return {
                h: StoredVector(unblob(v, dim), w, ht, views_unblob(r, dim))
                for h, v, w, ht, r in rows
            }

    def views(self, ids: Iterable[int]) -> dict[int, Vectors]:
        """The stored regional views (R, d) of those `ids` that have them."""
        wanted = [i for i in ids if MIN_ID <= i <= MAX_ID]
        found: dict[int, Vectors] = {}
        with self.engine.connect() as conn:
            if not wanted or not has_views(conn):
                return found
            for at, data in rows_by_id(conn, images.c.views, wanted, 10_000):
                views = None if data is None else views_unblob(data, self.meta.dim)
                if views is not None:
                    found[wanted[at]] = views
        return found

    def views_shape(self, ids: Sequence[int]) -> tuple[int, int] | None:
        """(R, d) of the stored views when every one of `ids` has views, else None."""
        wanted = list(dict.fromkeys(int(i) for i in ids))
        with self.engine.connect() as conn:
            if not wanted or not has_views(conn):
                return None
            having = 0
            for start in range(0, len(wanted), 10_000):
                chunk = wanted[start : start + 10_000]
                having += conn.execute(
                    select(func.count())
                    .select_from(images)
                    .where(images.c.id.in_(chunk), images.c.views.is_not(None))
                ).scalar_one()
            if having != len(wanted):
                return None
            data = conn.execute(select(images.c.views).where(images.c.id == wanted[0])).scalar()
        first = views_half(data, self.meta.dim)
        return None if first is None else (int(first.shape[0]), int(first.shape[1]))

    def views_chunks(
        self, ids: Sequence[int], shape: tuple[int, int], size: int = 50_000
    ) -> Iterator[NDArray[np.float16]]:
        """The stored views of `ids` (`shape`, as views_shape gave it), `size` images at a time:
        (m, R, d) float16 in their order, as stored. An image without views of that shape is a
        damaged catalog (CatalogDamaged)."""
        ids = [int(i) for i in ids]
        with self.engine.connect() as conn:
            for start in range(0, len(ids), size):
                chunk = ids[start : start + size]
                found = np.empty((len(chunk), *shape), dtype=np.float16)
                filled = np.zeros(len(chunk), dtype=bool)
                for at, data in rows_by_id(conn, images.c.views, chunk, 10_000):
                    views = views_half(data, self.meta.dim)
                    if views is None or views.shape != shape:
                        raise CatalogDamaged(f"image {chunk[at]} has no views of {shape}")
                    found[at], filled[at] = views, True
                if not filled.all():
                    missing = chunk[int(np.argmin(filled))]
                    raise CatalogDamaged(f"image {missing} is not in the catalog")
                yield found

    def views_array(self, ids: Sequence[int]) -> NDArray[np.float16] | None:
        """The stored views of `ids` as one (len(ids), R, d) float16 array in their order; None
        unless every one of them has views of one shape. The candidate stage reads them a chunk
        at a time instead (views_chunks): a million images' views are gigabytes."""
        shape = self.views_shape(ids)
        if shape is None:
            return None
        return np.concatenate(list(self.views_chunks(ids, shape)))

    def ignored_pairs(self) -> set[tuple[str, str]]:
        """Content-hash pairs (a < b) the user marked as not duplicates."""
        return ignored.pairs(self.engine)

    def ignore_pairs(self, hashes: Sequence[str]) -> int:
        """Remember every pair among `hashes` as not duplicates. Returns how many were new."""
        return ignored.remember(self.write, hashes)

    def forget_ignored(self, hashes: Sequence[str]) -> int:
        """Take back "not duplicates" among `hashes`. Returns how many pairs were."""
        return ignored.forget(self.write, hashes)

    def forget_keepers(self, hashes: Sequence[str]) -> int:
        """Take back the keepers chosen among these contents. Returns how many were."""
        return decisions.forget(self.write, hashes)

    def decisions_version(self) -> int:
        """How many times review decisions changed: cached groups are stale once it moves."""
        with self.engine.connect() as conn:
            return decisions_of(conn)

    def chosen_keepers(self) -> set[str]:
        """Contents the user chose to keep in review."""
        return decisions.chosen(self.engine)

    def choose_keeper(self, keep: str, group: Sequence[str]) -> None:
        """Remember `keep` as the copy to keep of the group of contents `group`."""
        decisions.choose(self.write, keep, group)

    # -- tags ------------------------------------------------------------------------------

    def tag_counts(self, min_score: float = 0.0) -> list[tuple[str, int]]:
        return tags.counts(self.engine, min_score)

    def ids_with_tag(self, word: str, min_score: float = 0.0) -> set[int]:
        return tags.ids_with_tag(self.engine, word, min_score)

    def tags_of(self, ids: Iterable[int]) -> dict[int, list[tuple[str, float]]]:
        return tags.of_ids(self.engine, ids)
