"""The FAISS file as a cache of the catalog: load it if it is sound, else rebuild it from SQLite;
and the catalog's vectors as a streamed source or fetched by id.

The file is named after the catalog generation it reflects, and the catalog records what that
file must be (its size, sha256, vector count and dimension: faiss_files.FileRecord). A file that
is missing, stale (a killed run, an older generation), damaged or swapped is detected here and
rebuilt with a notice, never an error and never a loss. A rebuild keeps the index's kind and
tuned parameters.

How much is checked: every open checks size, count and dimension against the record, and the
sha256 too for files up to READER_HASH_LIMIT; `thorough` (index runs, `imgsearch check`) always
hashes the whole file and counts the catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, Connection, func, select

from store import faiss_files as files
from store import tuning
from store.ann import AnnIndex, IndexSpec
from store.faiss_files import FileRecord
from store.records import Vectors
from store.schema import generation_of, images, meta, unblob

log = logging.getLogger("imgsearch.store")
_CHUNK = 20_000


@dataclass(frozen=True)
class Loaded:
    index: AnnIndex
    generation: int
    rebuilt: str | None  # why it was rebuilt from the catalog (None: the file was sound)
    record: FileRecord | None  # the file now on disk for this generation, if it was saved


def load_or_rebuild(
    conn: Connection,
    home: Path,
    dim: int,
    spec: IndexSpec,
    *,
    mmap: bool,
    thorough: bool,
    save: bool,
) -> Loaded:
    """The index and the generation it reflects, read in one snapshot of `conn`.

    `mmap`: map IVF lists instead of reading them (read-only use). `save`: write a rebuilt
    index as this generation's file (the caller holds the writer lock, or no one does).
    """
    generation = generation_of(conn)
    text = conn.execute(select(meta.c.value).where(meta.c.key == "faiss_file")).scalar()
    record = FileRecord.from_json(text)
    if record is not None and record.generation != generation:
        record = None  # written for another generation: the file name tells it is stale
    count = None
    if thorough or record is None:
        count = int(conn.execute(select(func.count()).select_from(images)).scalar_one())
    found = _read_file(home, generation, spec, mmap, _Expected(record, count, dim, thorough))
    if isinstance(found, AnnIndex):
        return Loaded(found, generation, None, record)
    if found == "absent":  # no file yet is normal for an empty catalog
        found = "missing" if conn.execute(select(images.c.id).limit(1)).first() else "new"
    source = CatalogVectors(conn, dim)
    if source.count() < spec.min_vectors():  # cannot train: only after a damaged catalog
        spec = IndexSpec()
    index = tuning.build(dim, spec, source)
    written = None
    if save:
        try:
            written = files.write_atomic(index, home, generation)
        except OSError as exc:  # a read-only home still answers queries from memory
            log.info("could not save the rebuilt FAISS file in %s: %s", home, exc)
    return Loaded(index, generation, None if found == "new" else found, written)


@dataclass(frozen=True)
class _Expected:
    record: FileRecord | None
    count: int | None  # the catalog's count, when it was counted
    dim: int
    thorough: bool


def _read_file(
    home: Path, generation: int, spec: IndexSpec, mmap: bool, expected: _Expected
) -> AnnIndex | str:
    """The FAISS file for `generation` if it is sound, else why it must be rebuilt."""
    path = files.file_for(home, generation)
    record = expected.record
    if not path.is_file():
        if any(home.glob(f"{files.FILE_PREFIX}*{files.FILE_SUFFIX}")):
            return "stale (an earlier run did not finish)"
        return "absent"
    size = path.stat().st_size
    if record is not None:
        if size != record.bytes:
            return f"damaged ({size} bytes, {record.bytes} were written)"
        if (expected.thorough or size <= files.READER_HASH_LIMIT) and (
            files.sha256_of(path) != record.sha256
        ):
            return "damaged (its checksum does not match the one recorded)"
    try:
        index = AnnIndex.read(path, spec, mmap)
    except (OSError, RuntimeError, ValueError):
        return "unreadable"
    if int(index.index.d) != expected.dim:
        return f"damaged (dimension {index.index.d}, not {expected.dim})"
    wanted = expected.count if expected.count is not None else record.count if record else None
    if wanted is not None and index.count != wanted:
        return f"out of date ({index.count} vectors, catalog {wanted})"
    return index


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
            yield ids, np.stack([unblob(row[1], self.dim) for row in chunk])

    def sample(self, n: int, seed: int) -> tuple[NDArray[np.int64], Vectors]:
        """`n` vectors picked at random (ids alone are read for the choice)."""
        every = np.array(self.conn.execute(select(images.c.id)).scalars().all(), dtype=np.int64)
        picked = np.sort(np.random.RandomState(seed).choice(every, n, replace=False))
        return picked, self.fetch(picked)

    def fetch(self, ids: NDArray[np.int64]) -> Vectors:
        return fetch_vectors(self.conn, ids, self.dim)

    def all(self) -> tuple[NDArray[np.int64], Vectors]:
        """Every (id, vector) in the catalog, in id order (for the duplicate self-join)."""
        ids: list[NDArray[np.int64]] = []
        chunks: list[Vectors] = []
        for chunk_ids, vectors in self.chunks():
            ids.append(chunk_ids)
            chunks.append(vectors)
        if not chunks:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(ids), np.concatenate(chunks)


def fetch_vectors(conn: Connection, ids: NDArray[np.int64], dim: int) -> Vectors:
    """The stored vectors of `ids` (which must all be stored), in that order."""
    vectors, present = _fill(conn, ids, dim)
    if not present.any():
        return np.zeros((0, dim), dtype=np.float32)
    if not present.all():
        raise KeyError(int(ids[np.argmin(present)]))
    return vectors


def fetch_present(
    conn: Connection, ids: NDArray[np.int64], dim: int
) -> tuple[NDArray[np.int64], Vectors]:
    """(ids, vectors) of those sorted `ids` that are stored, in that order: by primary key,
    so the cost follows len(ids), not the collection."""
    vectors, present = _fill(conn, ids, dim)
    if present.all():
        return ids, vectors
    return ids[present], vectors[present]


def _fill(conn: Connection, ids: NDArray[np.int64], dim: int) -> tuple[Vectors, NDArray[np.bool_]]:
    """The stored vectors of `ids`, in that order, read into one array (a million vectors are
    read without a second copy of them), and which of `ids` are stored (their rows of zeros
    otherwise)."""
    vectors = np.zeros((len(ids), dim), dtype=np.float32)
    present = np.zeros(len(ids), dtype=bool)
    for at, blob in rows_by_id(conn, images.c.vector, ids.tolist()):
        vectors[at], present[at] = unblob(blob, dim), True
    return vectors, present


def rows_by_id(
    conn: Connection, column: ColumnElement[Any], ids: Sequence[int], chunk: int = _CHUNK
) -> Iterator[tuple[int, Any]]:
    """(position in `ids`, value of `column`) for each of `ids` in the catalog, read by primary
    key `chunk` ids at a time: the cost follows len(ids), not the collection."""
    for start in range(0, len(ids), chunk):
        wanted = [int(i) for i in ids[start : start + chunk]]
        query = select(images.c.id, column).where(images.c.id.in_(wanted))
        found = {int(i): value for i, value in conn.execute(query)}
        for k, i in enumerate(wanted):
            if i in found:
                yield start + k, found[i]
