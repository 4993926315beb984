"""What must hold on disk before a duplicate is acted on: the file it duplicates is still there.

A copy is only removed because another file holds the same picture. So before any file is moved,
trashed or deleted, the kept file of its group is checked again, on disk, right then: it exists,
it is a regular file (after its links are resolved) with the size, mtime and content hash it was
indexed with, and it is not the very file about to be acted on (the same device and inode, or a
path that resolves to it). A group whose keeper fails is skipped with the reason. Where the
copies may go is checked too: a real, writable place outside the indexed folders.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from indexer.scan import hash_file, is_under
from search.actions.journal import ActionError
from store import ImageRecord

# Pseudo-filesystems: nothing moved there is a file any more.
_NOT_STORAGE = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class Kept:
    """The kept file of a group as it was indexed: what a copy is removed in favour of."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str

    @classmethod
    def of(cls, record: ImageRecord) -> Kept:
        return cls(record.path, record.size, record.mtime_ns, record.content_hash)


class KeeperCheck:
    """Checks kept files on disk, each one's content hashed once per run of actions."""

    def __init__(self) -> None:
        self._hashes: dict[tuple[str, int, int], str] = {}

    def fault(self, kept: Kept, acted: str) -> str | None:
        """Why `acted` must be left alone for `kept`'s sake now; None when it may go."""
        try:
            st = os.stat(kept.path)
        except OSError:
            return f"its kept copy {kept.path} is gone"
        if not stat.S_ISREG(st.st_mode):
            return f"its kept copy {kept.path} is not a regular file"
        if (st.st_size, st.st_mtime_ns) != (kept.size, kept.mtime_ns):
            return f"its kept copy {kept.path} changed since it was indexed"
        if same_file(acted, kept.path, st):
            return f"it is the same file as its kept copy {kept.path} (a link or another path)"
        key = (kept.path, st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            try:
                self._hashes[key] = hash_file(kept.path)
            except OSError as exc:
                return f"its kept copy {kept.path} cannot be read ({exc.strerror or exc})"
        if self._hashes[key] != kept.content_hash:
            return f"its kept copy {kept.path} holds other bytes than were indexed"
        return None


def same_file(path: str, other: str, other_stat: os.stat_result | None = None) -> bool:
    """Whether two paths reach one file: one resolves to the other, or one device and inode."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        a = os.stat(path)
        b = other_stat or os.stat(other)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_destination(dest: Path, indexed_folders: Iterable[str]) -> Path:
    """The folder copies are moved (or linked) under, absolute; raises ActionError when it is
    empty, not a place for files, or inside an indexed folder (the next `index` would find the
    moved copies again)."""
    if not str(dest).strip():
        raise ActionError("the destination folder is empty (an unset shell variable?)")
    real = os.path.realpath(dest)
    if any(real == top or real.startswith(top + os.sep) for top in _NOT_STORAGE):
        raise ActionError(f"{dest}: not a place for files ({real} is a system pseudo-filesystem)")
    existing = real
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ActionError(f"{dest}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ActionError(f"{dest}: {existing} is not writable")
    folders = sorted(set(indexed_folders))
    inside = next((f for f in folders if real == f or is_under(real, [f])), None)
    if inside is not None and not _hidden_below(real, inside):
        raise ActionError(
            f"{dest} is inside the indexed folder {inside}: the next `imgsearch index` would "
            "find the moved copies again; choose a folder outside it (or a hidden one in it)"
        )
    return Path(real)


def _hidden_below(path: str, folder: str) -> bool:
    """Whether a folder part below `folder` is hidden (the scan never enters those)."""
    parts = Path(os.path.relpath(path, folder)).parts
    return any(part.startswith(".") and part not in (".", "..") for part in parts)
