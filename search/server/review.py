"""The server's duplicate review: groups, the keeper a user picks, acting on a group or on all
remaining groups, "not duplicates", and undo. Every change holds the writer lock and goes
through the one planner and journal of search/actions/, as `dupes`, `apply` and `undo` do.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from search import render
from search.actions.journal import journal_path, read_journal
from search.actions.plan import (
    ActionKind,
    apply_plan,
    plan_actions,
    undo,
)
from search.copies.dupes import Found
from search.keeper.policy import DEFAULT_KEEP, KEEP_HELP, parse_keep
from search.records import DuplicateGroup
from search.server.listing import GroupFilter, Sort, Wanted, listed
from search.server.state import ServerState
from store import DEFAULT_WAIT, Store, exclusive_writer

ACTED = ("move", "trash", "delete", "symlink", "replace")  # a journal line that touched a file
# What journal_path names a journal (and nothing longer than a file name may be).
_JOURNAL_NAME = re.compile(r"[\w.-]{1,200}\.jsonl")


class Act(BaseModel):
    """What to do with the group whose copy to keep is `keep`."""

    keep: int = Field(description="The id of the copy to keep (any member of the group).")
    members: list[int] = Field(
        description="Every file id of the group as the user saw it, the kept one included: if "
        "the group is not exactly these files now, nothing is done (409)."
    )
    action: Literal["move", "trash", "delete"] = "trash"
    dest: str | None = Field(None, description="With move: the folder to move copies under.")


class Only(BaseModel):
    """Which groups: as GET /api/dupes filters them."""

    kind: Literal["exact", "near"] | None = None
    folder: str | None = None
    min_score: float | None = Field(None, ge=-2, le=2)
    reviewed: bool | None = None

    def filter(self) -> GroupFilter:
        return GroupFilter(self.kind, self.folder, self.min_score, self.reviewed)


class ApplyAll(BaseModel):
    """Act on every group the filter covers, each with its default keeper."""

    action: Literal["move", "trash", "delete"] = "trash"
    dest: str | None = None
    dry_run: bool = True
    only: Only = Field(default_factory=lambda: Only(min_score=None))


def add_review(app: FastAPI, state: ServerState) -> None:
    @app.get("/api/dupes")
    def dupes(
        threshold: Annotated[float | None, Query(ge=0, le=1)] = None,
        keep: Annotated[str, Query(description=KEEP_HELP)] = DEFAULT_KEEP,
        exact_only: bool = False,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        sort: Annotated[Sort, Query(description="found, space, score or folder")] = "found",
        kind: Literal["exact", "near"] | None = None,
        folder: str | None = None,
        min_score: Annotated[float | None, Query(ge=-2, le=2)] = None,
        reviewed: bool | None = None,
    ) -> dict[str, Any]:
        """A page of duplicate groups (`offset`, `limit`; `total` of the filter), each with the
        copy to keep and why. Found once per catalog state and kept, so a page is instant."""
        found = _find(state, threshold, keep, exact_only)
        only = GroupFilter(kind, folder, min_score, reviewed)
        groups = listed(found.groups, only, sort)
        page = dataclasses.replace(found, groups=groups[offset : offset + limit])
        return {
            **render.dupes_json(page, parse_keep(keep).name),
            "total": len(groups),
            "offset": offset,
            "limit": limit,
            "freed_bytes_if_all": sum(m.record.size for g in groups for m in g.members),
        }

    @app.post("/api/dupes/keep")
    def keep(
        image_id: Annotated[int, Body(embed=True, alias="id")],
        members: Annotated[list[int] | None, Body(embed=True)] = None,
    ) -> dict[str, Any]:
        """Keep this copy in its group (remembered in the catalog, across runs). With
        `members`, only if the group is still exactly those files (409 otherwise)."""
        group = _group_of(state, image_id, members)
        chosen = next(r for r in group.files if r.id == image_id)
        if chosen.id != group.keep.id and chosen.content_hash == group.keep.content_hash:
            raise HTTPException(
                400,
                f"#{image_id} has the same bytes as the kept file: of identical files the "
                "oldest (then the first path) is kept; to prefer a folder, use "
                "dupes --keep path-priority:DIR",
            )
        with Store.writer(state.home, wait=DEFAULT_WAIT) as store:
            store.catalog.choose_keeper(
                group.with_keep(image_id, "").keep.content_hash,
                [r.content_hash for r in group.files],
            )
        return {"kept": image_id}

    @app.post("/api/dupes/act")
    def act(request: Act) -> dict[str, Any]:
        """Keep one copy of its group and move, trash or delete the others (journalled)."""
        group = _group_of(state, request.keep, request.members)
        group = group.with_keep(request.keep, "chosen in review")
        return _apply(state, [group], request.action, request.dest)

    @app.post("/api/dupes/apply-default")
    def apply_default(request: ApplyAll) -> dict[str, Any]:
        """Every group the filter covers, with its default keeper: a preview unless dry_run is
        false. The preview lists exactly the files the act then acts on."""
        found = _find(state, None, DEFAULT_KEEP, False)
        groups = listed(found.groups, request.only.filter(), "found")
        if request.dry_run:
            dest = Path(request.dest) if request.dest else None
            with state.current() as store:
                folders = store.meta.indexed_folders
            plan = plan_actions(groups, request.action, dest, folders, state.sets)
            return {
                "dry_run": True,
                "files": [a.source for a in plan.actions],
                "freed_bytes": plan.freed_bytes,
                "left_alone": plan.skipped,
            }
        return _apply(state, groups, request.action, request.dest)

    @app.post("/api/dupes/ignore")
    def ignore(ids: list[int]) -> dict[str, int]:
        """Remember that these images are not duplicates of each other (in the catalog only)."""
        with Store.writer(state.home, wait=DEFAULT_WAIT) as store:
            hashes = _contents_of(store, ids)
            if len(set(hashes)) < 2:
                raise HTTPException(400, "identical files are always duplicates")
            return {"remembered": store.catalog.ignore_pairs(hashes)}

    @app.post("/api/dupes/unignore")
    def unignore(ids: list[int]) -> dict[str, int]:
        """Take "not duplicates" back for every pair among these images."""
        with Store.writer(state.home, wait=DEFAULT_WAIT) as store:
            return {"taken_back": store.catalog.forget_ignored(_contents_of(store, ids))}

    @app.post("/api/dupes/unkeep")
    def unkeep(image_id: Annotated[int, Body(embed=True, alias="id")]) -> dict[str, int]:
        """Take back the keeper a person chose for this image's content: the policy decides."""
        with Store.writer(state.home, wait=DEFAULT_WAIT) as store:
            record = store.catalog.records([image_id]).get(image_id)
            if record is None:
                raise HTTPException(404, f"no image with id {image_id} in the index")
            return {"taken_back": store.catalog.forget_keepers([record.content_hash])}

    @app.get("/api/decisions")
    def decisions() -> dict[str, Any]:
        """What people decided in review, each shown by one indexed file of its content:
        the keepers chosen and the pairs marked "not duplicates" (each can be taken back)."""
        with state.current() as store:
            pairs = store.catalog.ignored_pairs()
            kept = store.catalog.chosen_keepers()
            files = store.catalog.records_of_contents({h for p in pairs for h in p} | kept)
        return {
            "keepers": [render.record_json(files[h]) for h in sorted(kept) if h in files],
            "not_duplicates": [
                [render.record_json(files[a]), render.record_json(files[b])]
                for a, b in sorted(pairs)
                if a in files and b in files
            ],
        }

    @app.get("/api/journals")
    def journals() -> list[dict[str, Any]]:
        """The actions taken in this home, newest first, and whether each was undone."""
        folder = state.home / "journals"
        found = []
        for path in sorted(folder.glob("*.jsonl"), reverse=True) if folder.is_dir() else []:
            try:
                header, entries, _, undone = read_journal(path)
            except Exception:
                continue
            files = [e for e in entries if e.get("kind") in ACTED and not e.get("intent")]
            found.append(
                {
                    "journal": path.name,
                    "kind": header.get("kind"),
                    "files": len(files),
                    "undone": undone,
                }
            )
        return found

    @app.post("/api/undo")
    def undo_journal(journal: Annotated[str, Body(embed=True)]) -> dict[str, Any]:
        """Undo an action of this home by its journal's name."""
        name = os.path.basename(journal)
        path = state.home / "journals" / name
        if not _JOURNAL_NAME.fullmatch(name) or not path.is_file():
            raise HTTPException(404, f"no journal {journal!r} in this home")
        with exclusive_writer(state.home, wait=DEFAULT_WAIT):
            report = undo(path)
        return {
            "restored": report.restored,
            "not_restored": report.not_restored,
            "already": report.already,
            "reindexed": report.reindexed,
        }


