"""`index`, the local engine: scan -> plan -> decode (worker processes) -> embed -> commit.

The run itself (lock, store, model, counts, prune, report) is the IndexSession's; this module
only turns planned files into outcomes batch by batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Protocol

from indexer.dataset import DecodeDataset, Item
from indexer.embedder import TOP_TAGS
from indexer.loader import decoded_batches
from indexer.options import IndexOptions, default_workers
from indexer.plan import Plan
from indexer.scan import Skipped, check_folders, scan
from indexer.session import IndexReport, IndexSession, Outcome, Reused
from store import Embedded, Failure, Tag, Vector, Vectors


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, done: int) -> None: ...


def index_folders(
    home: str | os.PathLike[str],
    roots: Sequence[str | os.PathLike[str]],
    options: IndexOptions | None = None,
    progress: Progress | None = None,
) -> IndexReport:
    """Bring the index in `home` up to date with the image files under `roots`."""
    options = options or IndexOptions()
    folders = check_folders(roots)
    with IndexSession(home, options) as session:
        skipped: list[Skipped] = []
        plan = session.plan(scan(folders, skipped), folders)
        session.skipped(skipped)
        if progress:
            progress.start(len(plan.todo))
        for outcomes in embed_planned(session, plan):  # nothing to embed: no model loaded
            session.commit(outcomes)
            if progress:
                progress.advance(len(outcomes))
        return session.finish(plan)


def embed_planned(session: IndexSession, plan: Plan) -> Iterator[list[Outcome]]:
    """The planned files as outcomes, one list per batch."""
    if not plan.todo:
        return
    embedder = session.embedder
    options = session.options
    dataset = DecodeDataset(plan.todo, embedder.prep, plan.known_hashes, options.max_pixels)
    workers = options.workers if options.workers is not None else default_workers()
    pin = embedder.device.startswith("cuda")  # page-locked, non-blocking copies
    top = TOP_TAGS if embedder.labels else 0
    for batch in decoded_batches(dataset, session.batch_size, workers, pin):
        found = embedder.run(batch.pixels, top, batch.views)
        views = found.views if found.views is not None else [None] * len(found.vectors)
        rows = iter(zip(found.vectors, found.tags, views, strict=True))
        yield [_outcome(item, rows) for item in batch.items]


Row = tuple[Vector, tuple[Tag, ...], Vectors | None]


def _outcome(item: Item, rows: Iterator[Row]) -> Outcome:
    if item.error is not None or item.file is None:
        return Failure(
            item.stat.path, item.stat.size, item.stat.mtime_ns, item.error or "unreadable"
        )
    if item.reuse:
        return Reused(item.file, item.stat)
    vector, tags, views = next(rows)
    return Embedded(item.file, item.width, item.height, vector, tags, views)
