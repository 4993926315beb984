"""Acting on duplicates: one planner and one journal for the CLI, plan files and the web page.

A plan (a dry run shows exactly it) lists what happens to the non-keepers of groups; a file
shown as kept is never in it, and a file is only touched while it is still the one that was
indexed (same size and mtime) and while its group's kept file is on disk as indexed and is not
the same file (search/actions/safety.py), both checked at planning and again right before the
file is touched. Nothing is overwritten. Removal goes to the platform trash by default
(send2trash; the freedesktop trash on Linux, from where `undo` puts files back); `delete` is
permanent.

The journal has the intent of each step (fsynced) before the step and its outcome after, so a
run killed at any instant leaves a journal that names every file in flight. The rows of the
files to act on leave the catalog (kept aside under the journal) before the first file is
touched, so the catalog never answers for a moved file; rows of files left in place come back
at the end. `undo` brings files and rows back (same ids, no re-embedding); it goes by what is on
disk, so it can be killed and run again. The caller holds the home's writer lock.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, TextIO

from search.actions.journal import (
    ActionError,
    append_entry,
    mark_undone,
    open_journal,
    read_journal,
)
from search.actions.safety import KeeperCheck, Kept, check_destination
from search.actions.trash import restore_from_trash, send_to_trash
from search.records import DuplicateGroup, Member
from search.sets import NO_SETS, Sets
from store import DEFAULT_WAIT, ImageRecord, Store

ActionKind = Literal["move", "symlink", "trash", "delete"]
KINDS: tuple[ActionKind, ...] = ("move", "symlink", "trash", "delete")


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    source: str
    target: str | None  # move: the new path; symlink: the link; trash, delete: None
    record_id: int
    size: int  # the file as indexed: it must still be this when acted on
    mtime_ns: int
    kept: Kept | None = None  # its group's kept file, checked on disk before it is touched


@dataclass(frozen=True)
class ActionPlan:
    actions: list[Action]
    skipped: list[tuple[str, str]]  # (path, why it is left alone)

    @property
    def freed_bytes(self) -> int:
        """Space the plan frees where the files are (a move to another disk frees it there)."""
        return sum(a.size for a in self.actions if a.kind != "symlink")


@dataclass(frozen=True)
class ApplyReport:
    done: list[Action]
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


@dataclass(frozen=True)
class UndoReport:
    restored: list[str]
    not_restored: list[tuple[str, str]]  # (path, why)
    unlinked: int = 0  # symlinks removed
    torn: int = 0  # journal lines that were cut short (a kill mid-append): skipped
    already: bool = False  # the journal had been undone before
    reindexed: int = 0  # restored files whose catalog rows came back


def plan_actions(
    groups: Sequence[DuplicateGroup],
    kind: ActionKind,
    dest: Path | None,
    folders: Sequence[str] = (),
    sets: Sets = NO_SETS,
) -> ActionPlan:
    """What acting on the non-keepers would do; changes nothing. `folders`: the indexed
    folders, where copies are never moved to; `sets`: files in reference folders (and outside
    the sets after the first) are left alone. Raises ActionError for a destination that is no
    place for them."""
    keepers = {g.keep.id for g in groups}
    records: list[tuple[ImageRecord, Kept]] = []
    seen: set[int] = set()
    for group in groups:
        for member in group.members:
            record = member.record
            if record.id in keepers or record.id in seen:  # shown as kept, or twice
                continue
            seen.add(record.id)
            records.append((record, Kept.of(group.keep)))
    if dest is not None and kind in ("move", "symlink"):
        dest = check_destination(dest, folders if kind == "move" else ())
    root = _common_root([r.path for r, _ in records])
    actions: list[Action] = []
    skipped: list[tuple[str, str]] = []
    check = KeeperCheck()
    for record, kept in records:
        why = sets.untouchable(record.path) or _why_not(record) or check.fault(kept, record.path)
        target = None
        if why is None and dest is not None and kind in ("move", "symlink"):
            target = str(dest / os.path.relpath(record.path, root))
            if os.path.lexists(target):
                why = f"{target} exists (never overwritten)"
        if why is None:
            actions.append(
                Action(kind, record.path, target, record.id, record.size, record.mtime_ns, kept)
            )
        else:
            skipped.append((record.path, why))
    return ActionPlan(actions, skipped)


def groups_from_plan(store: Store, path: Path) -> list[DuplicateGroup]:
    """The groups of a plan file (`dupes --json`, keepers possibly edited): each group's
    `keep` id and `members` ids must be indexed images, each in one group only."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        listed = [
            (
                _id(g["keep"]["id"]),
                [(_id(m["id"]), float(m.get("score", 0.0))) for m in g["members"]],
            )
            for g in data["groups"]
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ActionError(f"{path}: not a plan (`imgsearch dupes --json` output): {exc}") from exc
    everyone = [i for keep, members in listed for i in (keep, *(m for m, _ in members))]
    if len(everyone) != len(set(everyone)):
        twice = next(i for i in everyone if everyone.count(i) > 1)
        raise ActionError(f"{path}: image {twice} is in more than one group, or kept and not")
    records = store.catalog.records(everyone)
    missing = sorted(set(everyone) - set(records))
    if missing:
        raise ActionError(
            f"{path}: no image with id {missing[0]} in the index (indexed again "
            "since the plan was made?)"
        )

    return [
        DuplicateGroup(
            "near",
            records[keep],
            [Member(records[i], score, score, "listed in the plan") for i, score in members],
            "kept in the plan",
        )
        for keep, members in listed
    ]


