"""Browsing a page of the catalog (GET /api/browse) by SQL: the same pages as sorting every
record in Python, the oracle, for folders whose names are prefixes of each other."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from store import Embedded, ImageFile, NewIndex, Store


def test_pages_newest_first_match_a_full_sort(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    folders = ["a", "a/b", "a0", "a b", "ab", "a/b/c", "z\udcff"]  # a non-UTF-8 name too
    store = Store.writer(tmp_path / "home", new=NewIndex("test-model", 4))
    batch = []
    for n in range(120):
        folder = tmp_path / folders[n % len(folders)]
        path = os.path.join(str(folder), f"{n:03d}.jpg")
        mtime = int(rng.integers(0, 40)) * 1_000_000_000  # ties: ordered by path
        vector = rng.standard_normal(4).astype(np.float32)
        file = ImageFile(path, 10 + n, mtime, f"hash{n}")
        batch.append(Embedded(file, 8, 8, vector / np.linalg.norm(vector)))
    store.commit_batch(batch, [])
    every = sorted(store.catalog.file_states().values(), key=lambda r: (-r.mtime_ns, r.path))
    for folder in [None, *(str(tmp_path / f) for f in folders), str(tmp_path / "a") + os.sep]:
        wanted = [
            r for r in every if folder is None or os.path.dirname(r.path) == folder.rstrip(os.sep)
        ]
        for offset, limit in ((0, 7), (5, 30), (100, 60)):
            total, page = store.catalog.newest(folder, offset, limit)
            assert total == len(wanted), folder
            assert [r.id for r in page] == [r.id for r in wanted[offset : offset + limit]]
    store.close()
