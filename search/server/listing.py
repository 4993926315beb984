"""The review's list of groups: found once per catalog state and kept, then filtered, sorted
and paged per request, so a home with 10,000 groups answers a page without finding its
duplicates again.

The groups are found again only when the catalog's generation (its images) or its decisions
(keepers chosen, "not duplicates") moved, whichever process moved them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from search.copies.dupes import DupeOptions, Found, find_duplicates
from search.keeper.policy import DEFAULT_KEEP, parse_keep
from search.records import DuplicateGroup
from search.sets import NO_SETS, Sets
from store import Store

Sort = Literal["found", "space", "score", "folder"]
REVIEWED = "chosen in review"  # the reason of a keeper a person picked


@dataclass(frozen=True)
class GroupFilter:
    """Which groups a page (or a bulk action) covers."""

    kind: Literal["exact", "near"] | None = None
    folder: str | None = None  # a file of the group lies under it
    min_score: float | None = None  # every member's score is at least this
    reviewed: bool | None = None  # its keeper was picked by a person (True) or not (False)

    def covers(self, group: DuplicateGroup) -> bool:
        if self.kind is not None and group.kind != self.kind:
            return False
        if self.folder is not None:
            top = self.folder.rstrip(os.sep) + os.sep
            if not any(r.path.startswith(top) for r in group.files):
                return False
        if self.min_score is not None and any(m.score < self.min_score for m in group.members):
            return False
        return self.reviewed is None or (group.reason == REVIEWED) == self.reviewed


_SORTS: dict[Sort, Callable[[DuplicateGroup], Any]] = {
    "space": lambda g: -sum(m.record.size for m in g.members),  # most space freed first
    "score": lambda g: min((m.score for m in g.members), default=1.0),  # least certain first
    "folder": lambda g: min(r.path for r in g.files),
}


def listed(groups: Sequence[DuplicateGroup], only: GroupFilter, sort: Sort) -> list[DuplicateGroup]:
    """The groups `only` covers, in `sort` order (ties: the order they were found in)."""
    kept = [g for g in groups if only.covers(g)]
    return kept if sort == "found" else sorted(kept, key=_SORTS[sort])


@dataclass(frozen=True)
class Wanted:
    """The options of a review's find."""

    threshold: float | None = None
    keep: str = DEFAULT_KEEP
    exact_only: bool = False
    sets: Sets = NO_SETS


class FoundCache:
    """The last few `find_duplicates` results, by options and catalog state. One find at a
    time: a request that arrives while the same find runs waits for it, then reads it here."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._finding = threading.Lock()
        self._found: dict[tuple[object, ...], Found] = {}

    def cached(self, store: Store, wanted: Wanted) -> Found | None:
        parse_keep(wanted.keep)  # InvalidOption: 422
        with self._lock:
            return self._found.get(self._key(store, wanted))

    def find(self, store: Store, wanted: Wanted) -> Found:
        policy = parse_keep(wanted.keep)  # InvalidOption: 422
        key = self._key(store, wanted)
        with self._finding:
            with self._lock:
                if key in self._found:
                    return self._found[key]
            options = DupeOptions(wanted.threshold, None, wanted.exact_only, policy)
            found = find_duplicates(store, replace(options, sets=wanted.sets))
            with self._lock:
                self._found[key] = found
                while len(self._found) > self.size:
                    self._found.pop(next(iter(self._found)))
        return found

    @staticmethod
    def _key(store: Store, wanted: Wanted) -> tuple[object, ...]:
        return (wanted, store.catalog.generation(), store.catalog.decisions_version())