def _contents_of(store: Store, ids: list[int]) -> list[str]:
    """The content hashes of two or more indexed images (400 otherwise)."""
    records = store.catalog.records(ids)
    if len(records) != len(set(ids)) or len(records) < 2:
        raise HTTPException(400, "give at least two ids of indexed images")
    return [r.content_hash for r in records.values()]


def _find(state: ServerState, threshold: float | None, keep: str, exact_only: bool) -> Found:
    return state.groups(Wanted(threshold, keep, exact_only, state.sets))


def _group_of(state: ServerState, image_id: int, shown: list[int] | None) -> DuplicateGroup:
    """The group of `image_id` now; refused (409, with the group as it is now) when it is not
    exactly the files `shown` to the user."""
    found = _find(state, None, DEFAULT_KEEP, False)
    for group in found.groups:
        if any(r.id == image_id for r in group.files):
            if shown is not None and sorted(shown) != sorted(r.id for r in group.files):
                now = render.dupes_json(dataclasses.replace(found, groups=[group]), DEFAULT_KEEP)
                raise HTTPException(
                    409,
                    {
                        "message": "this group changed since it was shown: nothing was done",
                        "group": now["groups"][0],
                    },
                )
            return group
    if shown is not None:
        raise HTTPException(409, {"message": f"image {image_id} is in no duplicate group now"})
    raise HTTPException(404, f"image {image_id} is in no duplicate group now")


def _apply(
    state: ServerState, groups: list[DuplicateGroup], action: ActionKind, dest: str | None
) -> dict[str, Any]:
    if action == "move" and not dest:
        raise HTTPException(422, "dest: give the folder to move the copies under")
    with Store.writer(state.home, wait=DEFAULT_WAIT) as store:
        folders = store.meta.indexed_folders
        plan = plan_actions(groups, action, Path(dest) if dest else None, folders, state.sets)
        journal = journal_path(store.home, action)
        report = apply_plan(plan, store, journal)
    return {
        "journal": journal.name,
        "done": [a.source for a in report.done],
        "failures": report.failures,
        "left_alone": plan.skipped,
        "freed_bytes": sum(a.size for a in report.done),
    }
