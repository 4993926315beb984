"""The regional views placed in their k-means cells, read a chunk of images at a time, and read
back a run of cells at a time, so that the whole-against-view join's memory follows the cells
it joins, not the collection (FAISS's big_batch_search / offline_ivf pattern; docs/scale.md).

Each chunk of images (VIEW_CHUNK) has its views centred to find their nearest cells and kept,
as stored (float16), sorted by cell: a *run*, with where each cell's views start in it. A
piece of the view join (a span of cells) then reads each run's slice of those cells, one
contiguous read a run.
Runs stay in memory while the views are small (IN_MEMORY_UP_TO) or when the shards run
elsewhere (Ray tasks get them through the object store); else they are files in a folder of
the system's temporary folder ($TMPDIR), read with plain reads (no memory map: the process's
resident memory stays the cells in flight), and removed when the stage ends. A resumed
`--engine ray` run places the views again (its finished pieces are not joined again).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from store import Catalog, Cells

VIEW_CHUNK = 50_000  # images whose views are centred and placed at a time
IN_MEMORY_UP_TO = 1 << 30  # bytes of views kept in memory; above, the runs are files
PIECE_BYTES = 256 << 20  # views one piece of the view join reads, at most (a cell at least)
_CENTRE_ROWS = 65_536  # views centred at a time
log = logging.getLogger("imgsearch.search")


class ViewSource(Protocol):
    """Regional views of n images, (n, R, d) as `shape`, read `size` images at a time in order."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def chunks(self, size: int) -> Iterator[NDArray[np.floating]]: ...


@dataclass(frozen=True)
class ArrayViews:
    """Views already in memory (n, R, d)."""

    array: NDArray[np.floating]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def chunks(self, size: int) -> Iterator[NDArray[np.floating]]:
        for start in range(0, len(self.array), size):
            yield self.array[start : start + size]


@dataclass(frozen=True)
class StoredViews:
    """The catalog's views of `ids` ((R, d) each: `stored`), read from it a chunk at a time."""

    catalog: Catalog
    ids: tuple[int, ...]
    stored: tuple[int, int]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.ids), *self.stored)

    def chunks(self, size: int) -> Iterator[NDArray[np.floating]]:
        return self.catalog.views_chunks(self.ids, self.stored, size)


def stored_views(catalog: Catalog, ids: NDArray[np.int64]) -> StoredViews | None:
    """The views of `ids` as a source, None unless every one has views of one shape."""
    listed = tuple(int(i) for i in ids)
    shape = catalog.views_shape(listed)
    return None if shape is None else StoredViews(catalog, listed, shape)


def as_source(views: NDArray[np.floating] | ViewSource) -> ViewSource:
    return ArrayViews(views) if isinstance(views, np.ndarray) else views


@dataclass(frozen=True)
class Run:
    """One chunk's views sorted by cell: `bounds` (cells + 1,) where each cell's start; the
    flat positions (image * R + region) and the views themselves, in memory or in `file`
    (`file`.pos int64, `file`.views of `dtype`)."""

    bounds: NDArray[np.int64]
    positions: NDArray[np.int64] | None
    views: NDArray[np.floating] | None
    file: Path | None
    dtype: str
    dim: int

    def take(self, first: int, last: int) -> tuple[NDArray[np.int64], NDArray[np.floating]]:
        """The positions and views of cells [first, last)."""
        low, high = int(self.bounds[first]), int(self.bounds[last])
        if self.positions is not None and self.views is not None:
            return self.positions[low:high], self.views[low:high]
        assert self.file is not None
        size = np.dtype(self.dtype).itemsize
        positions = np.fromfile(self.file.with_suffix(".pos"), np.int64, high - low, offset=low * 8)
        views = np.fromfile(
            self.file.with_suffix(".views"),
            self.dtype,
            (high - low) * self.dim,
            offset=low * self.dim * size,
        )
        return positions, views.reshape(-1, self.dim)


