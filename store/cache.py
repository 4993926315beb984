"""The FAISS file as a cache of the catalog: load it if it matches, else rebuild it from SQLite.

The file is named after the catalog generation it reflects, so a file that is missing, stale
(a killed run, an older generation) or damaged is detected here and rebuilt with a notice,
never an error and never a loss.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Connection, func, select

from store import vectors as vecs
from store.records import IndexMeta
from store.schema import generation_of, images, unblob

if TYPE_CHECKING:
    import faiss

log = logging.getLogger("imgsearch.store")
_REBUILD_CHUNK = 20_000


def load_or_rebuild(conn: Connection, home: Path, meta: IndexMeta) -> tuple[faiss.Index, int]:
    """The index and the generation it reflects, read in one snapshot of `conn`."""
    generation = generation_of(conn)
    count = int(conn.execute(select(func.count()).select_from(images)).scalar_one())
    found = _read_file(home, generation, count)
    if not isinstance(found, str):
        return found, generation
    index = vecs.new_index(meta.dim, meta.index_type)
    result = conn.execution_options(yield_per=_REBUILD_CHUNK).execute(
        select(images.c.id, images.c.vector)
    )
    for chunk in result.partitions():
        ids = np.array([row[0] for row in chunk], dtype=np.int64)
        vecs.add(index, ids, np.stack([unblob(row[1]) for row in chunk]))
    if found != "new":
        log.warning("FAISS file %s: rebuilt from the catalog (%d vectors)", found, count)
    try:
        vecs.write_atomic(index, home, generation)
    except OSError as exc:  # a read-only home still answers queries from memory
        log.warning("could not save the rebuilt FAISS file in %s: %s", home, exc)
    return index, generation


def _read_file(home: Path, generation: int, count: int) -> faiss.Index | str:
    """The FAISS file for `generation` if it is sound, else why it must be rebuilt."""
    path = vecs.file_for(home, generation)
    if not path.is_file():
        if any(home.glob(f"{vecs.FILE_PREFIX}*{vecs.FILE_SUFFIX}")):
            return "stale (an earlier run did not finish)"
        return "new" if count == 0 else "missing"
    try:
        index = vecs.read(path)
    except (OSError, RuntimeError):
        return "unreadable"
    if index.ntotal != count:
        return f"out of date ({index.ntotal} vectors, catalog {count})"
    return index