def _id(value: object) -> int:
    """An image id as a plan lists it: a whole number, never a float truncated to one."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an image id")
    return value


def apply_plan(plan: ActionPlan, store: Store, journal: Path) -> ApplyReport:
    """Carry out the plan, journal each step, update the catalog. Hold the writer lock."""
    journal = journal.absolute()
    failures: list[tuple[str, str]] = []
    done: list[Action] = []
    kind = plan.actions[0].kind if plan.actions else "none"
    check = KeeperCheck()
    with open_journal(journal, store.home, kind) as log:
        leaving = [a.source for a in plan.actions if a.kind != "symlink"]
        append_entry(log, {"planned": leaving})  # every row kept aside, for `undo` to find
        store.remove_paths(leaving, journal=str(journal))  # before any file moves
        store.flush()
        for action in plan.actions:
            why = _why_not_path(action)
            if why is None and action.kept is not None:
                why = check.fault(action.kept, action.source)
            if why is not None:
                failures.append((action.source, f"left alone: {why}"))
                continue
            append_entry(log, {"intent": True, **asdict(action)})
            try:
                extra = _do(action, log)
            except OSError as exc:
                failures.append((action.source, exc.strerror or str(exc)))
                append_entry(log, {"failed": action.source})
                continue
            append_entry(log, {**asdict(action), **extra})
            done.append(action)
        store.restore_paths(str(journal), [path for path, _ in failures])
        store.flush()
        append_entry(log, {"finished": time.time()})
    return ApplyReport(done, failures)


def undo(journal: Path) -> UndoReport:
    """Put moved and trashed files back (and their catalog rows), remove created links and the
    folders the action made, restore originals of `orient --fix`. Deleted files cannot come
    back. It goes by what is on disk: a file already back counts as restored, so an undo that
    was killed can be run again, and a step the action was killed in is undone as well. Undoing
    twice restores nothing and says so."""
    journal = journal.absolute()
    header, entries, torn, undone = read_journal(journal)
    if undone:
        return UndoReport([], [], already=True, torn=torn)
    finished = {(e.get("kind"), e.get("source")) for e in entries if "intent" not in e}
    restored: list[str] = []
    not_restored: list[tuple[str, str]] = []
    unlinked = 0
    for entry in reversed(entries):
        kind, source, target = entry.get("kind"), entry.get("source"), entry.get("target")
        if not isinstance(kind, str) or not isinstance(source, str):
            continue  # the run's own markers (failed, finished), or a line it did not write
        if entry.get("intent") and (kind, source) in finished:
            continue  # its outcome line, read below or above, says what happened
        try:
            if kind == "mkdir":
                _remove_empty(source)
            elif kind == "move":
                if _back_already(source, str(target)):
                    if not entry.get("intent"):  # put back by an undo that was killed
                        restored.append(source)
                    continue  # (an intent: killed before the file moved)
                _move_no_overwrite(str(target), source)
                restored.append(source)
            elif kind == "trash":
                restore_from_trash(entry, source)
                restored.append(source)
            elif kind == "symlink":
                if os.path.islink(str(target)):
                    os.unlink(str(target))
                    unlinked += 1
            elif kind == "replace":  # `orient --fix`: the original was kept aside
                if _replace_back(entry, source, str(target)):
                    restored.append(source)
                else:
                    not_restored.append((source, "changed since it was fixed"))
            elif kind == "delete" and not os.path.lexists(source):
                not_restored.append((source, "it was deleted"))
        except OSError as exc:
            not_restored.append((source, exc.strerror or str(exc)))
    reindexed = 0
    home = header.get("home")
    planned: list[str] = []
    for entry in entries:
        listed = entry.get("planned")
        if isinstance(listed, list):
            planned += [str(path) for path in listed]
    acted = [str(e["source"]) for e in entries if e.get("kind") in ("move", "trash", "delete")]
    on_disk = [path for path in [*planned, *acted] if os.path.lexists(path)]
    if isinstance(home, str) and on_disk and Path(home, "catalog.sqlite").is_file():
        with Store.writer(home, wait=DEFAULT_WAIT) as store:
            reindexed = store.restore_paths(str(journal), sorted(set(on_disk)))
            store.flush()
    mark_undone(journal)
    restored = list(dict.fromkeys(restored))
    return UndoReport(restored, not_restored, unlinked, torn, False, reindexed)


def _back_already(source: str, target: str) -> bool:
    """A moved file found at its old place and no longer at the new one: an earlier undo that
    was killed put it back, or the action was killed before it moved it."""
    return os.path.lexists(source) and not os.path.lexists(target)


def _replace_back(entry: dict[str, object], source: str, kept_aside: str) -> bool:
    """Put the original of a fixed image back; True when it is back (now or already)."""
    if not os.path.lexists(kept_aside):
        return os.path.lexists(source)  # put back by an earlier undo, or never replaced
    if entry.get("intent"):  # killed mid-fix: the atomic write left the original or the fix
        if not _same_bytes(source, kept_aside):
            os.replace(kept_aside, source)
        return True
    st = os.stat(source)
    if (st.st_size, st.st_mtime_ns) != (entry.get("size"), entry.get("mtime_ns")):
        return False
    os.replace(kept_aside, source)
    return True


def _same_bytes(a: str, b: str) -> bool:
    try:
        with open(a, "rb") as one, open(b, "rb") as other:
            while True:
                x, y = one.read(1 << 20), other.read(1 << 20)
                if x != y:
                    return False
                if not x:
                    return True
    except FileNotFoundError:
        return False


def _why_not(record: ImageRecord) -> str | None:
    try:
        st = os.lstat(record.path)
    except OSError:
        return "missing on disk"
    if (st.st_size, st.st_mtime_ns) != (record.size, record.mtime_ns):
        return "changed since it was indexed"
    return None


def _why_not_path(action: Action) -> str | None:
    try:
        st = os.lstat(action.source)
    except OSError:
        return "missing on disk"
    if (st.st_size, st.st_mtime_ns) != (action.size, action.mtime_ns):
        return "changed since the plan was made"
    return None


def _common_root(paths: Sequence[str]) -> str:
    if not paths:
        return os.sep
    return os.path.commonpath([os.path.dirname(p) for p in paths])


def _do(action: Action, log: TextIO) -> dict[str, object]:
    """Carry out one action; what the journal must add to remember it."""
    if action.kind == "delete":
        os.unlink(action.source)
        return {}
    if action.kind == "trash":
        return send_to_trash(action.source)
    assert action.target is not None
    for folder in _missing_folders(os.path.dirname(action.target)):
        os.mkdir(folder)
        append_entry(log, {"kind": "mkdir", "source": folder, "target": None})
    if action.kind == "symlink":
        os.symlink(action.source, action.target)  # fails if the target exists
    else:
        _move_no_overwrite(action.source, action.target)
    return {}


def _missing_folders(folder: str) -> list[str]:
    missing = []
    while folder and not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return list(reversed(missing))


def _remove_empty(folder: str) -> None:
    try:
        os.rmdir(folder)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            raise


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
