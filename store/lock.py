"""One writer per index home, enforced with an OS file lock (released by the OS if killed).

Every command that changes the catalog, the FAISS file or the user's files holds it: `index`
and `reindex` refuse at once when it is taken (two index runs make no sense); the others
(`dupes` actions and `--ignore`, `undo`, `orient --fix`, `apply`, the server's actions) wait
for it, after a one-line notice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from store.errors import HomeNotWritable, IndexBusy

LOCK_NAME = "writer.lock"
DEFAULT_WAIT = 600.0  # seconds a waiting command waits before giving up
log = logging.getLogger("imgsearch.store")
_held: dict[Path, int] = {}  # homes whose lock this process holds, with a re-entry count


@contextmanager
def exclusive_writer(home: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the home's writer lock. `wait` 0: raise IndexBusy at once if another process holds
    it; otherwise wait up to `wait` seconds, saying so once. Re-entrant within a process."""
    key = home.absolute()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock = FileLock(home / LOCK_NAME)
        _acquire(lock, home, wait)
    except PermissionError as exc:
        raise HomeNotWritable(f"cannot write to {home}: {exc.strerror or exc}") from exc
    except OSError as exc:
        if isinstance(exc, IndexBusy):
            raise
        raise HomeNotWritable(f"cannot write to {home}: {exc.strerror or exc}") from exc
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        lock.release()


def _acquire(lock: FileLock, home: Path, wait: float) -> None:
    try:
        lock.acquire(timeout=0)
        return
    except Timeout:
        if wait <= 0:
            raise IndexBusy(
                f"another imgsearch command is writing to {home}: wait for it to finish"
            ) from None
    log.warning("waiting for another imgsearch command writing to %s to finish", home)
    started = time.monotonic()
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        waited = time.monotonic() - started
        raise IndexBusy(
            f"another imgsearch command kept writing to {home} for {waited:.0f} s: try again "
            "when it has finished"
        ) from None


def holds_writer(home: Path) -> bool:
    """Whether this process holds the home's writer lock."""
    return home.absolute() in _held


def writer_active(home: Path) -> bool:
    """Whether another process holds the home's writer lock right now."""
    if holds_writer(home) or not (home / LOCK_NAME).exists():
        return False
    if not os.access(home, os.W_OK):
        return False  # nobody can write here
    lock = FileLock(home / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return True
    lock.release()
    return False
