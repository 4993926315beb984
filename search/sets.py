"""Folders that shape a curation: reference folders whose files are never acted on and always
kept (czkawka's reference folders, vision-data-curation's), and sets compared across (a test
set against its training set: FiftyOne Brain's leaky splits).

`--keep-in DIR`: a file under DIR is the keeper of its group (the keep policy chooses among
several), and is never planned for an action. `--across A --across B [...]`: only the groups
that hold files under at least two of the sets are reported, and an action only touches files
under the sets after the first (the first is the reference: train/ before test/).

Folders are compared by their real paths, as files are indexed at theirs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from search.records import Chooser, DuplicateGroup, Edge
from store import ImageRecord

REFERENCE = "in a reference folder"


@dataclass(frozen=True)
class Sets:
    keep_in: tuple[str, ...] = ()  # reference folders
    across: tuple[str, ...] = ()  # sets compared across, the first the reference

    @classmethod
    def of(cls, keep_in: Sequence[str] = (), across: Sequence[str] = ()) -> Sets:
        """With each folder at its real path, without a trailing separator."""
        return cls(tuple(_real(f) for f in keep_in), tuple(_real(f) for f in across))

    def reference(self, path: str) -> bool:
        """A file never acted on and kept first: under a reference folder or the first set."""
        return any(_under(path, f) for f in (*self.keep_in, *self.across[:1]))

    def set_of(self, path: str) -> str | None:
        """The set (of `across`) the file lies under, None when under none."""
        return next((f for f in self.across if _under(path, f)), None)

    def covers(self, group: DuplicateGroup) -> bool:
        """Whether the group is reported: with sets, it holds files of two of them."""
        if not self.across:
            return True
        return len({self.set_of(r.path) for r in group.files} - {None}) >= 2

    def untouchable(self, path: str) -> str | None:
        """Why an action must leave this file alone, None when it may act on it."""
        if any(_under(path, f) for f in self.keep_in):
            return REFERENCE
        if self.across and _under(path, self.across[0]):
            return f"in {self.across[0]}, the set the others are compared with"
        if self.across and self.set_of(path) is None:
            return "under none of the --across sets"
        return None


NO_SETS = Sets()


def preferring_reference(sets: Sets, choose: Chooser) -> Chooser:
    """The policy's keeper, chosen among the group's reference files when it has any."""
    if not sets.keep_in and not sets.across:
        return choose

    def chooser(records: Sequence[ImageRecord], edges: Sequence[Edge]) -> tuple[ImageRecord, str]:
        reference = [r for r in records if sets.reference(r.path)]
        if not reference:
            return choose(records, edges)
        if len(reference) == 1:
            return reference[0], REFERENCE
        ids = {r.id for r in reference}
        keep, why = choose(reference, [e for e in edges if e.a in ids and e.b in ids])
        return keep, f"{REFERENCE}; {why}" if why else REFERENCE

    return chooser


def _real(folder: str) -> str:
    return os.path.realpath(os.path.expanduser(folder)).rstrip(os.sep) or os.sep


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
