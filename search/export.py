"""`imgsearch export`: ids, paths, vectors and metadata, for numpy, pandas, polars or Spark.

Both name the columns alike: `id`, `path`, `vector`, `size`, `mtime_ns`, `content_hash`,
`width`, `height`, `tags` (JSON). `.npz` holds them as arrays plus the index's `model` and
`dim`. `.parquet` holds one row per image with the vector as a fixed-size list, written chunk
by chunk, so memory stays bounded; the model and dimension
are in the file's key/value metadata; a path that is not valid UTF-8 is written there with
backslash escapes for its odd bytes. Both are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from store import ImageRecord, ImgsearchError, Store, Vectors, atomic_path

FORMATS = (".npz", ".parquet")


class ExportError(ImgsearchError):
    """An output file that cannot be written; the message names it and why."""


def export(store: Store, out: Path) -> int:
    """Write every indexed image to `out` (.npz or .parquet). Returns how many."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ExportError(f"{out}: unknown format (use {' or '.join(FORMATS)})")
    try:
        with atomic_path(out) as tmp:
            count = _npz(store, tmp) if suffix == ".npz" else _parquet(store, tmp)
    except OSError as exc:
        raise ExportError(f"{out}: {exc.strerror or exc}") from exc
    return count


def _columns(store: Store, records: list[ImageRecord]) -> dict[str, Any]:
    tags = store.catalog.tags_of(r.id for r in records)
    return {
        "id": [r.id for r in records],
        "path": [r.path for r in records],
        "size": [r.size for r in records],
        "mtime_ns": [r.mtime_ns for r in records],
        "content_hash": [r.content_hash for r in records],
        "width": [r.width for r in records],
        "height": [r.height for r in records],
        "tags": [json.dumps(tags.get(r.id, [])) for r in records],
    }


def _npz(store: Store, out: Path) -> int:
    columns: dict[str, list[Any]] = {}
    vectors: list[Vectors] = []
    for records, chunk in store.catalog.chunks():
        for name, values in _columns(store, records).items():
            columns.setdefault(name, []).extend(values)
        vectors.append(chunk)
    dim = store.meta.dim
    with open(out, "wb") as handle:
        np.savez(
            handle,
            id=np.array(columns.get("id", []), dtype=np.int64),
            path=np.array(columns.get("path", []), dtype=str),
            vector=np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
            size=np.array(columns.get("size", []), dtype=np.int64),
            mtime_ns=np.array(columns.get("mtime_ns", []), dtype=np.int64),
            content_hash=np.array(columns.get("content_hash", []), dtype=str),
            width=np.array(columns.get("width", []), dtype=np.int32),
            height=np.array(columns.get("height", []), dtype=np.int32),
            tags=np.array(columns.get("tags", []), dtype=str),
            model=np.array(store.meta.model),
            dim=np.array(dim),
        )
    return len(columns.get("id", []))


def _parquet(store: Store, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = store.meta.dim
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("path", pa.string()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("content_hash", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("tags", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ],
        metadata={"model": store.meta.model, "dim": str(dim)},
    )
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        for records, chunk in store.catalog.chunks():
            columns = _columns(store, records)
            columns["path"] = [_utf8(p) for p in columns["path"]]
            flat = pa.array(np.ascontiguousarray(chunk).reshape(-1), type=pa.float32())
            columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, dim)
            writer.write_table(pa.table(columns, schema=schema))
            count += len(records)
    return count


def _utf8(path: str) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")
