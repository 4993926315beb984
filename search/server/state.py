"""What the server's requests share: one open store, reopened when another process changed the
catalog, the model once loaded, the thumbnail cache and the limits."""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from indexer.options import ModelOptions
from search.copies.dupes import Found
from search.server.listing import FoundCache, Wanted
from search.sets import NO_SETS, Sets
from store import ImageRecord, Store

DEFAULT_MAX_UPLOAD = 20 << 20  # bytes
THUMBNAIL_CACHE_BYTES = 64 << 20
DECODES_AT_ONCE = 2  # large images decoded at the same time (memory, and the other requests)
# Uploads and thumbnails are checked against this from their header: a 100 MP photo is served,
# a 225 MP one-colour PNG (690 KB, 1.75 GB decoded) is not (`serve --max-pixels`).
SERVE_MAX_PIXELS = 100_000_000
WARM_UP_TO = 200_000  # images: up to this, `serve` finds the review's groups as it starts


class PixelBudget:
    """Decoded pixels in flight across requests, held under `limit`: an upload waits until
    its header's pixel count fits (one at a time near the limit), so concurrent huge uploads
    cost one decode's memory, not one each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._free = threading.Condition()

    @contextmanager
    def taking(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.limit)
        with self._free:
            self._free.wait_for(lambda: self.used == 0 or self.used + pixels <= self.limit)
            self.used += pixels
        try:
            yield
        finally:
            with self._free:
                self.used -= pixels
                self._free.notify_all()
            if pixels >= BIG_DECODE:
                _give_back_memory()


BIG_DECODE = 20_000_000  # pixels: after a decode this large, freed memory goes back to the OS


def _give_back_memory() -> None:
    """glibc keeps freed arenas for reuse; a server that decoded one huge upload would hold
    gigabytes for good. malloc_trim hands them back (glibc only; elsewhere a no-op)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    with suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(name).malloc_trim(0)


@dataclass
class ServerState:
    """One open store (reopened when another process changed the catalog) and the model."""

    home: Path
    embedding: ModelOptions
    max_upload: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = SERVE_MAX_PIXELS
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    lock: threading.Lock = field(default_factory=threading.Lock)
    store: Store | None = None
    embedder: Any = None  # indexer.embedder.Embedder, loaded on the first upload
    model_state: str = "not loaded"  # not loaded, loading, ready, failed: ...
    decodes: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(DECODES_AT_ONCE)
    )
    thumbnails: OrderedDict[tuple[int, int, int, int], bytes] = field(default_factory=OrderedDict)
    thumbnail_bytes: int = 0
    budget: PixelBudget = field(default_factory=lambda: PixelBudget(2 * SERVE_MAX_PIXELS))
    found: FoundCache = field(default_factory=FoundCache)  # the review's groups, kept
    sets: Sets = NO_SETS  # `serve --keep-in`: reference folders, never acted on
    _folders: tuple[int, list[str]] | None = None

    def folders(self, store: Store) -> list[str]:
        """The folders that hold indexed images: worked out once per catalog generation (it
        reads every path), then reused by every page of browsing."""
        generation = store.catalog.generation()
        if self._folders is None or self._folders[0] != generation:
            paths = store.catalog.file_states()
            self._folders = (generation, sorted({os.path.dirname(p) for p in paths}))
        return self._folders[1]

    def groups(self, wanted: Wanted) -> Found:
        """The review's duplicate groups for the catalog as it is: kept from the last find
        while nothing changed, else found again with a store of its own, so that the other
        requests (search, browse, thumbnails) go on meanwhile."""
        with self.current() as store:
            found = self.found.cached(store, wanted)
        if found is not None:
            return found
        with Store.open(self.home) as own:
            return self.found.find(own, wanted)

    def warm(self) -> threading.Thread:
        """Find the groups with the default options in the background, so the review's
        first page is there when it is asked for (`serve` starts it). Not above WARM_UP_TO
        images: there a find takes minutes of both cores, which every search and page would
        wait behind; the review finds them when it is first opened (at once when `dupes` ran
        before: its pairs are in the catalog's cache)."""

        def run() -> None:
            with suppress(Exception):  # a request will find them again and say what failed
                with self.current() as store:
                    if store.catalog.count() > WARM_UP_TO:
                        return
                self.groups(Wanted(sets=self.sets))

        thread = threading.Thread(target=run, name="find-duplicates", daemon=True)
        thread.start()
        return thread

    @contextmanager
    def current(self) -> Iterator[Store]:
        """The store, up to date with the catalog; one request at a time."""
        with self.lock:
            if self.store is not None and not self.store.index.is_current():
                self.store.close()
                self.store = None
            if self.store is None:
                self.store = Store.open(self.home)
            yield self.store


def check_servable(record: ImageRecord) -> None:
    """Only the very file that was indexed: at its real path (no folder on the way replaced by
    a link since), not a symlink now, same size and mtime."""
    try:
        st = os.lstat(record.path)
    except OSError as exc:
        raise HTTPException(404, f"{record.path}: no longer on disk") from exc
    same = (st.st_size, st.st_mtime_ns) == (record.size, record.mtime_ns)
    moved = os.path.realpath(record.path) != record.path  # files are indexed at real paths
    if not stat.S_ISREG(st.st_mode) or not same or moved:
        raise HTTPException(409, f"{record.path}: changed since it was indexed; index it again")
