"""What the server's requests share: one open store, reopened when another process changed the
catalog, the model once loaded, the thumbnail cache and the limits."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.options import ModelOptions
from store import Store

DEFAULT_MAX_UPLOAD = 20 << 20  # bytes
THUMBNAIL_CACHE_BYTES = 64 << 20
DECODES_AT_ONCE = 2  # large images decoded at the same time (memory, and the other requests)
# Uploads and thumbnails are checked against this from their header: a 100 MP photo is served,
# a 225 MP one-colour PNG (690 KB, 1.75 GB decoded) is not (`serve --max-pixels`).
SERVE_MAX_PIXELS = 100_000_000


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
    _folders: tuple[int, list[str]] | None = None

    def folders(self, store: Store) -> list[str]:
        """The folders that hold indexed images: worked out once per catalog generation (it
        reads every path), then reused by every page of browsing."""
        generation = store.catalog.generation()
        if self._folders is None or self._folders[0] != generation:
            paths = store.catalog.file_states()
            self._folders = (generation, sorted({os.path.dirname(p) for p in paths}))
        return self._folders[1]

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