@dataclass(frozen=True)
class CellViews:
    """Every view in its cell, as runs; `regions` views an image."""

    regions: int
    dim: int
    runs: tuple[Run, ...]

    def sizes(self) -> NDArray[np.int64]:
        """How many views lie in each cell."""
        sizes: NDArray[np.int64] = np.sum(
            [np.diff(r.bounds) for r in self.runs], axis=0, dtype=np.int64
        )
        return sizes

    def take(
        self, span: tuple[int, int]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.floating]]:
        """The views of cells [span): their flat positions, cells and vectors (as stored),
        cell by cell, each cell's in the order of their positions."""
        first, last = span
        parts = [run.take(first, last) for run in self.runs]
        cell_of = np.concatenate(
            [np.repeat(np.arange(first, last), np.diff(run.bounds[first : last + 1]))
             for run in self.runs]
        )  # fmt: skip
        order = np.argsort(cell_of, kind="stable")  # each run is sorted by cell: merge them
        positions = np.concatenate([p for p, _ in parts])[order]
        views = np.concatenate([v for _, v in parts])[order]
        return positions, cell_of[order], views

    def pieces(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Each span cut into runs of consecutive cells whose views take at most PIECE_BYTES
        (one cell at least)."""
        if not self.runs:
            return spans
        budget = PIECE_BYTES
        weight = self.sizes() * self.dim * np.dtype(self.runs[0].dtype).itemsize
        out: list[tuple[int, int]] = []
        for first, last in spans:
            start, held = first, 0
            for cell in range(first, last):
                if held and held + weight[cell] > budget:
                    out.append((start, cell))
                    start, held = cell, 0
                held += int(weight[cell])
            out.append((start, last))
        return out


def centred(
    vectors: NDArray[np.floating],
    mean: NDArray[np.float32],
    chunk: int = 65_536,
    in_place: bool = False,
) -> NDArray[np.float32]:
    """(vectors - mean), L2-normalised along the last axis, as float32: a chunk of rows at a
    time, so that a million images' views cost one float32 copy and no temporaries.
    `in_place`: into `vectors` themselves when they are float32 and writeable (no copy)."""
    reusable = vectors.dtype == np.float32 and vectors.flags.writeable
    unit = vectors if in_place and reusable else np.empty(vectors.shape, dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        part = unit[start : start + chunk]
        if unit is not vectors:
            part[...] = vectors[start : start + chunk]
        part -= mean
        norms = np.sqrt(np.einsum("...d,...d->...", part, part))
        part /= np.maximum(norms, 1e-12)[..., None]
    return unit


def place_views(
    source: ViewSource, mean: NDArray[np.float32], cells: Cells, folder: Path | None
) -> CellViews:
    """The views of `source`, centred on `mean`, each in its nearest cell of `cells`: runs in
    memory (`folder` None) or files in `folder`."""
    _, regions, dim = source.shape
    runs: list[Run] = []
    for k, chunk in enumerate(source.chunks(VIEW_CHUNK)):
        start = k * VIEW_CHUNK
        flat = chunk.reshape(-1, dim)
        home = np.concatenate(
            [
                cells.nearest(centred(flat[at : at + _CENTRE_ROWS], mean), 1)[:, 0]
                for at in range(0, len(flat), _CENTRE_ROWS)
            ]
        )
        order = np.argsort(home, kind="stable")
        bounds = np.searchsorted(home[order], np.arange(cells.count + 1)).astype(np.int64)
        positions = start * regions + order.astype(np.int64)
        views = np.ascontiguousarray(flat[order])
        if folder is None:
            runs.append(Run(bounds, positions, views, None, views.dtype.str, dim))
            continue
        file = folder / f"run-{k:06}"
        try:
            _write(file, positions, views)
        except OSError as exc:  # a full disk: the rest stay in memory, the stage goes on
            log.warning("cannot keep the views in %s (%s): the rest stay in memory",
                        folder, exc.strerror or exc)  # fmt: skip
            folder = None
            runs.append(Run(bounds, positions, views, None, views.dtype.str, dim))
            continue
        runs.append(Run(bounds, None, None, file, views.dtype.str, dim))
    return CellViews(regions, dim, tuple(runs))


def _write(file: Path, positions: NDArray[np.int64], views: NDArray[np.floating]) -> None:
    positions.tofile(file.with_suffix(".pos"))
    views.tofile(file.with_suffix(".views"))


@contextmanager
def scratch(source: ViewSource | None, local: bool) -> Iterator[Path | None]:
    """A folder for the runs while the stage runs, when the views take more bytes than
    IN_MEMORY_UP_TO and the shards run on this machine; else None (the runs stay in memory).
    It is removed when the stage ends, by an error or Ctrl-C too (a process killed outright
    leaves it in $TMPDIR)."""
    if source is None or not local or int(np.prod(source.shape)) * 2 <= IN_MEMORY_UP_TO:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="imgsearch-views-") as folder:
        yield Path(folder)


__all__ = ["ArrayViews", "CellViews", "StoredViews", "ViewSource", "as_source", "centred",
           "place_views", "scratch", "stored_views"]  # fmt: skip
