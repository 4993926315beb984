"""Which copy of a duplicate group to keep.

The simple policies are total orders of files (the first one wins). `best` (the default) looks
at the files themselves and at how the copies relate (search/keeper.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from indexer.orientation import UprightOf
from search.keeper.look import Look
from search.records import Chooser, Edge
from store import ImageRecord, InvalidOption

KEEP_HELP = "best | largest | oldest | newest | path-priority:DIR[,DIR...]"
DEFAULT_KEEP = "best"


@dataclass(frozen=True)
class KeepPolicy:
    """A named way to choose the keeper of a group."""

    name: str
    key: Callable[[ImageRecord], tuple[object, ...]] | None = None  # simple: a total order
    describe: Callable[[ImageRecord, Sequence[ImageRecord]], str] | None = None

    def choose(self, records: Sequence[ImageRecord]) -> ImageRecord:
        """The file to keep by this policy's order (by `largest` for `best` without pairs)."""
        return min(records, key=self.key or _largest)

    def chooser(
        self,
        similarity: Callable[[ImageRecord, ImageRecord], float] | None = None,
        looks: Callable[[ImageRecord], Look | None] | None = None,
        upright: UprightOf | None = None,
    ) -> Chooser:
        """The group chooser; `similarity` (two files' cosine) lets `best` find the medoid,
        `looks` gives it what each file looks like (search/keeper/look.py; default: look now),
        and `upright` (the rotation model, when present) which of two turned saves is upright."""
        if self.key is None:
            from search.keeper.best import chooser

            return chooser(similarity, looks, upright)

        def simple(
            records: Sequence[ImageRecord], _edges: Sequence[Edge]
        ) -> tuple[ImageRecord, str]:
            keep = self.choose(records)
            why = self.describe(keep, records) if self.describe else self.name
            return keep, why

        return simple


def _largest(r: ImageRecord) -> tuple[object, ...]:
    # Most pixels, then the largest file (less compressed), then the oldest, then the path.
    return (-r.width * r.height, -r.size, r.mtime_ns, r.path)


def _oldest(r: ImageRecord) -> tuple[object, ...]:
    return (r.mtime_ns, *_largest(r))


def _newest(r: ImageRecord) -> tuple[object, ...]:
    return (-r.mtime_ns, *_largest(r))


def _why_largest(keep: ImageRecord, records: Sequence[ImageRecord]) -> str:
    return f"largest: {keep.width} x {keep.height}, {keep.size:,} bytes"


def _why_oldest(keep: ImageRecord, records: Sequence[ImageRecord]) -> str:
    return "oldest: modified first"


def _why_newest(keep: ImageRecord, records: Sequence[ImageRecord]) -> str:
    return "newest: modified last"


def parse_keep(spec: str) -> KeepPolicy:
    """`best` (the default), `largest`, `oldest`, `newest`, or `path-priority:DIR,DIR,...`."""
    if spec == "best":
        return KeepPolicy("best")
    simple = {
        "largest": (_largest, _why_largest),
        "oldest": (_oldest, _why_oldest),
        "newest": (_newest, _why_newest),
    }
    if spec in simple:
        key, why = simple[spec]
        return KeepPolicy(spec, key, why)
    if spec.startswith("path-priority:"):
        folders = [
            os.path.abspath(d).rstrip(os.sep) + os.sep
            for d in spec.removeprefix("path-priority:").split(",")
            if d
        ]
        if not folders:
            raise InvalidOption("path-priority: needs at least one folder", field="keep")

        def rank(r: ImageRecord) -> tuple[object, ...]:
            first = next((i for i, d in enumerate(folders) if r.path.startswith(d)), len(folders))
            return (first, *_largest(r))

        def why(keep: ImageRecord, records: Sequence[ImageRecord]) -> str:
            folder = next((d for d in folders if keep.path.startswith(d)), None)
            return f"in {folder}" if folder else "no copy in the folders given: the largest"

        return KeepPolicy(spec, rank, why)
    raise InvalidOption(f"{spec!r} is not one of {KEEP_HELP}", field="keep")
