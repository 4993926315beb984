"""Stage 1's joins, shard by shard: each image's nearest others (and each turned descriptor's),
and the whole-against-view join, over k-means cells cut into shards of consecutive cells.

The vectors are centred and placed in cells once (`place`); a shard then joins the queries
that probe its cells with the members of those cells (store.pairs: a probe outside the shard
is none), so the shards' results are disjoint and their merge is what one join over every
cell gives. Locally the join is one shard in this process; `dupes --engine ray` runs the
shards as Ray tasks (search/workers.py) and keeps each finished one on disk (`Shelf`), so a
killed run joins only the cells it had not finished.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from search.copies.cellviews import CellViews, centred
from search.steps import SILENT, Advance, Steps
from search.workers import LOCAL, Workers
from store import (
    Cells,
    Gpu,
    Nearests,
    Side,
    Vectors,
    atomic_path,
    floor_join,
    nearest_probing,
    probes_for,
)

NEIGHBOURS = 20  # candidates per image by global score
DENSITY_K = 20  # the neighbour whose cosine measures how crowded an image's surroundings are
BETA = 0.5
VIEW_NEIGHBOURS = 10  # candidates per image (and per view) through regional views
VIEW_PROBES = 2  # k-means cells each whole probes in the view join (above its exact size)
# Measured on bench/copydetect.py's development part (bench/RESULTS.md): pairs found through
# views below this copy score were rarely verified copies, and they are many (at a million
# images, most of the view join's rows): they are dropped as they are found.
VIEW_REJECT = 0.2
log = logging.getLogger("imgsearch.search")

Span = tuple[int, int]  # a shard: cells [first, last)
Arrays = dict[str, NDArray[Any]]  # what a shard finds, by name (as kept on the shelf)


@dataclass(frozen=True)
class Placed:
    """What every shard reads (sent once to every worker): the centred wholes and the cells
    they probe; the views in their cells (in memory, or files a piece reads its cells of); the
    centred turned descriptors and their probes."""

    unit: Vectors
    mean: NDArray[np.float32]
    cells: Cells
    probed: NDArray[np.int64]  # (n, max(probes_for(n), VIEW_PROBES))
    views: CellViews | None = None
    turned: Vectors | None = None
    turned_probed: NDArray[np.int64] | None = None


def place(unit: Vectors, cells: Cells, turned: Vectors | None) -> Arrays:
    """Where the wholes lie, as Placed's fields: the cells each whole probes (`probed`), the
    cells each turned descriptor probes (`turned_probed`). The views are placed apart, a
    chunk at a time (cellviews.place_views)."""
    probes = probes_for(len(unit))
    found: Arrays = {"probed": cells.nearest(unit, max(probes, VIEW_PROBES))}
    if turned is not None:
        found["turned_probed"] = cells.nearest(turned, probes)
    return found


def spans(cells: int, shards: int) -> list[Span]:
    """`shards` runs of consecutive cells covering all of them."""
    bounds = np.linspace(0, cells, min(shards, cells) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _inside(probed: NDArray[np.int64], span: Span) -> NDArray[np.int64]:
    return np.where((probed >= span[0]) & (probed < span[1]), probed, -1)


def nearest_shard(placed: Placed, span: Span) -> Arrays:
    """The wholes' nearest others in the span's cells (max(NEIGHBOURS, DENSITY_K) each:
    `rows`, `near`, `cosine`), and the turned descriptors' nearest wholes there (NEIGHBOURS + 1
    each: `t_rows`, `t_near`, `t_cosine`)."""
    k = max(NEIGHBOURS, DENSITY_K)
    probes = _inside(placed.probed[:, : probes_for(len(placed.unit))], span)
    wholes = nearest_probing(placed.unit, placed.unit, k, placed.cells, probes, same=True)
    found: Arrays = dict(zip(("rows", "near", "cosine"), wholes, strict=True))
    if placed.turned is not None and placed.turned_probed is not None:
        probes = _inside(placed.turned_probed, span)
        turned = nearest_probing(placed.turned, placed.unit, NEIGHBOURS + 1, placed.cells, probes)
        found |= dict(zip(("t_rows", "t_near", "t_cosine"), turned, strict=True))
    return found


def view_shard(placed: Placed, item: tuple[Span, NDArray[np.float32]]) -> Arrays:
    """Whole against view, both ways, in the span's cells, given each image's density: the
    whole's position (`whole`), the position of the image whose view matched (`of`), the
    `cosine`, the view's `region` + 1. A crop's whole matches a view of its source, and a
    canvas's view matches the photo pasted on it. Pairs that cannot reach VIEW_REJECT are
    never returned. Only the span's views are read (placed.views.take), as stored (float16),
    and centred a block at a time."""
    span, density = item
    assert placed.views is not None
    positions, homes, views = placed.views.take(span)
    regions, mean = placed.views.regions, placed.mean
    # A pair's copy score is its cosine less half of each image's density term.
    half = (BETA * density / 2).astype(np.float32)

    def whole(rows: NDArray[np.int64]) -> Vectors:
        return placed.unit[rows]

    def view(rows: NDArray[np.int64]) -> Vectors:
        return centred(views[rows], mean)

    # Each whole keeps its best views (its own among them, left out later), each view its best
    # wholes, as two nearest-neighbour searches would.
    probes = _inside(placed.probed[:, :VIEW_PROBES], span)
    wholes = Side(whole, probes, VIEW_REJECT + half, (VIEW_NEIGHBOURS + 1) * regions)
    of_views = Side(view, homes[:, None], half[positions // regions], VIEW_NEIGHBOURS + 1)
    parts = list(floor_join(wholes, of_views, placed.cells.count, placed.cells.gpu))
    if not parts:
        none = np.zeros(0, np.int32)
        return {"whole": none, "of": none, "cosine": np.zeros(0, np.float32),
                "region": np.zeros(0, np.int16)}  # fmt: skip
    rows, columns, cosine = (np.concatenate(c) for c in zip(*parts, strict=True))
    flat = positions[columns]
    return {
        "whole": rows.astype(np.int32),
        "of": (flat // regions).astype(np.int32),
        "cosine": cosine.astype(np.float32),
        "region": (flat % regions + 1).astype(np.int16),
    }


@dataclass(frozen=True)
class Engine:
    """Where stage 1's shards run (`workers`), where the finished ones are kept (`shelf`), and
    where their progress is reported (`steps`)."""

    workers: Workers = LOCAL
    shelf: Shelf = field(default_factory=lambda: Shelf(None))
    steps: Steps = SILENT


def shards(
    join: Callable[[Placed, Any], Arrays],
    placed: Placed,
    named: list[tuple[str, Any]],
    engine: Engine,
    advance: Advance,
) -> Iterator[Arrays]:
    """join(placed, item) of each named item, as named arrays: the shelf's when it holds that
    name, else made on the engine's workers (and shelved); in no particular order."""
    todo = []
    for name, item in named:
        stored = engine.shelf.get(name)
        if stored is None:
            todo.append((name, item))
            continue
        advance(1)
        yield stored
    for at, found in engine.workers.map_with(join, placed, [i for _, i in todo], spread=False):
        engine.shelf.put(todo[at][0], found)
        advance(1)
        yield found


