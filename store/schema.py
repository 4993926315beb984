"""SQLite tables (SQLAlchemy Core) and the engine settings the store relies on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    bindparam,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from store.errors import CatalogDamaged, HomeNotWritable
from store.records import Vector

# 2: images.views; keepers, removed_images, results_cache and content_cache (added to an
# older catalog by the first process that can write it: `migrate`).
# 3: images_by_mtime (browsing pages by SQL); 4: images.folder and images_by_folder (browsing
# one folder's pages by SQL; filled in for older rows by `migrate`).
SCHEMA_VERSION = 4

metadata = MetaData()


class FsPath(TypeDecorator[str]):
    """A file path stored as its exact bytes, so names that are not valid UTF-8 round-trip.

    Python gives such names as str with surrogate escapes, which SQLite's TEXT cannot hold.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else os.fsdecode(value)


meta = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", String, nullable=False),
)

# AUTOINCREMENT: a plain INTEGER PRIMARY KEY reuses the highest id after a delete, which would
# alias a stale FAISS entry. Ids are never reused, so a FAISS id always means one row.
images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", FsPath, nullable=False, unique=True),
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("content_hash", String, nullable=False, index=True),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # float32, little-endian, unit norm
    # The regional views' unit descriptors (R, dim) as float16, little-endian; NULL: none.
    Column("views", LargeBinary, nullable=True),
    # The folder that holds the file (`folder_of(path)`), for browsing one folder.
    Column("folder", FsPath, nullable=True),
    sqlite_autoincrement=True,
)
# Browsing newest first, a page at a time, without sorting the catalog (GET /api/browse), the
# whole catalog or one folder's files.
Index("images_by_mtime", images.c.mtime_ns.desc(), images.c.path)
Index("images_by_folder", images.c.folder, images.c.mtime_ns.desc(), images.c.path)


def folder_of(path: str) -> str:
    """The folder holding `path`, ending in one separator: what `images.folder` holds."""
    return os.path.dirname(path).rstrip(os.sep) + os.sep


failures = Table(
    "failures",
    metadata,
    Column("path", FsPath, primary_key=True),
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("error", String, nullable=False),
)


# Pairs of contents the user said are not duplicates (`dupes --ignore`), by content hash so that
# the decision survives renames and moves. Stored with hash_a < hash_b.
ignored_pairs = Table(
    "ignored_pairs",
    metadata,
    Column("hash_a", String, primary_key=True),
    Column("hash_b", String, primary_key=True),
)


# Top classes of each content (models with a named classification head), by content hash like
# ignored_pairs: a copy or a rename reuses them with the vector. Scores are softmax probabilities.
tags = Table(
    "tags",
    metadata,
    Column("content_hash", String, primary_key=True),
    Column("rank", Integer, primary_key=True),
    Column("label", String, nullable=False, index=True),
    Column("score", Float, nullable=False),
)


# What the user decided about duplicate groups, by content hash (survives renames and re-runs):
# the copy to keep of the group holding this content (`imgsearch serve`'s review, `apply`).
keepers = Table(
    "keepers",
    metadata,
    Column("content_hash", String, primary_key=True),
    Column("chosen_at", Float, nullable=False),
)

# Rows of files that an action moved or deleted, kept so that `undo` brings them back with
# their ids and vectors (no re-embedding). `journal` names the action.
removed_images = Table(
    "removed_images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", FsPath, nullable=False),
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("content_hash", String, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Column("views", LargeBinary, nullable=True),
    Column("journal", String, nullable=False, index=True),
)

