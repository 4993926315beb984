"""Where the independent pieces of a long job run: in this machine's processes (`LOCAL`), or in
Ray tasks across a cluster (search/copies/ray_workers.py, `dupes --engine ray`).

Copy detection hands its pieces to a `Workers`: the candidate join's shards of k-means cells
(search/copies/join.py), the local features made from each content's file
(search/per_content.py) and the verification of candidate pairs (search/copies/decide.py). The
pieces and their order are the same on either engine, so both find the same pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol, TypeVar

from indexer.options import default_workers
from search.steps import Advance

R = TypeVar("R")
S = TypeVar("S")
Item = TypeVar("Item")
# Items: below this, one process is faster than starting a pool (a fork: 30 ms). Above a
# query's candidates (search/copies/rerank.py, 20), so that a query, which the server runs in
# a thread, never forks a threaded process.
PARALLEL_FROM = 24


class Workers(Protocol):
    """Runs a job's independent pieces. `fn` is a module-level function (it may run in another
    process or machine); results come back in the items' order unless said otherwise."""

    local: bool  # every piece runs on this machine (a GPU of this process may be used)

    def map(
        self, fn: Callable[[Item], R], items: Sequence[Item], advance: Advance, chunksize: int = 8
    ) -> list[R]:
        """fn(item) of each item."""
        ...

    def map_with(
        self, fn: Callable[[S, Item], R], shared: S, items: Sequence[Item], spread: bool
    ) -> Iterator[tuple[int, R]]:
        """(position, fn(shared, item)) of each item, as they are done (in any order). `shared`
        is large, read-only and the same for every item: it is sent once. `spread`: the pieces
        are single-threaded (worth other processes); else each uses every core (BLAS)."""
        ...

    def shards(self, cells: int) -> int:
        """Into how many shards a join over `cells` k-means cells is cut."""
        ...

    def resume_in(self, home: Path) -> Path | None:
        """Where a join keeps its finished shards so that a killed run picks them up (None:
        nowhere; a local join is one shard in memory)."""
        ...


class LocalWorkers:
    """This machine: worker processes for single-threaded pieces (forked, so that `shared` is
    read copy-on-write, never sent), this process for the multi-threaded ones."""

    local = True

    def map(
        self, fn: Callable[[Item], R], items: Sequence[Item], advance: Advance, chunksize: int = 8
    ) -> list[R]:
        done: list[R] = []
        if len(items) >= PARALLEL_FROM and default_workers() > 1:
            with ProcessPoolExecutor(default_workers()) as pool:
                for result in pool.map(fn, items, chunksize=chunksize):
                    done.append(result)
                    advance(1)
            return done
        for item in items:
            done.append(fn(item))
            advance(1)
        return done

    def map_with(
        self, fn: Callable[[S, Item], R], shared: S, items: Sequence[Item], spread: bool
    ) -> Iterator[tuple[int, R]]:
        from threadpoolctl import threadpool_limits

        global _SHARED
        if spread and len(items) > 1 and default_workers() > 1 and _can_fork():
            import multiprocessing

            _SHARED = (fn, shared)
            try:
                context = multiprocessing.get_context("fork")
                with context.Pool(default_workers(), threadpool_limits, (1,)) as pool:
                    yield from enumerate(pool.imap(_with_shared, items))
            finally:
                _SHARED = None
            return
        with threadpool_limits(1) if spread else nullcontext():
            for n, item in enumerate(items):
                yield n, fn(shared, item)

    def shards(self, cells: int) -> int:
        return 1

    def resume_in(self, home: Path) -> Path | None:
        return None


LOCAL = LocalWorkers()
_SHARED: tuple[Callable[[Any, Any], Any], Any] | None = None  # what forked workers read


def _with_shared(item: Any) -> Any:
    assert _SHARED is not None, "set by map_with before the fork"
    fn, shared = _SHARED
    return fn(shared, item)


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()
