"""Which copy of a duplicate group to keep. Policies are total orders: the first record wins."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from indexer.errors import InvalidOption
from store import ImageRecord

KEEP_HELP = "largest | oldest | newest | path-priority:DIR[,DIR...]"


@dataclass(frozen=True)
class KeepPolicy:
    """A named ordering of records; `choose` returns the one to keep."""

    name: str
    key: Callable[[ImageRecord], tuple[object, ...]]

    def choose(self, records: Sequence[ImageRecord]) -> ImageRecord:
        return min(records, key=self.key)


def _largest(r: ImageRecord) -> tuple[object, ...]:
    # Most pixels, then the largest file (less compressed), then the oldest, then the path.
    return (-r.width * r.height, -r.size, r.mtime_ns, r.path)


def _oldest(r: ImageRecord) -> tuple[object, ...]:
    return (r.mtime_ns, *_largest(r))


def _newest(r: ImageRecord) -> tuple[object, ...]:
    return (-r.mtime_ns, *_largest(r))


LARGEST = KeepPolicy("largest", _largest)


def parse_keep(spec: str) -> KeepPolicy:
    """`largest` (the default), `oldest`, `newest`, or `path-priority:DIR,DIR,...`."""
    simple = {"largest": _largest, "oldest": _oldest, "newest": _newest}  # LARGEST is the default
    if spec in simple:
        return KeepPolicy(spec, simple[spec])
    if spec.startswith("path-priority:"):
        folders = [
            os.path.abspath(d).rstrip(os.sep) + os.sep
            for d in spec.removeprefix("path-priority:").split(",")
            if d
        ]
        if not folders:
            raise InvalidOption("--keep path-priority: needs at least one folder")

        def rank(r: ImageRecord) -> tuple[object, ...]:
            first = next((i for i, d in enumerate(folders) if r.path.startswith(d)), len(folders))
            return (first, *_largest(r))

        return KeepPolicy(spec, rank)
    raise InvalidOption(f"--keep must be {KEEP_HELP}, got {spec!r}")
