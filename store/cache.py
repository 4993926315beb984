"""The FAISS file as a cache of the catalog: load it if it matches, else rebuild it from SQLite.

The file is named after the catalog generation it reflects, so a file that is missing, stale
(a killed run, an older generation) or damaged is detected here and rebuilt with a notice,
never an error and never a loss. A rebuild keeps the index's kind and tuned parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, func, select

from store import tuning
from store import vectors as vecs
from store.ann import AnnIndex, IndexSpec
from store.records import Vectors
from store.schema import generation_of, images, unblob

log = logging.getLogger("imgsearch.store")
_CHUNK = 20_000


def load_or_rebuild(
    conn: Connection, home: Path, dim: int, spec: IndexSpec, mmap: bool
) -> tuple[AnnIndex, int]:
    """The index and the generation it reflects, read in one snapshot of `conn`.

    `mmap`: map IVF lists instead of reading them (read-only use).
    """
    generation = generation_of(conn)
    # Counting 1M rows costs ~50 ms of a cold query's 1 s: a reader (mmap) trusts the file
    # named after the current generation; a writer checks it against the catalog.
    count = (
        None if mmap else int(conn.execute(select(func.count()).select_from(images)).scalar_one())
    )
    found = _read_file(home, generation, count, spec, mmap)
    if not isinstance(found, str):
        return found, generation
    if found == "absent":  # no file yet is normal for an empty catalog
        found = "missing" if conn.execute(select(images.c.id).limit(1)).first() else "new"
    source = CatalogVectors(conn, dim)
    count = source.count()
    if count < spec.min_vectors():  # cannot train: only after a damaged catalog
        spec = IndexSpec()
    index = tuning.build(dim, spec, source)
    if found != "new":
        log.warning("FAISS file %s: rebuilt from the catalog (%d vectors)", found, count)
    try:
        vecs.write_atomic(index, home, generation)
    except OSError as exc:  # a read-only home still answers queries from memory
        log.warning("could not save the rebuilt FAISS file in %s: %s", home, exc)
    return index, generation


class CatalogVectors:
    """The catalog's vectors as a tuning.VectorSource: streamed in chunks from one snapshot,
    so building or tuning an index never holds all of them in memory at once."""

    def __init__(self, conn: Connection, dim: int) -> None:
        self.conn, self.dim = conn, dim

    def count(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(images)).scalar_one())

    def chunks(self) -> Iterator[tuple[NDArray[np.int64], Vectors]]:
        query = select(images.c.id, images.c.vector).order_by(images.c.id)
        for chunk in self.conn.execution_options(yield_per=_CHUNK).execute(query).partitions():
            ids = np.array([row[0] for row in chunk], dtype=np.int64)
            yield ids, np.stack([unblob(row[1]) for row in chunk])

    def sample(self, n: int, seed: int) -> tuple[NDArray[np.int64], Vectors]:
        """`n` vectors picked at random (ids alone are read for the choice)."""
        every = np.array(self.conn.execute(select(images.c.id)).scalars().all(), dtype=np.int64)
        picked = np.sort(np.random.RandomState(seed).choice(every, n, replace=False))
        return picked, self.fetch(picked)

    def fetch(self, ids: NDArray[np.int64]) -> Vectors:
        found: dict[int, Vectors] = {}
        for start in range(0, len(ids), _CHUNK):
            wanted = ids[start : start + _CHUNK].tolist()
            query = select(images.c.id, images.c.vector).where(images.c.id.in_(wanted))
            found.update((i, unblob(v)) for i, v in self.conn.execute(query))
        if not found:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[int(i)] for i in ids])


def all_vectors(conn: Connection, dim: int) -> tuple[NDArray[np.int64], Vectors]:
    """Every (id, vector) in the catalog, in id order (for the duplicate self-join)."""
    ids: list[NDArray[np.int64]] = []
    chunks: list[Vectors] = []
    for chunk_ids, vectors in CatalogVectors(conn, dim).chunks():
        ids.append(chunk_ids)
        chunks.append(vectors)
    if not chunks:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(ids), np.concatenate(chunks)


def _read_file(
    home: Path, generation: int, count: int | None, spec: IndexSpec, mmap: bool
) -> AnnIndex | str:
    """The FAISS file for `generation` if it is sound, else why it must be rebuilt."""
    path = vecs.file_for(home, generation)
    if not path.is_file():
        if any(home.glob(f"{vecs.FILE_PREFIX}*{vecs.FILE_SUFFIX}")):
            return "stale (an earlier run did not finish)"
        return "absent"
    try:
        index = AnnIndex.read(path, spec, mmap)
    except (OSError, RuntimeError, ValueError):
        return "unreadable"
    if count is not None and index.count != count:
        return f"out of date ({index.count} vectors, catalog {count})"
    return index
