"""Embedding shards: what distributed workers write and the driver ingests into the store.

A shard is a Parquet file with one row per file: `order` (the file's position in the run's
plan), `path` (bytes, as the file system spells it), `size`, `mtime_ns`, `content_hash`,
`width`, `height`, `vector` (list of float32; null for a failure or a reused content), `tags`
(JSON list of [label, score]), `views` (the regional views' descriptors, flattened; null
when the model makes none), `reuse` (the content is already indexed) and `error` (null, or
the one-line reason the file failed). PySpark and pandas read them as they are. `run.json`
beside them names the model they were made with; shards of another model are not ingested.

The driver reads them one shard, and one row group, at a time (bounded memory), shards in the
order of their first planned file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from indexer.session import Outcome, Reused
from store import Embedded, Failure, FileStat, ImageFile, Tag

RUN_FILE = "run.json"
READ_BATCH = 1000  # rows per read from a shard
log = logging.getLogger("imgsearch.indexer")


def write_run(folder: Path, model: str, dim: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps({"model": model, "dim": dim}))


def run_matches(folder: Path, model: str, dim: int) -> bool:
    """Whether the shards in `folder` were made with this model (no run.json: nothing to
    ingest, or shards of an unknown run, which are not trusted)."""
    try:
        data = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return False
    return bool(data.get("model") == model and data.get("dim") == dim)


def shard_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet")) if folder.is_dir() else []


def read_outcomes(files: list[Path]) -> Iterator[list[Outcome]]:
    """Every row of the shards as outcomes, READ_BATCH at a time. A damaged shard is skipped
    (its files are simply embedded again by the next run)."""
    import pyarrow.parquet as pq

    for file in sorted(files, key=_first_order):
        try:
            handle = pq.ParquetFile(file)
            for batch in handle.iter_batches(batch_size=READ_BATCH):
                rows = sorted(batch.to_pylist(), key=lambda r: int(r["order"]))
                yield [_outcome(r) for r in rows]
        except (OSError, ValueError) as exc:
            log.warning("skipped damaged shard %s (%s)", file, exc)


def _first_order(file: Path) -> int:
    import pyarrow.parquet as pq

    try:
        orders = pq.read_table(file, columns=["order"])["order"]
        return int(min(orders.to_pylist(), default=0))
    except (OSError, ValueError, KeyError):
        return 0


def _outcome(r: dict[str, Any]) -> Outcome:
    path = os.fsdecode(r["path"])
    if r["error"] is not None:
        return Failure(path, r["size"], r["mtime_ns"], r["error"])
    file = ImageFile(path, r["size"], r["mtime_ns"], r["content_hash"])
    if r.get("reuse"):
        return Reused(file, FileStat(path, r["size"], r["mtime_ns"]))
    if r["vector"] is None:
        return Failure(path, r["size"], r["mtime_ns"], "no vector in its shard")
    tags = tuple(Tag(label, score) for label, score in json.loads(r["tags"] or "[]"))
    vector = np.asarray(r["vector"], dtype=np.float32)
    views = r.get("views")
    described = None if views is None else np.asarray(views, np.float32).reshape(-1, len(vector))
    return Embedded(file, r["width"], r["height"], vector, tags, described)
