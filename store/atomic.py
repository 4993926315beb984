"""Atomic file writes, the one way every part of imgsearch replaces a file: write a temp file
beside the target, fsync it, rename it over the target. A kill leaves the old file or the new
one, never half of one, plus at most a temp file named `.NAME.imgsearch-PID.tmp` that
`remove_stale_temp` (and `index`'s scan) removes once its process is gone.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMP = re.compile(r"^\..+\.imgsearch-(\d+)\.tmp(\..+)?$")  # (.dead.npy: a FAISS sidecar)


def temp_path(target: Path) -> Path:
    """The temp file this process writes `target` through (hidden: scans pass it over)."""
    return target.with_name(f".{target.name}.imgsearch-{os.getpid()}.tmp")


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(target: Path, mode_of: Path | None = None) -> Iterator[Path]:
    """Yield the temp path to write; when the block ends without an exception, fsync it and
    rename it over `target` (with the permission bits of `mode_of`, if given). The temp file
    never outlives the block."""
    tmp = temp_path(target)
    tmp.unlink(missing_ok=True)  # a leftover of this very PID, from an earlier boot
    try:
        yield tmp
        fsync_file(tmp)
        if mode_of is not None:
            shutil.copymode(mode_of, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(target: Path, data: bytes, mode_of: Path | None = None) -> None:
    """Replace `target` with `data`, atomically (its folder is created if missing)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, mode_of) as tmp, open(tmp, "xb") as handle:
        handle.write(data)


def temp_pid(name: str) -> int | None:
    """The PID in a temp file's name, or None when `name` is not one of ours."""
    match = _TEMP.match(name)
    return int(match.group(1)) if match else None


def remove_stale_temp(folder: Path, pattern: str = ".*.imgsearch-*.tmp*") -> list[Path]:
    """Temp files in `folder` whose process is gone (a killed write). Returns those removed."""
    removed = []
    for path in folder.glob(pattern):
        pid = temp_pid(path.name)
        if pid is not None and not pid_alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