# Results that take long to compute: near-duplicate pairs (rotated ones included), reusable
# while the catalog generation and the options that produced them are the same; and what is
# made from each content's pixels (`kind`: local features for verification, the keeper's look
# at a file), by content hash, valid across generations while the code's `version` is the same.
results_cache = Table(
    "results_cache",
    metadata,
    Column("key", String, primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)
content_cache = Table(
    "content_cache",
    metadata,
    Column("content_hash", String, primary_key=True),
    Column("kind", String, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

_DAMAGED = ("malformed", "not a database", "file is encrypted", "disk i/o error")
_READ_ONLY = ("readonly database", "read-only", "unable to open database")


def make_engine(path: Path, read_only: bool = False) -> Engine:
    """An engine in WAL mode: readers never block on a writer, a commit per batch is cheap.

    `read_only`: the home cannot be written (a read-only mount, no permission): SQLite opens
    the catalog immutable, since WAL readers otherwise need to write the -shm file.
    Write transactions (`writing(engine)`) begin IMMEDIATE, so that they wait for the write
    lock (busy timeout) instead of failing with "database is locked" when a read snapshot
    would have to be upgraded.
    """
    url = (
        f"sqlite:///file:{path}?mode=ro&immutable=1&uri=true" if read_only else f"sqlite:///{path}"
    )
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, start transactions (see _begin below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # First: setting the journal mode may have to wait for a writer too.
        cursor.execute("PRAGMA busy_timeout=30000")
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL survives a killed process (only power loss can drop the last commits).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # pysqlite only opens a transaction before DML, so two SELECTs could see two different
        # snapshots. An explicit BEGIN makes every read (count + vectors) one consistent snapshot.
        write = connection.get_execution_options().get("imgsearch_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    @event.listens_for(engine, "handle_error")
    def _translate(context: Any) -> None:
        text = str(context.original_exception).lower()
        if any(word in text for word in _DAMAGED):
            raise CatalogDamaged(
                f"{path} is damaged ({context.original_exception}): run `imgsearch check`, then "
                "restore a backup of it or index into a new home"
            ) from context.original_exception
        if any(word in text for word in _READ_ONLY):
            raise HomeNotWritable(
                f"cannot write {path} ({context.original_exception}): the index home is "
                "read-only here"
            ) from context.original_exception

    return engine


def migrate(conn: Connection) -> None:
    """Bring a catalog of an earlier schema up to this one (inside a write transaction)."""
    metadata.create_all(conn)
    columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(images)")}
    if "views" not in columns:
        conn.exec_driver_sql("ALTER TABLE images ADD COLUMN views BLOB")
    if "folder" not in columns:
        conn.exec_driver_sql("ALTER TABLE images ADD COLUMN folder BLOB")
        rows = conn.execute(select(images.c.id, images.c.path)).all()
        for start in range(0, len(rows), 10_000):
            conn.execute(
                update(images).where(images.c.id == bindparam("row_id")),
                [{"row_id": i, "folder": folder_of(p)} for i, p in rows[start : start + 10_000]],
            )
    for table in metadata.tables.values():  # create_all makes the indexes of new tables only
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    set_meta(conn, "schema_version", str(SCHEMA_VERSION))


def has_folders(conn: Connection) -> bool:
    return any(row[1] == "folder" for row in conn.exec_driver_sql("PRAGMA table_info(images)"))


def has_views(conn: Connection) -> bool:
    return any(row[1] == "views" for row in conn.exec_driver_sql("PRAGMA table_info(images)"))


def views_blob(views: NDArray[np.float32] | None) -> bytes | None:
    return None if views is None else np.ascontiguousarray(views, dtype="<f2").tobytes()


def views_unblob(data: bytes | None, dim: int) -> NDArray[np.float32] | None:
    half = views_half(data, dim)
    return None if half is None else half.astype(np.float32)


def views_half(data: bytes | None, dim: int) -> NDArray[np.float16] | None:
    """Stored views (R, d) as they are stored, float16 (read-only)."""
    if data is None:
        return None
    if len(data) % (2 * dim):
        raise CatalogDamaged(f"stored views of {len(data)} bytes are not float16 rows of {dim}")
    return np.frombuffer(data, dtype="<f2").reshape(-1, dim)


def writing(engine: Engine) -> Engine:
    """The engine whose transactions are write transactions (BEGIN IMMEDIATE)."""
    return engine.execution_options(imgsearch_write=True)


def blob(vector: Vector) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def unblob(data: bytes, dim: int | None = None) -> Vector:
    """A stored vector; CatalogDamaged if the blob is not `dim` float32 values."""
    if dim is not None and len(data) != 4 * dim:
        raise CatalogDamaged(
            f"a stored vector has {len(data)} bytes, not {4 * dim} ({dim} float32): the catalog "
            "is damaged; run `imgsearch check`"
        )
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def generation_of(conn: Connection) -> int:
    """The catalog generation: bumped by every write that changes vectors."""
    return int(conn.execute(select(meta.c.value).where(meta.c.key == "generation")).scalar_one())


def bump_generation(conn: Connection) -> int:
    """Raise the generation by one inside a write transaction; the new value."""
    generation = generation_of(conn) + 1
    conn.execute(update(meta).where(meta.c.key == "generation").values(value=str(generation)))
    return generation


def set_meta(conn: Connection, key: str, value: str) -> None:
    upsert = sqlite_insert(meta).on_conflict_do_update(
        index_elements=[meta.c.key], set_={"value": value}
    )
    conn.execute(upsert, {"key": key, "value": value})


def bump_decisions(conn: Connection) -> None:
    """Count a change of the user's review decisions (keepers, "not duplicates") inside a
    write transaction: a long-lived reader's cached groups are stale once it moves."""
    row = conn.execute(select(meta.c.value).where(meta.c.key == "decisions")).scalar_one_or_none()
    set_meta(conn, "decisions", str(int(row or 0) + 1))


def decisions_of(conn: Connection) -> int:
    row = conn.execute(select(meta.c.value).where(meta.c.key == "decisions")).scalar_one_or_none()
    return int(row or 0)