class Shelf:
    """Finished shards of one join, on disk (None: kept nowhere). Named by what the join is
    of, so that a run over other vectors or options never reads them; a run that finished
    takes its shelf away."""

    def __init__(self, folder: Path | None, name: str = "") -> None:
        self.folder = None if folder is None else folder / _safe(name)
        if folder is not None and folder.is_dir():
            for other in folder.iterdir():  # shelves of other catalogs or options: stale
                if other.name != _safe(name) and not other.name.startswith("."):
                    shutil.rmtree(other, ignore_errors=True)

    def get(self, name: str) -> dict[str, NDArray[Any]] | None:
        if self.folder is None or not (self.folder / f"{name}.npz").is_file():
            return None
        try:
            with np.load(self.folder / f"{name}.npz") as stored:
                return {key: stored[key] for key in stored.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # damaged: joined again
            return None

    def put(self, name: str, arrays: dict[str, NDArray[Any]]) -> None:
        """Keep `arrays` as `name`; a shelf that cannot be written (a home this user may only
        read, a full disk) says so once and keeps nothing more: the join goes on."""
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.folder / f"{name}.npz") as tmp, open(tmp, "wb") as handle:
                save: Any = np.savez  # typed as if an array could not be named allow_pickle
                save(handle, **arrays)
        except OSError as exc:
            log.warning("cannot keep the join's shards in %s (%s): a killed run starts over",
                        self.folder, exc.strerror or exc)  # fmt: skip
            self.folder = None

    def clear(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            parent = self.folder.parent
            if parent.is_dir() and not any(parent.iterdir()):
                os.rmdir(parent)


def _safe(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:24]


def shelved(
    shelf: Shelf,
    name: str,
    make: Callable[[], dict[str, NDArray[Any]]],
) -> dict[str, NDArray[Any]]:
    """The shelf's `name`, or make it and put it there."""
    found = shelf.get(name)
    if found is None:
        found = make()
        shelf.put(name, found)
    return found


__all__ = ["BETA", "DENSITY_K", "NEIGHBOURS", "VIEW_NEIGHBOURS", "VIEW_PROBES", "VIEW_REJECT",
           "Gpu", "Nearests", "Placed", "Shelf", "centred", "nearest_shard", "place", "shelved",
           "spans", "view_shard"]  # fmt: skip
