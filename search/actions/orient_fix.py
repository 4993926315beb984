"""Turning images upright on disk, safely: a plan (the dry run shows it), then fixes that are
journalled with a backup of each original, so `imgsearch undo JOURNAL` puts them back.

A JPEG is fixed without re-encoding: only its EXIF orientation tag changes (piexif rewrites
the APP1 segment and copies the compressed image data as is). Other formats, and JPEGs whose
EXIF piexif cannot rewrite, are turned and saved again in their own format (PNG stays
lossless). A file is only touched if it is still the one that was looked at (size, mtime).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, ImageOps

from indexer.orientation import Orientation
from search.actions.journal import append_entry, open_journal
from store import write_atomic

Method = Literal["exif", "re-encode"]
ORIENTATION_TAG = 0x0112
# How PIL's exif_transpose shows each EXIF orientation (1: as stored).
_SHOWN = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class Fix:
    path: str
    angle: int  # the content's predicted counter-clockwise turn; the fix turns it back
    method: Method
    size: int  # the file as it was looked at: it must be unchanged when fixed
    mtime_ns: int


def plan_fixes(found: Sequence[Orientation]) -> list[Fix]:
    """The fixes for every image not upright; changes nothing."""
    fixes = []
    for o in found:
        if o.angle == 0:
            continue
        st = os.stat(o.path)
        method: Method = "exif" if _is_jpeg(o.path) else "re-encode"
        fixes.append(Fix(o.path, o.angle, method, st.st_size, st.st_mtime_ns))
    return fixes


def combined_orientation(current: int, angle: int) -> int:
    """The EXIF orientation that shows what `current` shows, turned `angle` degrees clockwise.

    Found by trying the eight on a small asymmetric image, so the table above is the only
    statement of what each orientation means.
    """
    probe = Image.frombytes("L", (3, 2), bytes(range(6)))
    shown = probe.transpose(_SHOWN[current]) if current in _SHOWN else probe
    wanted = shown.rotate(-angle, expand=True)
    for candidate in range(1, 9):
        result = probe.transpose(_SHOWN[candidate]) if candidate in _SHOWN else probe
        if result.size == wanted.size and result.tobytes() == wanted.tobytes():
            return candidate
    raise AssertionError(f"no EXIF orientation for {current} turned by {angle}")


def apply_fixes(fixes: Sequence[Fix], journal: Path, home: Path) -> list[tuple[str, str]]:
    """Fix each file, backing up the original and journalling it. Returns the failures."""
    backups = journal.with_suffix(".originals")
    backups.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, str]] = []
    with open_journal(journal, home, "orient") as log:
        for number, fix in enumerate(fixes):
            try:
                st = os.stat(fix.path)
                if (st.st_size, st.st_mtime_ns) != (fix.size, fix.mtime_ns):
                    failures.append((fix.path, "changed since it was looked at"))
                    continue
                data = _turned(fix)
                backup = backups / f"{number}-{os.path.basename(fix.path)}"
                shutil.copy2(fix.path, backup)
                # The intent first: a kill before the outcome line leaves a journal that
                # still names the file and its original.
                append_entry(
                    log,
                    {"intent": True, "kind": "replace", "source": fix.path, "target": str(backup)},
                )
                _replace(fix.path, data)
            except (OSError, ValueError) as exc:
                failures.append((fix.path, getattr(exc, "strerror", None) or str(exc)))
                continue
            now = os.stat(fix.path)
            append_entry(
                log,
                {
                    "kind": "replace",
                    "source": fix.path,
                    "target": str(backup),
                    "size": now.st_size,
                    "mtime_ns": now.st_mtime_ns,
                },
            )
    return failures


def _turned(fix: Fix) -> bytes:
    """The new file content. Raises OSError or ValueError when the file cannot be turned."""
    with open(fix.path, "rb") as handle:
        data = handle.read()
    if fix.method == "exif":
        try:
            return _with_orientation(data, fix.angle)
        except Exception:  # piexif raises anything on odd EXIF: re-encode instead
            pass
    with Image.open(io.BytesIO(data)) as image:
        kind = image.format
        upright = ImageOps.exif_transpose(image).rotate(-fix.angle, expand=True)
        exif = image.getexif()
        exif[ORIENTATION_TAG] = 1
        out = io.BytesIO()
        extra: dict[str, object] = {"exif": exif.tobytes()}
        if icc := image.info.get("icc_profile"):
            extra["icc_profile"] = icc
        if kind in ("JPEG", "WEBP"):
            extra["quality"] = 95
        upright.save(out, format=kind, **extra)
    return out.getvalue()


def _with_orientation(data: bytes, angle: int) -> bytes:
    import piexif

    exif = piexif.load(data)
    current = int(exif["0th"].get(piexif.ImageIFD.Orientation, 1))
    exif["0th"][piexif.ImageIFD.Orientation] = combined_orientation(current, angle)
    out = io.BytesIO()
    piexif.insert(piexif.dump(exif), data, out)
    return out.getvalue()


def _replace(path: str, data: bytes) -> None:
    """Write beside the file, fsync, rename over it: a crash leaves the old or the new file."""
    write_atomic(Path(path), data, mode_of=Path(path))


def _is_jpeg(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(3) == b"\xff\xd8\xff"
