"""Walk folders for image files, and hash file content."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from indexer.errors import FolderNotFound
from store import FileStat

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif",
     ".heic", ".heif"}
)  # fmt: skip


def check_folders(roots: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Absolute paths of `roots`; raises FolderNotFound for the first one that is missing."""
    folders = []
    for root in roots:
        path = os.path.abspath(root)
        if not os.path.isdir(path):
            raise FolderNotFound(f"{root}: no such folder")
        folders.append(path)
    return folders


def scan(folders: Sequence[str]) -> Iterator[FileStat]:
    """Image files under `folders`, recursively, each once, in a stable order.

    Hidden files and folders are skipped; symlinked folders are not followed (no loops). A file
    reached by several paths (symlinks, hard links) is indexed once, under the first path.
    """
    inodes: set[tuple[int, int]] = set()  # also catches overlapping folders (`a a/b`)
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # vanished or a dangling symlink: nothing to index
                if (st.st_dev, st.st_ino) in inodes:
                    continue
                inodes.add((st.st_dev, st.st_ino))
                yield FileStat(path, st.st_size, st.st_mtime_ns)


def is_under(path: str, folders: Sequence[str]) -> bool:
    return any(path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


def content_hash(data: bytes) -> str:
    """128-bit BLAKE2b of the file's bytes: identifies a file's content across renames."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()
