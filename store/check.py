"""`imgsearch check`: is the catalog sound, and is the FAISS file what the catalog says?

The catalog is checked by SQLite (`PRAGMA integrity_check`), by its record of itself (meta and
tables), and by reading every stored vector (each must be `dim` finite float32 values of unit
length; rows that are not leave the index, so the next `index` embeds their files again); it
is never written when SQLite reports it damaged. The
FAISS file is then verified in full (sha256, count, dimension) and rebuilt from the catalog if
it is not sound, under the writer lock.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from store.errors import CatalogDamaged, IndexNotFound
from store.home import catalog_path
from store.lock import DEFAULT_WAIT
from store.records import Vectors
from store.store import Store


@dataclass(frozen=True)
class CheckReport:
    home: str
    catalog_ok: bool
    catalog_problems: list[str] = field(default_factory=list)
    images: int = 0
    faiss: str = "not checked"  # "sound", or why it was rebuilt
    bad_vectors: list[str] = field(default_factory=list)  # files whose rows were dropped

    def to_json(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "catalog_ok": self.catalog_ok,
            "catalog_problems": self.catalog_problems,
            "images": self.images,
            "faiss": self.faiss,
            "bad_vectors": self.bad_vectors,
        }

    def lines(self) -> list[str]:
        if not self.catalog_ok:
            return [f"catalog: damaged ({p})" for p in self.catalog_problems[:10]]
        found = [f"catalog: sound ({self.images} images)", f"FAISS file: {self.faiss}"]
        if self.bad_vectors:
            found.append(
                f"vectors: {len(self.bad_vectors)} were not finite unit vectors and left the "
                f"index (first: {self.bad_vectors[0]}); run `imgsearch index` on their folders "
                "to embed them again"
            )
        return found


def check_home(home: Path) -> CheckReport:
    path = catalog_path(home)
    if not path.is_file():
        raise IndexNotFound(f"no index in {home}: run `imgsearch index PATH` first")
    problems = _integrity(path)
    if problems:
        return CheckReport(str(home), False, problems)
    try:
        with Store.writer(home, wait=DEFAULT_WAIT) as store:
            images, bad = 0, []
            for records, vectors in store.catalog.chunks():
                images += len(records)
                bad += [
                    r.path for r, ok in zip(records, _sound_rows(vectors), strict=True) if not ok
                ]
            if bad:  # they leave the index; the next `index` embeds their files again
                store.remove_paths(bad)
            rebuilt = store.index.verify()
    except CatalogDamaged as exc:
        return CheckReport(str(home), False, [str(exc)])
    return CheckReport(str(home), True, [], images - len(bad), rebuilt or "sound", bad)


def _sound_rows(vectors: Vectors) -> NDArray[np.bool_]:
    """Which stored vectors are what `index` stores: finite, and of unit length."""
    finite = np.asarray(np.isfinite(vectors).all(axis=1))
    norms = np.linalg.norm(np.where(finite[:, None], vectors, 0), axis=1)
    unit: NDArray[np.bool_] = np.abs(norms - 1.0) <= 1e-3
    return finite & unit


def _integrity(path: Path) -> list[str]:
    """SQLite's own verdict, read-only (nothing is written to a damaged file)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            rows = [str(r[0]) for r in db.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows
