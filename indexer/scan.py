"""Walk folders for image files, and hash file content."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat as stat_mode
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
# The most bytes one image file may have. Larger files (a 2 GiB sparse `.jpg`, a disk image
# named like a photo) are refused before a byte is read: decoding is held to far less anyway.
MAX_FILE_BYTES = 1 << 30
log = logging.getLogger("imgsearch.indexer")


@dataclass(frozen=True)
class Skipped:
    """A file or folder under the scanned folders that could not even be listed or stat'ed."""

    path: str
    reason: str


def check_folders(roots: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The real paths of `roots` (symlinks resolved, so that a folder reached through a link
    is the same folder in every run); raises FolderNotFound for the first one that is not a
    folder."""
    folders = []
    for root in roots:
        try:
            path = os.path.realpath(root)
            is_dir = os.path.isdir(path)
            exists = is_dir or os.path.exists(path)
        except (OSError, ValueError):
            is_dir = exists = False
        if not is_dir:
            why = (
                f"a file, not a folder (to search with it: imgsearch query {root})"
                if exists
                else "no such folder"
            )
            raise FolderNotFound(f"{root}: {why}")
        folders.append(path)
    return folders


def real_path(path: str) -> str:
    """A file's identity across runs: its path with every symlink resolved."""
    return os.path.realpath(path)


def not_indexable(st: os.stat_result) -> str | None:
    """Why a file (stat'ed through its links) is not read as an image; None when it may be."""
    if not stat_mode.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, device or socket named like an image)"
    if st.st_size > MAX_FILE_BYTES:
        return f"larger than {MAX_FILE_BYTES >> 20} MiB, the most an image file may be"
    return None


def scan(folders: Sequence[str], skipped: list[Skipped] | None = None) -> Iterator[FileStat]:
    """Image files under `folders`, recursively, each once, in a stable order.

    Hidden files and folders are skipped; symlinked folders are not followed (no loops). A
    symlinked file is yielded under its real path, so a file reached by several paths is one
    file in every run; hard links to one file are yielded once, under the first path. Folders
    that cannot be read, files that cannot be stat'ed (no permission, a path longer than the
    system allows), and files that are not regular files or are too large are appended to
    `skipped`; a dangling symlink is not an image and is passed over. Temp files of a killed
    `orient --fix` are removed on the way.
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
                why = not_indexable(st)
                if why is not None:
                    found.append(Skipped(path, why))
                    continue
                if os.path.islink(path):
                    path = real_path(path)
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


def hash_file(path: str, limit: int = MAX_FILE_BYTES) -> str:
    """`content_hash` of a file read in chunks (at most `limit` bytes). Raises OSError."""
    digest = hashlib.blake2b(digest_size=16)
    left = limit
    with open(path, "rb") as handle:
        while left > 0 and (chunk := handle.read(min(1 << 20, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()
