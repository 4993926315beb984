"""`dupes --engine ray`: the pieces of copy detection (search/workers.py) in Ray tasks.

The candidate join's shards of k-means cells, the making of local features (each task reads
its files where they are: the paths must be readable from every node, as for `index --engine
ray`) and the verification of candidate pairs run as tasks; groups and keepers are decided
once, on the driver. What a set of tasks shares (the vectors, the views, the features) goes
into Ray's object store once (`ray.put`: NumPy arrays are read in place on each node) and
each task is given a share of the items, a few tasks per CPU. Finished shards of the join
are kept under HOME/dupes-work/, so a killed run picks up the cells it finished.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from indexer.ray_cluster import connect, cpus
from search.steps import Advance

R = TypeVar("R")
S = TypeVar("S")
Item = TypeVar("Item")
TASKS_PER_CPU = 4  # tasks per CPU of the cluster: a slow task leaves the others busy


@dataclass(frozen=True)
class RayWorkers:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join one
    local = False

    def map(
        self, fn: Callable[[Item], R], items: Sequence[Item], advance: Advance, chunksize: int = 8
    ) -> list[R]:
        connect(self.address)
        done: list[R | None] = [None] * len(items)
        size = max(chunksize, -(-len(items) // (4 * TASKS_PER_CPU * cpus())))
        for start, part in self._run(_each, fn, items, size):
            done[start : start + len(part)] = part
            advance(len(part))
        return done  # type: ignore[return-value]  # every slot is filled

    def map_with(
        self, fn: Callable[[S, Item], R], shared: S, items: Sequence[Item], spread: bool
    ) -> Iterator[tuple[int, R]]:
        import ray

        if not items:  # a resumed join whose shards are all on the shelf: nothing to send
            return
        connect(self.address)
        size = max(1, -(-len(items) // (TASKS_PER_CPU * cpus())))
        together = ray.put((fn, shared))  # once, for every task
        for start, part in self._run(_each_with, together, items, size):
            yield from enumerate(part, start)

    def shards(self, cells: int) -> int:
        connect(self.address)
        return max(1, min(cells, TASKS_PER_CPU * cpus()))

    def resume_in(self, home: Path) -> Path | None:
        return home / "dupes-work"

    @staticmethod
    def _run(
        task: Callable[[Any, Sequence[Any]], list[Any]], first: Any, items: Sequence[Any], size: int
    ) -> Iterator[tuple[int, list[Any]]]:
        """(start, results) of task(first, items[start:start + size]) for each share, as the
        tasks finish."""
        import ray

        remote = ray.remote(num_cpus=1)(task)
        pending = {remote.remote(first, items[s : s + size]): s for s in range(0, len(items), size)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield pending.pop(ref), ray.get(ref)


def _each(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(item) for item in items]


def _each_with(together: tuple[Callable[[Any, Any], Any], Any], items: Sequence[Any]) -> list[Any]:
    from threadpoolctl import threadpool_limits

    fn, shared = together
    with threadpool_limits(1):  # a task is one CPU: BLAS must not take the node's others
        return [fn(shared, item) for item in items]
