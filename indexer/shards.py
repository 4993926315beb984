"""Embedding shards: what distributed workers write and the driver ingests into the store.

A shard is a Parquet file with one row per file: `order` (the file's position in the run's
plan), `path` (bytes, as the file system spells it), `size`, `mtime_ns`, `content_hash`,
`width`, `height`, `vector` (list of float32; null for a failure), `tags` (JSON list of
[label, score]) and `error` (null, or the one-line reason the file failed). PySpark and
pandas read them as they are. `run.json` beside them names the model they were made with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from store import Embedded, Failure, ImageFile, Tag

RUN_FILE = "run.json"


@dataclass(frozen=True)
class ShardRow:
    order: int
    item: Embedded | Failure


def write_run(folder: Path, model: str, settings: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps({"model": model, **settings}))


def read_run(folder: Path) -> dict[str, str] | None:
    try:
        data: dict[str, str] = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def shard_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet")) if folder.is_dir() else []


def read_rows(files: list[Path]) -> Iterator[ShardRow]:
    """Every row of the shards, in plan order. A damaged shard is skipped (its files are
    simply embedded again by the next run)."""
    import pyarrow.parquet as pq

    rows: list[ShardRow] = []
    for file in files:
        try:
            table = pq.read_table(file)
        except (OSError, ValueError):
            continue
        rows.extend(_row(r) for r in table.to_pylist())
    yield from sorted(rows, key=lambda r: r.order)


def _row(r: dict[str, Any]) -> ShardRow:
    path = os.fsdecode(r["path"])
    if r["error"] is not None or r["vector"] is None:
        return ShardRow(r["order"], Failure(path, r["size"], r["mtime_ns"], r["error"] or "?"))
    file = ImageFile(path, r["size"], r["mtime_ns"], r["content_hash"])
    tags = tuple(Tag(label, score) for label, score in json.loads(r["tags"] or "[]"))
    vector = np.asarray(r["vector"], dtype=np.float32)
    return ShardRow(r["order"], Embedded(file, r["width"], r["height"], vector, tags))
