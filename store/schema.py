"""SQLite tables (SQLAlchemy Core) and the engine settings the store relies on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    create_engine,
    event,
    select,
)

from store.records import Vector

SCHEMA_VERSION = 1

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
# alias a stale FAISS entry (NOTES.md). Ids are never reused, so a FAISS id always means one row.
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
    sqlite_autoincrement=True,
)

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


def make_engine(path: Path) -> Engine:
    """An engine in WAL mode: readers never block on a writer, a commit per batch is cheap."""
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, start transactions (see _begin below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL survives a killed process (only power loss can drop the last commits).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # pysqlite only opens a transaction before DML, so two SELECTs could see two different
        # snapshots. An explicit BEGIN makes every read (count + vectors) one consistent snapshot.
        connection.exec_driver_sql("BEGIN")

    return engine


def blob(vector: Vector) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def unblob(data: bytes) -> Vector:
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def generation_of(conn: Connection) -> int:
    """The catalog generation: bumped by every write that changes vectors."""
    return int(conn.execute(select(meta.c.value).where(meta.c.key == "generation")).scalar_one())
