"""The platform trash, through send2trash, and putting files back from it (freedesktop trash).

send2trash moves a file into the trash and writes its `.trashinfo`; on Linux (the freedesktop
specification) the file and its info can be found again by the original path, which is what
`undo` needs. Elsewhere files stay in the trash and `undo` says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote


def send_to_trash(path: str) -> dict[str, object]:
    """Move `path` to the trash; what undo needs to find it (journalled)."""
    from send2trash import send2trash

    before = set(_info_files())
    send2trash(path)
    found = _find_trashed(path, exclude=before)
    return {"trash_file": found[0], "trash_info": found[1]} if found else {}


def restore_from_trash(entry: dict[str, object], source: str) -> None:
    """Put a trashed file back where it was; a file already back is left as it is. Raises
    OSError when it cannot."""
    trashed, info = entry.get("trash_file"), entry.get("trash_info")
    if not trashed or not os.path.lexists(str(trashed)):
        found = _find_trashed(source)
        if found is None:
            if os.path.lexists(source):
                return  # back already (an undo that was killed), or never trashed
            raise FileNotFoundError(f"{source} is no longer in the trash")
        trashed, info = found
    if os.path.lexists(source):
        raise FileExistsError(f"{source} exists again (never overwritten)")
    os.makedirs(os.path.dirname(source), exist_ok=True)
    if _same_device(str(trashed), source):
        os.link(str(trashed), source)
    else:
        _copy(str(trashed), source)
    os.unlink(str(trashed))
    if info:
        Path(str(info)).unlink(missing_ok=True)


def _same_device(a: str, b: str) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(os.path.dirname(b)).st_dev
    except OSError:
        return False


def _copy(source: str, target: str) -> None:
    import shutil

    with open(source, "rb") as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copystat(source, target)


def _trash_roots() -> list[Path]:
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    roots = [Path(data) / "Trash"]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    for mount in _mounts():
        roots += [Path(mount) / ".Trash" / str(uid), Path(mount) / f".Trash-{uid}"]
    return [r for r in roots if (r / "info").is_dir()]


def _mounts() -> list[str]:
    try:
        with open("/proc/mounts", encoding="utf-8") as handle:
            return [line.split()[1] for line in handle if len(line.split()) > 1]
    except OSError:
        return []


def _info_files() -> list[Path]:
    return [p for root in _trash_roots() for p in (root / "info").glob("*.trashinfo")]


def _find_trashed(path: str, exclude: set[Path] | None = None) -> tuple[str, str] | None:
    """(trashed file, its .trashinfo) of the newest trash entry for `path`."""
    wanted = os.path.abspath(path)
    best: tuple[float, str, str] | None = None
    for info in _info_files():
        if exclude and info in exclude:
            continue
        try:
            text = info.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            continue
        line = next((x for x in text.splitlines() if x.startswith("Path=")), "")
        original = unquote(line.removeprefix("Path="), errors="surrogateescape")
        root = info.parent.parent
        if not os.path.isabs(original):  # relative to the top of the volume
            top = root.parent if root.name.startswith(".Trash-") else root.parent.parent
            original = os.path.join(str(top), original)
        if os.path.abspath(original) != wanted:
            continue
        trashed = root / "files" / info.name.removesuffix(".trashinfo")
        mtime = info.stat().st_mtime
        if os.path.lexists(trashed) and (best is None or mtime > best[0]):
            best = (mtime, str(trashed), str(info))
    return (best[1], best[2]) if best else None
