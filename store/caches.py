"""Derived results kept in the catalog: duplicate pairs per generation, and what is made
from each content's pixels (local features, the keeper's look at a file) by content hash.
Written only when this process holds the writer lock or can take it at once (a cache write
never waits for, or races, a command that changes the catalog)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from store.errors import HomeNotWritable, IndexBusy
from store.lock import exclusive_writer, holds_writer
from store.schema import content_cache, generation_of, results_cache

_KEEP_RESULTS = 8  # cached results kept per catalog (the newest)


class Caches:
    """The caches of a Store (`store.caches`)."""

    def __init__(self, home: Path, engine: Engine, write: Engine) -> None:
        self.home = home
        self._engine = engine
        self._write = write

    def cached(self, key: str) -> bytes | None:
        """A result stored under `key` for the catalog's current generation."""
        with self._engine.begin() as conn:
            row = conn.execute(
                select(results_cache.c.data, results_cache.c.generation).where(
                    results_cache.c.key == key
                )
            ).first()
            if row is None or row.generation != generation_of(conn):
                return None
            return bytes(row.data)

    def cache(self, key: str, data: bytes) -> bool:
        """Keep `data` under `key` for the current generation. False if not written."""
        with self._may_write() as allowed:
            if not allowed:
                return False
            with self._write.begin() as conn:
                generation = generation_of(conn)
                upsert = sqlite_insert(results_cache).on_conflict_do_update(
                    index_elements=[results_cache.c.key],
                    set_={"generation": generation, "data": data},
                )
                conn.execute(upsert, {"key": key, "generation": generation, "data": data})
                conn.execute(
                    delete(results_cache).where(
                        results_cache.c.generation < generation - _KEEP_RESULTS
                    )
                )
        return True

    def content_cached(self, kind: str, hashes: list[str], version: int) -> dict[str, bytes]:
        """What was made of `kind` from these contents by code of `version`, by content hash."""
        found: dict[str, bytes] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(hashes), 10_000):
                query = select(content_cache.c.content_hash, content_cache.c.data).where(
                    content_cache.c.content_hash.in_(hashes[start : start + 10_000]),
                    content_cache.c.kind == kind,
                    content_cache.c.version == version,
                )
                found.update((h, bytes(d)) for h, d in conn.execute(query))
        return found

    def save_content_cache(self, kind: str, made: dict[str, bytes], version: int) -> bool:
        """Keep `made` (by content hash) as `kind` of `version`. False if not written."""
        with self._may_write() as allowed:
            if not allowed or not made:
                return False
            rows = [
                {"content_hash": h, "kind": kind, "version": version, "data": d}
                for h, d in made.items()
            ]
            with self._write.begin() as conn:
                upsert = sqlite_insert(content_cache)
                conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[content_cache.c.content_hash, content_cache.c.kind],
                        set_={"version": upsert.excluded.version, "data": upsert.excluded.data},
                    ),
                    rows,
                )
        return True

    @contextmanager
    def _may_write(self) -> Iterator[bool]:
        if holds_writer(self.home):
            yield True
            return
        lock = exclusive_writer(self.home)
        try:
            lock.__enter__()
        except (IndexBusy, HomeNotWritable):
            yield False
            return
        try:
            yield True
        finally:
            lock.__exit__(None, None, None)
