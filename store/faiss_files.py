"""The FAISS files of a home: import, naming by generation, atomic writes, and what the catalog
records of each file (so a damaged or swapped file is caught before it answers a query).

FAISS is imported lazily here and nowhere else: it is an extra (`cpu` or `gpu`), and a missing
install must become a clear error, not an ImportError deep in a traceback.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from store.atomic import fsync_file, temp_path
from store.errors import FaissUnavailable


class Saved(Protocol):
    """What `write_atomic` needs of an index (store.ann.AnnIndex)."""

    index: Any  # the FAISS index

    @property
    def count(self) -> int: ...

    def write(self, path: Path) -> None: ...


FILE_PREFIX = "vectors.g"
FILE_SUFFIX = ".faiss"
# Readers hash a file this small on every open (a few ms); larger ones only by size, count and
# dimension, and in full by `index` runs and `imgsearch check`.
READER_HASH_LIMIT = 32 << 20


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise FaissUnavailable(
            "faiss is not installed: pip install 'imgsearch-engine[cpu]' (or [gpu])"
        ) from exc
    return faiss


@dataclass(frozen=True)
class FileRecord:
    """What the catalog's meta says the FAISS file of a generation must be."""

    generation: int
    count: int  # live vectors
    dim: int
    bytes: int  # the index file's size (the tombstone sidecar is checked by its length)
    sha256: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> FileRecord | None:
        try:
            return cls(**json.loads(text)) if text else None
        except (ValueError, TypeError):
            return None


def file_for(home: Path, generation: int) -> Path:
    return home / f"{FILE_PREFIX}{generation}{FILE_SUFFIX}"


def tombstone_file(path: Path) -> Path:
    """An HNSW index file's sidecar: which positions are removed or replaced."""
    return path.with_name(path.name + ".dead.npy")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(index: Saved, home: Path, generation: int) -> FileRecord:
    """Write to temp files, fsync, rename; then drop files of older generations. Returns the
    record to keep in the catalog.

    `faiss.write_index` is not atomic: a kill mid-write leaves an unreadable file. An HNSW
    index's tombstone sidecar is renamed first: a reader that finds the index file finds its
    sidecar, and checks that they match.
    """
    target = file_for(home, generation)
    tmp = temp_path(target)
    pairs = [(tombstone_file(tmp), tombstone_file(target)), (tmp, target)]
    try:
        index.write(tmp)
        record = FileRecord(
            generation, index.count, int(index.index.d), tmp.stat().st_size, sha256_of(tmp)
        )
        for written, final in pairs:
            if written.exists():
                fsync_file(written)
                written.replace(final)
    finally:
        for written, _ in pairs:
            written.unlink(missing_ok=True)
    # Only older generations: a reader that rebuilt from an older snapshot must not delete the
    # newer file a concurrent writer has just saved.
    for old in home.glob(f"{FILE_PREFIX}*"):
        if _generation_in_name(old) < generation:
            old.unlink(missing_ok=True)
    return record


def _generation_in_name(path: Path) -> int:
    digits = path.name.removeprefix(FILE_PREFIX).split(".")[0]
    return int(digits) if digits.isdigit() else -1
