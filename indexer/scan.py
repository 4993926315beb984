"""Walk folders for image files, and hash file content."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import FolderNotFound
from store import FileStat, pid_alive, temp_pid

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".webp",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".avif",
        ".heic",
        ".heif",
    }
)
log = logging.getLogger("imgsearch.indexer")


@dataclass(frozen=True)
class Skipped:
    """A file or folder under the scanned folders that could not even be listed or stat'ed."""

    path: str
    reason: str


def check_folders(roots: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Absolute paths of `roots`; raises FolderNotFound for the first one that is missing."""
    folders = []
    for root in roots:
        path = os.path.abspath(root)
        try:
            is_dir = os.path.isdir(path)
        except (OSError, ValueError):
            is_dir = False
        if not is_dir:
            raise FolderNotFound(f"{root}: no such folder")
        folders.append(path)
    return folders


def scan(folders: Sequence[str], skipped: list[Skipped] | None = None) -> Iterator[FileStat]:
    """Image files under `folders`, recursively, each once, in a stable order.

    Hidden files and folders are skipped; symlinked folders are not followed (no loops). A file
    reached by several paths (symlinks, hard links) is indexed once, under the first path.
    Folders that cannot be read and files that cannot be stat'ed (no permission, a path longer
    than the system allows) are appended to `skipped`; a dangling symlink is not an image and
    is passed over. Temp files of a killed `orient --fix` are removed on the way.
    """
    found = skipped if skipped is not None else []
    inodes: set[tuple[int, int]] = set()  # also catches overlapping folders (`a a/b`)

    def unreadable(exc: OSError) -> None:
        found.append(Skipped(str(exc.filename or "?"), f"folder not read ({_why(exc)})"))

    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if temp_pid(name) is not None:  # `orient --fix` writes beside a photo
                    _remove_if_stale(os.path.join(dirpath, name))
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:  # vanished, or a dangling symlink: no image
                        found.append(Skipped(path, f"cannot stat the file ({_why(exc)})"))
                    continue
                if (st.st_dev, st.st_ino) in inodes:
                    continue
                inodes.add((st.st_dev, st.st_ino))
                yield FileStat(path, st.st_size, st.st_mtime_ns)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is longer than the system allows"
    return exc.strerror or str(exc)


def _remove_if_stale(path: str) -> None:
    pid = temp_pid(os.path.basename(path))
    if pid is not None and not pid_alive(pid):
        try:
            os.unlink(path)
            log.info("removed %s, left by a killed `orient --fix`", path)
        except OSError:
            pass


def is_under(path: str, folders: Sequence[str]) -> bool:
    return any(path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


def content_hash(data: bytes) -> str:
    """128-bit BLAKE2b of the file's bytes: identifies a file's content across renames."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()
