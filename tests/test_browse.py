"""Browsing a page of the catalog (GET /api/browse) by SQL: the same pages as sorting every
record in Python, the oracle, for folders whose names are prefixes of each other."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np

from store import Embedded, ImageFile, ImageRecord, NewIndex, Store


def test_pages_newest_first_match_a_full_sort(tmp_path: Path) -> None:
    store, every, folders = filled(tmp_path)
    pages_match(store, every, [None, *folders, folders[0] + os.sep])
    store.close()


def test_a_catalog_of_schema_3_gets_its_folders_and_pages_the_same(tmp_path: Path) -> None:
    store, every, folders = filled(tmp_path)
    store.close()
    with sqlite3.connect(tmp_path / "home" / "catalog.sqlite") as db:  # as schema 3 left it
        db.execute("DROP INDEX images_by_folder")
        db.execute("ALTER TABLE images DROP COLUMN folder")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with Store.writer(tmp_path / "home") as again:  # migrates
        pages_match(again, every, [None, *folders])
    with sqlite3.connect(tmp_path / "home" / "catalog.sqlite") as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM images WHERE folder = ? "
            "ORDER BY mtime_ns DESC, path LIMIT 60 OFFSET 10", (b"x/",)
        ).fetchall()  # fmt: skip
    assert "images_by_folder" in str(plan) and "TEMP B-TREE" not in str(plan)  # no sort


def filled(tmp_path: Path) -> tuple[Store, list[ImageRecord], list[str]]:
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
    return store, every, [str(tmp_path / f) for f in folders]


def pages_match(store: Store, every: list[ImageRecord], folders: list[str | None]) -> None:
    """Pages near the start, the middle (read from either end), the end and past it."""
    for folder in folders:
        wanted = [
            r for r in every if folder is None or os.path.dirname(r.path) == folder.rstrip(os.sep)
        ]
        n = len(wanted)
        for offset, limit in ((0, 7), (5, 30), (n // 2 - 3, 7), (n // 2, 5), (n - 4, 10),
                              (n - 1, 1), (n, 5), (n + 3, 5), (100, 60)):  # fmt: skip
            total, page = store.catalog.newest(folder, offset, limit)
            assert total == n, folder
            assert [r.id for r in page] == [r.id for r in wanted[offset : offset + limit]], (
                folder, offset, limit)  # fmt: skip
