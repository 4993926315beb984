"""What the server's requests share: one open store, reopened when another process changed the
catalog, the model once loaded, the thumbnail cache and the limits."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
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
