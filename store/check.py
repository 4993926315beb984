"""`imgsearch check`: is the catalog sound, and is the FAISS file what the catalog says?

The catalog is checked by SQLite (`PRAGMA integrity_check`) and by reading every stored vector
(each must be `dim` float32 values); it is never written when SQLite reports it damaged. The
FAISS file is then verified in full (sha256, count, dimension) and rebuilt from the catalog if
it is not sound, under the writer lock.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.errors import CatalogDamaged, IndexNotFound
from store.home import catalog_path
from store.lock import DEFAULT_WAIT
from store.store import Store


@dataclass(frozen=True)
class CheckReport:
    home: str
    catalog_ok: bool
    catalog_problems: list[str] = field(default_factory=list)
    images: int = 0
    faiss: str = "not checked"  # "sound", or why it was rebuilt

    def to_json(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "catalog_ok": self.catalog_ok,
            "catalog_problems": self.catalog_problems,
            "images": self.images,
            "faiss": self.faiss,
        }

    def lines(self) -> list[str]:
        if not self.catalog_ok:
            return [f"catalog: damaged ({p})" for p in self.catalog_problems[:10]]
        return [f"catalog: sound ({self.images} images)", f"FAISS file: {self.faiss}"]


def check_home(home: Path) -> CheckReport:
    path = catalog_path(home)
    if not path.is_file():
        raise IndexNotFound(f"no index in {home}: run `imgsearch index PATH` first")
    problems = _integrity(path)
    if problems:
        return CheckReport(str(home), False, problems)
    with Store.writer(home, wait=DEFAULT_WAIT) as store:
        try:
            images = sum(len(records) for records, _ in store.catalog.chunks())
        except CatalogDamaged as exc:
            return CheckReport(str(home), False, [str(exc)])
        rebuilt = store.index.verify()
    return CheckReport(str(home), True, [], images, rebuilt or "sound")


def _integrity(path: Path) -> list[str]:
    """SQLite's own verdict, read-only (nothing is written to a damaged file)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            rows = [str(r[0]) for r in db.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows
