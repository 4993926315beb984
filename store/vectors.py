"""The FAISS files of the store: import, naming by generation, atomic writes.

FAISS is imported lazily here and nowhere else: it is an extra (`cpu` or `gpu`), and a missing
install must become a clear error, not an ImportError deep in a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.errors import FaissUnavailable

if TYPE_CHECKING:
    from store.ann import AnnIndex

FILE_PREFIX = "vectors.g"
FILE_SUFFIX = ".faiss"


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise FaissUnavailable(
            "faiss is not installed: pip install 'imgsearch-engine[cpu]' (or [gpu])"
        ) from exc
    return faiss


def file_for(home: Path, generation: int) -> Path:
    return home / f"{FILE_PREFIX}{generation}{FILE_SUFFIX}"


def tombstone_file(path: Path) -> Path:
    """An HNSW index file's sidecar: which positions are removed or replaced."""
    return path.with_name(path.name + ".dead.npy")


def write_atomic(index: AnnIndex, home: Path, generation: int) -> Path:
    """Write to temp files, fsync, rename; then drop files of older generations.

    `faiss.write_index` is not atomic: a kill mid-write leaves an unreadable file (NOTES.md).
    An HNSW index's tombstone sidecar is renamed first: a reader that finds the index file
    finds its sidecar, and checks that they match.
    """
    target = file_for(home, generation)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pairs = [(tombstone_file(tmp), tombstone_file(target)), (tmp, target)]
    try:
        index.write(tmp)
        for written, final in pairs:
            if written.exists():
                with open(written, "rb") as handle:
                    os.fsync(handle.fileno())
                written.replace(final)
    finally:
        for written, _ in pairs:
            written.unlink(missing_ok=True)
    # Only older generations: a reader that rebuilt from an older snapshot must not delete the
    # newer file a concurrent writer has just saved.
    for old in home.glob(f"{FILE_PREFIX}*"):
        if _generation_of(old) < generation:
            old.unlink(missing_ok=True)
    return target


def _generation_of(path: Path) -> int:
    digits = path.name.removeprefix(FILE_PREFIX).split(".")[0]
    return int(digits) if digits.isdigit() else -1
