"""Rows of files that actions moved or deleted, kept aside so that `undo` restores them."""

from __future__ import annotations

import os
from collections.abc import Sequence

from sqlalchemy import Connection, delete, insert, select

from store import tags
from store.records import Vector
from store.schema import failures, folder_of, images, removed_images, unblob

_COLUMNS = ("id", "path", "size", "mtime_ns", "content_hash", "width", "height", "vector", "views")


def forget_rows(conn: Connection, paths: Sequence[str], journal: str | None) -> list[int]:
    """Delete the rows of `paths` (and their failures); keep them aside under `journal` if
    given. Returns the ids deleted."""
    query = select(*[images.c[c] for c in _COLUMNS]).where(images.c.path.in_(list(paths)))
    rows = [dict(r._mapping) for r in conn.execute(query)]
    ids = [r["id"] for r in rows]
    if journal is not None and rows:
        conn.execute(delete(removed_images).where(removed_images.c.id.in_(ids)))
        conn.execute(insert(removed_images), [{**r, "journal": journal} for r in rows])
    conn.execute(delete(images).where(images.c.id.in_(ids)))
    conn.execute(delete(failures).where(failures.c.path.in_(list(paths))))
    if journal is None:  # the tags and cached results of kept-aside rows stay, for their return
        tags.prune_contents(conn, (r["content_hash"] for r in rows))
    return ids


def restore_rows(
    conn: Connection, journal: str, paths: Sequence[str], dim: int
) -> list[tuple[int, Vector]]:
    """Put the kept-aside rows of `paths` back (same ids), if each file is on disk with the
    size and mtime it had and its path is not indexed again meanwhile. Returns (id, vector)."""
    query = select(removed_images).where(
        removed_images.c.journal == journal, removed_images.c.path.in_(list(paths))
    )
    taken = set(conn.execute(select(images.c.path).where(images.c.path.in_(list(paths)))).scalars())
    restored: list[tuple[int, Vector]] = []
    for row in conn.execute(query).all():
        r = row._mapping
        try:
            st = os.stat(r["path"])
        except OSError:
            continue
        if r["path"] in taken or (st.st_size, st.st_mtime_ns) != (r["size"], r["mtime_ns"]):
            continue
        values = {c: r[c] for c in _COLUMNS}
        conn.execute(insert(images), {**values, "folder": folder_of(r["path"])})
        conn.execute(delete(removed_images).where(removed_images.c.id == r["id"]))
        restored.append((int(r["id"]), unblob(r["vector"], dim)))
    return restored
