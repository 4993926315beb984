"""The journal every action on a user's files writes, and `undo` reads: a JSON-lines file whose
first line is a header (version, time, home, kind), each line appended and fsynced before the
next step starts, and a last line `{"undone": ...}` once it was undone."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from store import ImgsearchError

JOURNAL_VERSION = 2


class ActionError(ImgsearchError):
    """A plan or journal that cannot be read, or refers to what is not there."""


@contextmanager
def open_journal(journal: Path, home: Path, kind: str) -> Iterator[TextIO]:
    """A new journal (never an existing one) with its header written, open for entries."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    with open(journal, "x", encoding="utf-8") as log:
        header = {
            "version": JOURNAL_VERSION,
            "created": time.time(),
            "home": str(home),
            "kind": kind,
        }
        append_entry(log, header)
        yield log


def mark_undone(journal: Path) -> None:
    with open(journal, "a+", encoding="utf-8") as log:
        log.seek(0, os.SEEK_END)
        if log.tell():  # after a torn last line, the marker starts a line of its own
            log.seek(log.tell() - 1)
            ends = log.read(1) == "\n"
            log.seek(0, os.SEEK_END)
            if not ends:
                log.write("\n")
        append_entry(log, {"undone": time.time()})


def read_journal(journal: Path) -> tuple[dict[str, object], list[dict[str, object]], int, bool]:
    """(header, complete entries, torn lines, undone). A line cut short by a kill, or any line
    that is not a JSON object in UTF-8, is skipped and counted; the rest still counts."""
    try:
        lines = journal.read_bytes().splitlines()
        header = json.loads(lines[0].decode("utf-8"))
    except (OSError, ValueError, IndexError, RecursionError) as exc:
        raise ActionError(f"{journal}: not a readable imgsearch journal ({exc})") from exc
    if not isinstance(header, dict) or header.get("version") not in (1, JOURNAL_VERSION):
        raise ActionError(f"{journal}: not an imgsearch journal of a known version")
    entries: list[dict[str, object]] = []
    torn, undone = 0, False
    for line in lines[1:]:
        try:
            entry = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            entry = None
        if not isinstance(entry, dict):
            torn += 1
        elif "undone" in entry:
            undone = True
        else:
            entries.append(entry)
    return header, entries, torn, undone


def journal_path(home: Path, kind: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Two actions in one second (keys pressed quickly on the review page) get two journals.
    return home / "journals" / f"{stamp}-{kind}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"


def append_entry(log: TextIO, entry: dict[str, object]) -> None:
    log.write(json.dumps(entry) + "\n")
    log.flush()
    os.fsync(log.fileno())
