"""What is made from each indexed content's pixels, once: local features for copy verification
(search/copies/verify.py) and the keeper's look at a file (search/quality.py).

Read from the catalog's content cache by content hash; what is missing is made from one of the
content's files (in worker processes when there are many) and saved for the next run, when
this process may write the catalog (store/caches.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from search.steps import SILENT, Steps
from search.workers import LOCAL, Workers
from store import ImageRecord, Store

T = TypeVar("T")
R = TypeVar("R")
Item = TypeVar("Item")
log = logging.getLogger("imgsearch.search")
SAVE_EVERY = 4096  # files made, then saved in the cache, at a time


@dataclass(frozen=True)
class Recipe(Generic[T]):
    kind: str  # its name in the cache
    doing: str  # what making it is called on a progress bar
    version: int  # of the code that makes it: what an other version made is made again
    make: Callable[[str], T | None]  # from a file's path; None: unreadable (module-level: it
    # runs in worker processes)
    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]


def per_content(
    store: Store, recipe: Recipe[T], records: Iterable[ImageRecord], steps: Steps = SILENT
) -> tuple[dict[int, T], list[str]]:
    """`recipe`'s result for each record, by image id, and the paths that could not be read."""
    return per_contents(store, [(recipe, records)], steps)[0]


def per_contents(
    store: Store,
    orders: Sequence[tuple[Recipe[T], Iterable[ImageRecord]]],
    steps: Steps = SILENT,
    workers: Workers = LOCAL,
) -> list[tuple[dict[int, T], list[str]]]:
    """`per_content` of several recipes at once: what is missing is made on `workers` (each
    piece reads its file where it is), as one step named after the first recipe."""
    wanted = [{r.id: r for r in records} for _, records in orders]
    found: list[dict[str, T]] = []
    missing: list[tuple[int, ImageRecord]] = []  # (order, the record to make it from)
    for n, ((recipe, _), mine) in enumerate(zip(orders, wanted, strict=True)):
        firsts: dict[str, ImageRecord] = {}
        for record in sorted(mine.values(), key=lambda r: r.id):
            firsts.setdefault(record.content_hash, record)
        stored = store.caches.content_cached(recipe.kind, sorted(firsts), recipe.version)
        found.append(_decoded(recipe, stored))
        missing += [(n, r) for h, r in firsts.items() if h not in found[n]]
    failed: list[list[str]] = [[] for _ in orders]
    if missing:
        with steps.step(orders[0][0].doing, len(missing)) as advance:
            # Saved a part at a time: a killed run keeps what it made (a million files' local
            # features take hours).
            for start in range(0, len(missing), SAVE_EVERY):
                part = missing[start : start + SAVE_EVERY]
                work = [(orders[n][0], record.path) for n, record in part]
                results = workers.map(_make, work, advance)
                _keep(store, orders, part, results, found, failed)
    return [
        ({i: known[r.content_hash] for i, r in mine.items() if r.content_hash in known}, lost)
        for mine, known, lost in zip(wanted, found, failed, strict=True)
    ]


def _keep(
    store: Store,
    orders: Sequence[tuple[Recipe[T], Iterable[ImageRecord]]],
    part: list[tuple[int, ImageRecord]],
    results: list[tuple[T, bytes] | None],
    found: list[dict[str, T]],
    failed: list[list[str]],
) -> None:
    """What one part made: saved in the content cache, added to `found` (by order and
    content), and the files that could not be read added to `failed`."""
    for n, (recipe, _) in enumerate(orders):
        made = {r.content_hash: v for (m, r), v in zip(part, results, strict=True) if m == n and v}
        failed[n] += [r.path for (m, r), v in zip(part, results, strict=True) if m == n and not v]
        if made:
            encoded = {h: data for h, (_, data) in made.items()}
            store.caches.save_content_cache(recipe.kind, encoded, recipe.version)
        found[n].update({h: value for h, (value, _) in made.items()})


def _make(work: tuple[Recipe[T], str]) -> tuple[T, bytes] | None:
    """The recipe's result for a file and its encoding, both made in the worker (encoding in
    this process took 0.8 s of a 16 s dupes); None when unreadable."""
    recipe, path = work
    made = recipe.make(path)
    return None if made is None else (made, recipe.encode(made))


def _decoded(recipe: Recipe[T], stored: dict[str, bytes]) -> dict[str, T]:
    """The cached rows that decode. A cache is a cache: a damaged row is left out, so it is
    made again (and saved over) like one that was never there."""
    found: dict[str, T] = {}
    for content, data in stored.items():
        try:
            found[content] = recipe.decode(data)
        except Exception as exc:  # zlib, struct, json, a field that is not there: all damage
            log.warning("a cached %s of one content is damaged (%s): made again", recipe.kind, exc)
    return found
