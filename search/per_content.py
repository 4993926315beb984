"""What is made from each indexed content's pixels, once: local features for copy verification
(search/copies/verify.py) and the keeper's look at a file (search/quality.py).

Read from the catalog's content cache by content hash; what is missing is made from one of the
content's files (in worker processes when there are many) and saved for the next run, when
this process may write the catalog (store/caches.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from search.steps import SILENT, Advance, Steps
from store import ImageRecord, Store

T = TypeVar("T")
R = TypeVar("R")
PARALLEL_FROM = 48  # files: below this, one process is faster than starting a pool


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
    wanted = {r.id: r for r in records}
    firsts: dict[str, ImageRecord] = {}
    for record in sorted(wanted.values(), key=lambda r: r.id):
        firsts.setdefault(record.content_hash, record)
    stored = store.content_cached(recipe.kind, sorted(firsts), recipe.version)
    found = {h: recipe.decode(data) for h, data in stored.items()}
    missing = [r for h, r in firsts.items() if h not in found]
    made: dict[str, T] = {}
    failed: list[str] = []
    with steps.step(recipe.doing, len(missing)) as advance:
        results = parallel_map(recipe.make, [r.path for r in missing], advance)
    for record, result in zip(missing, results, strict=True):
        if result is None:
            failed.append(record.path)
        else:
            made[record.content_hash] = result
    if made:
        store.save_content_cache(
            recipe.kind, {h: recipe.encode(v) for h, v in made.items()}, recipe.version
        )
    found.update(made)
    return {i: found[r.content_hash] for i, r in wanted.items() if r.content_hash in found}, failed


def parallel_map(fn: Callable[[str], R], items: Sequence[str], advance: Advance,
                 chunksize: int = 8) -> list[R]:  # fmt: skip
    """`fn` of each item, in order: in worker processes when there are many."""
    done: list[R] = []
    if len(items) >= PARALLEL_FROM and worker_count() > 1:
        with ProcessPoolExecutor(worker_count()) as pool:
            for result in pool.map(fn, items, chunksize=chunksize):
                done.append(result)
                advance(1)
        return done
    for item in items:
        done.append(fn(item))
        advance(1)
    return done


def worker_count() -> int:
    return max(1, min(4, os.cpu_count() or 1))
