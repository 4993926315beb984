"""One writer per index home, enforced with an OS file lock (released by the OS if killed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from store.errors import IndexBusy

LOCK_NAME = "writer.lock"


@contextmanager
def exclusive_writer(home: Path) -> Iterator[None]:
    """Hold the home's writer lock, or raise IndexBusy at once if another process holds it."""
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(home / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise IndexBusy(
            f"another `imgsearch index` is writing to {home}: wait for it to finish"
        ) from None
    try:
        yield
    finally:
        lock.release()
