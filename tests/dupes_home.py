"""A home whose stored vectors make exactly known duplicate groups, with the files on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from indexer.scan import content_hash
from store import Embedded, ImageFile, NewIndex, Store

DIM = 8


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def at_cosine(base: np.ndarray, other: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector with exactly `cosine` to unit `base`, in the plane of base and other."""
    orthogonal = unit(other - (other @ base) * base)
    return unit(cosine * base + np.sqrt(1 - cosine**2) * orthogonal)


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file() and not p.is_symlink()
        else f"link:{os.readlink(p)}"
        if p.is_symlink()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


def build(tmp_path: Path) -> tuple[Store, dict[str, int], Path]:
    """Files on disk + a store whose vectors make known groups (threshold 0.9):

    exact: a.jpg == copies/a.jpg (same bytes)
    near:  b (keeper, biggest) with b1 (0.97) and b2 (0.93)
    chain: c (keeper) ~ d (0.95), d ~ e (0.95), c ~ e (0.81): e must not join c's group
    alone: f
    """
    photos = tmp_path / "photos"
    (photos / "copies").mkdir(parents=True)
    rng = np.random.RandomState(1338)
    base = {name: unit(rng.randn(DIM)) for name in "abcf"}
    # Make the bases far apart (Gram-Schmidt) so that only the intended pairs match.
    names = list(base)
    for i, name in enumerate(names):
        v = base[name]
        for other in names[:i]:
            v = v - (v @ base[other]) * base[other]
        base[name] = unit(v)
    noise = unit(rng.randn(DIM))
    d = at_cosine(base["c"], noise, 0.95)
    vectors = {
        "a.jpg": base["a"], "copies/a.jpg": base["a"],
        "b.jpg": base["b"], "b1.jpg": at_cosine(base["b"], noise, 0.97),
        "b2.jpg": at_cosine(base["b"], unit(rng.randn(DIM)), 0.93),
        "c.jpg": base["c"], "d.jpg": d, "e.jpg": at_cosine(d, -base["c"] + noise, 0.95),
        "f.jpg": base["f"],
    }  # fmt: skip
    pixels = {"b.jpg": (400, 300), "c.jpg": (400, 300)}
    store = Store.writer(tmp_path / "home", new=NewIndex("test-model", DIM))
    batch = []
    for name, vector in vectors.items():
        path = photos / name
        content = b"same bytes" if name.endswith("a.jpg") else name.encode() * 10
        path.write_bytes(content)
        st = path.stat()
        file = ImageFile(str(path), st.st_size, st.st_mtime_ns, content_hash(content))
        width, height = pixels.get(name, (200, 100))
        batch.append(Embedded(file, width, height, vector))
    store.commit_batch(batch, [])
    ids = {name: store.catalog.record_by_path(str(photos / name)).id for name in vectors}
    return store, ids, photos


def as_names(groups: list, ids: dict[str, int]) -> list[tuple[str, str, list[str]]]:
    name = {v: k for k, v in ids.items()}
    return [(g.kind, name[g.keep.id], sorted(name[m.record.id] for m in g.members)) for g in groups]
