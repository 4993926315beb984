"""Acting on duplicates: plan (a dry run shows exactly this), apply with a journal, undo.

Only non-keepers of reported groups are ever touched, and only if the file on disk is still
the one that was indexed (same size and mtime). Nothing is overwritten. Each applied action is
appended to the journal and fsynced before the next one starts, so a crash leaves a journal
that describes exactly what happened.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TextIO

from search.dupes import DuplicateGroup
from store import ImageRecord, Store

ActionKind = Literal["move", "symlink", "delete"]
JOURNAL_VERSION = 1


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    source: str
    target: str | None  # None for delete
    record_id: int


@dataclass(frozen=True)
class ActionPlan:
    actions: list[Action]
    skipped: list[tuple[str, str]]  # (path, why it is left alone)


@dataclass(frozen=True)
class UndoReport:
    restored: list[str]
    not_restored: list[tuple[str, str]]  # (path, why)


class ActionError(Exception):
    """A journal that cannot be read or undone."""


def plan_actions(
    groups: Sequence[DuplicateGroup], kind: ActionKind, dest: Path | None
) -> ActionPlan:
    """What acting on the non-keepers would do; changes nothing."""
    records = [m.record for g in groups for m in g.members]
    root = _common_root([r.path for r in records])
    actions: list[Action] = []
    skipped: list[tuple[str, str]] = []
    for record in records:
        why = _why_not(record)
        target = None
        if why is None and dest is not None:
            target = str(dest.absolute() / os.path.relpath(record.path, root))
            if os.path.lexists(target):
                why = f"{target} exists (never overwritten)"
        if why is None:
            actions.append(Action(kind, record.path, target, record.id))
        else:
            skipped.append((record.path, why))
    return ActionPlan(actions, skipped)


def apply_actions(plan: ActionPlan, store: Store, journal: Path) -> list[tuple[str, str]]:
    """Carry out the plan, journal each step, update the index. Returns the failures."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, str]] = []
    gone: list[str] = []
    with open(journal, "x", encoding="utf-8") as log:
        append_entry(log, {"version": JOURNAL_VERSION, "created": time.time()})
        for action in plan.actions:
            try:
                _do(action)
            except OSError as exc:
                failures.append((action.source, exc.strerror or str(exc)))
                continue
            append_entry(log, asdict(action))
            if action.kind != "symlink":
                gone.append(action.source)
    store.remove_paths(gone)
    store.flush()
    return failures


def undo(journal: Path) -> UndoReport:
    """Put moved files back, remove created links, restore originals of fixed files.
    Deleted files cannot come back."""
    try:
        lines = journal.read_text(encoding="utf-8").splitlines()
        header, entries = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    except (OSError, ValueError, IndexError) as exc:
        raise ActionError(f"{journal}: not a readable imgsearch journal ({exc})") from exc
    if header.get("version") != JOURNAL_VERSION:
        raise ActionError(f"{journal}: unknown journal version {header.get('version')!r}")
    restored: list[str] = []
    not_restored: list[tuple[str, str]] = []
    for entry in reversed(entries):
        source, target = entry["source"], entry["target"]
        try:
            if entry["kind"] == "move":
                _move_no_overwrite(target, source)
                restored.append(source)
            elif entry["kind"] == "symlink":
                os.unlink(target)
                restored.append(source)
            elif entry["kind"] == "replace":  # `orient --fix`: the original was kept aside
                st = os.stat(source)
                if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
                    not_restored.append((source, "changed since it was fixed"))
                    continue
                os.replace(target, source)
                restored.append(source)
            else:
                not_restored.append((source, "it was deleted"))
        except OSError as exc:
            not_restored.append((source, exc.strerror or str(exc)))
    return UndoReport(restored, not_restored)


def journal_path(home: Path, kind: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return home / "journals" / f"{stamp}-{kind}-{os.getpid()}.jsonl"


def _why_not(record: ImageRecord) -> str | None:
    try:
        st = os.stat(record.path)
    except OSError:
        return "missing on disk"
    if (st.st_size, st.st_mtime_ns) != (record.size, record.mtime_ns):
        return "changed since it was indexed"
    return None


def _common_root(paths: Sequence[str]) -> str:
    if not paths:
        return os.sep
    return os.path.commonpath([os.path.dirname(p) for p in paths])


def _do(action: Action) -> None:
    if action.kind == "delete":
        os.unlink(action.source)
        return
    assert action.target is not None
    os.makedirs(os.path.dirname(action.target), exist_ok=True)
    if action.kind == "symlink":
        os.symlink(action.source, action.target)  # fails if the target exists
    else:
        _move_no_overwrite(action.source, action.target)


def _move_no_overwrite(source: str, target: str) -> None:
    """rename() would replace an existing target: link (or copy exclusively), then unlink."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)  # atomic, and fails if the target exists
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP):
            raise
        with open(source, "rb") as src, open(target, "xb") as dst:  # another filesystem
            shutil.copyfileobj(src, dst)
        shutil.copystat(source, target)
    os.unlink(source)


def append_entry(log: TextIO, entry: dict[str, object]) -> None:
    log.write(json.dumps(entry) + "\n")
    log.flush()
    os.fsync(log.fileno())
