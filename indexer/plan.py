"""Decide what an index run has to do, from a scan and what the catalog already holds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from indexer.scan import is_under
from store import Failure, FileStat, ImageRecord


@dataclass(frozen=True)
class Plan:
    todo: list[FileStat]  # new or changed files: read, hash, and embed or reuse
    unchanged: int  # indexed files whose (size, mtime) did not change
    known_failures: list[Failure]  # failed before and unchanged since: not retried
    vanished: list[str]  # indexed or failed paths under the scanned folders that are gone
    previous_hashes: dict[str, str]  # content hash of each todo file that is already indexed
    known_hashes: frozenset[str]  # every content hash in the index: such files reuse a vector


def make_plan(
    scanned: Iterable[FileStat],
    indexed: dict[str, ImageRecord],
    failed: dict[str, Failure],
    folders: Sequence[str],
) -> Plan:
    todo: list[FileStat] = []
    known_failures: list[Failure] = []
    unchanged = 0
    previous_hashes: dict[str, str] = {}
    seen: set[str] = set()
    for stat in scanned:
        seen.add(stat.path)
        record = indexed.get(stat.path)
        failure = failed.get(stat.path)
        if record and (record.size, record.mtime_ns) == (stat.size, stat.mtime_ns):
            unchanged += 1
        elif failure and (failure.size, failure.mtime_ns) == (stat.size, stat.mtime_ns):
            known_failures.append(failure)
        else:
            todo.append(stat)
            if record:
                previous_hashes[stat.path] = record.content_hash
    vanished = [
        path for path in [*indexed, *failed] if path not in seen and is_under(path, folders)
    ]
    known_hashes = frozenset(r.content_hash for r in indexed.values())
    vanished_paths = sorted(set(vanished))
    return Plan(todo, unchanged, known_failures, vanished_paths, previous_hashes, known_hashes)
