"""Acting on duplicates: dry runs, move, symlink, delete, trash, plan files and undo."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from search.actions.plan import apply_plan, plan_actions, undo
from search.cli import cli
from search.copies.dupes import DupeOptions, find_duplicates
from search.keeper.policy import parse_keep
from search.render import size_text
from store import Store
from tests.dupes_home import build, tree_digest

LARGEST = parse_keep("largest")


def test_dry_run_changes_nothing_then_move_and_undo(tmp_path: Path) -> None:
    store, ids, photos = build(tmp_path)
    groups = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST)).groups
    before = tree_digest(tmp_path / "photos")
    dest = tmp_path / "dupes"
    plan = plan_actions(groups, "move", dest)
    assert sorted(Path(a.source).name for a in plan.actions) == [
        "a.jpg",
        "b1.jpg",
        "b2.jpg",
        "d.jpg",
    ]
    assert tree_digest(tmp_path / "photos") == before and not dest.exists()  # planning is inert

    journal = tmp_path / "home" / "journals" / "move.jsonl"
    assert apply_plan(plan, store, journal).failures == []
    assert (dest / "copies" / "a.jpg").read_bytes() == b"same bytes"  # relative paths kept
    assert (dest / "b1.jpg").is_file() and not (photos / "b1.jpg").exists()
    for name in ("a.jpg", "b.jpg", "c.jpg", "e.jpg", "f.jpg"):  # keepers and others untouched
        assert (photos / name).is_file()
    assert store.catalog.count() == store.index.count == len(ids) - 4

    report = undo(journal)
    assert len(report.restored) == 4 and not report.not_restored
    assert tree_digest(tmp_path / "photos") == before


def test_move_never_overwrites(tmp_path: Path) -> None:
    store, _, _ = build(tmp_path)
    groups = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST)).groups
    dest = tmp_path / "dupes"
    dest.mkdir()
    (dest / "b1.jpg").write_bytes(b"someone else's file")
    plan = plan_actions(groups, "move", dest)
    assert [Path(p).name for p, why in plan.skipped if "never overwritten" in why] == ["b1.jpg"]
    apply_plan(plan, store, tmp_path / "j.jsonl")
    assert (dest / "b1.jpg").read_bytes() == b"someone else's file"


def test_symlink_and_delete(tmp_path: Path) -> None:
    store, ids, photos = build(tmp_path)
    groups = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST)).groups
    links = tmp_path / "review"
    journal = tmp_path / "links.jsonl"
    apply_plan(plan_actions(groups, "symlink", links), store, journal)
    assert os.readlink(links / "b1.jpg") == str(photos / "b1.jpg")
    assert (photos / "b1.jpg").is_file() and store.catalog.count() == len(
        ids
    )  # nothing left the index
    undo(journal)
    assert not (links / "b1.jpg").exists()

    changed = photos / "d.jpg"
    changed.write_bytes(b"edited after indexing")  # must be left alone
    plan = plan_actions(groups, "delete", None)
    assert [Path(p).name for p, why in plan.skipped] == ["d.jpg"]
    journal = tmp_path / "delete.jsonl"
    apply_plan(plan, store, journal)
    assert not (photos / "b1.jpg").exists() and changed.exists()
    report = undo(journal)
    assert {why for _, why in report.not_restored} == {"it was deleted"}


def test_a_plan_file_with_an_edited_keeper_is_applied_through_the_same_planner(
    tmp_path: Path,
) -> None:
    store, ids, photos = build(tmp_path)
    store.close()
    home = str(tmp_path / "home")
    runner = CliRunner()
    plan = json.loads(runner.invoke(cli, ["--home", home, "dupes", "--threshold", "0.9",
                                          "--keep", "largest", "--json"]).stdout)  # fmt: skip
    near = next(g for g in plan["groups"] if g["keep"]["id"] == ids["b.jpg"])
    b1 = next(m for m in near["members"] if m["id"] == ids["b1.jpg"])
    near["members"] = [m for m in near["members"] if m is not b1] + [near["keep"]]
    near["keep"] = b1  # a person chose another copy to keep
    edited = tmp_path / "plan.json"
    edited.write_text(json.dumps(plan))
    dry = runner.invoke(cli, ["--home", home, "apply", str(edited), "--move-to",
                              str(tmp_path / "moved")])  # fmt: skip
    assert dry.exit_code == 0 and "would move" in dry.stdout
    moved = sum(m["bytes"] for g in plan["groups"] for m in g["members"])
    assert f"{size_text(moved)} would be moved out of the collection" in dry.stderr
    assert (photos / "b.jpg").is_file()
    done = runner.invoke(cli, ["--home", home, "apply", str(edited), "--move-to",
                               str(tmp_path / "moved"), "--yes"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert (photos / "b1.jpg").is_file() and not (photos / "b.jpg").exists()  # b1 was kept
    assert (tmp_path / "moved" / "b.jpg").is_file()
    twice = dict(plan)
    twice["groups"] = [near, near]
    edited.write_text(json.dumps(twice))
    refused = runner.invoke(cli, ["--home", home, "apply", str(edited), "--delete", "--yes"])
    assert refused.exit_code == 1 and "more than one group" in refused.stderr


def test_trash_is_the_removal_and_undo_brings_files_and_rows_back(tmp_path: Path) -> None:
    store, _ids, photos = build(tmp_path)
    before = tree_digest(photos)
    ids_before = {p: r.id for p, r in store.catalog.file_states().items()}
    store.close()
    home = str(tmp_path / "home")
    runner = CliRunner()
    trashed = runner.invoke(cli, ["--home", home, "dupes", "--threshold", "0.9", "--keep",
                                  "largest", "--trash", "--yes"])  # fmt: skip
    assert trashed.exit_code == 0, trashed.output
    assert "trashed" in trashed.stdout and not (photos / "b1.jpg").exists()
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash"
    assert list((trash / "files").glob("b1*.jpg")) and list((trash / "info").glob("b1*"))
    with Store.open(tmp_path / "home") as reopened:
        assert str(photos / "b1.jpg") not in reopened.catalog.file_states()
    journal = trashed.stderr.split("journal: ")[1].split(" ")[0]
    undone = runner.invoke(cli, ["undo", journal])
    assert undone.exit_code == 0, undone.output
    assert tree_digest(photos) == before
    with Store.open(tmp_path / "home") as reopened:  # the same ids, no re-embedding
        assert {p: r.id for p, r in reopened.catalog.file_states().items()} == ids_before
        assert reopened.catalog.count() == reopened.index.count


def test_undo_tells_the_truth_about_links_and_folders_it_made(tmp_path: Path) -> None:
    store, _ids, _photos = build(tmp_path)
    store.close()
    home = str(tmp_path / "home")
    runner = CliRunner()
    links = tmp_path / "review" / "deep"
    made = runner.invoke(cli, ["--home", home, "dupes", "--threshold", "0.9", "--keep",
                               "largest", "--symlink-to", str(links), "--yes"])  # fmt: skip
    journal = made.stderr.split("journal: ")[1].split(" ")[0]
    undone = runner.invoke(cli, ["undo", journal])
    assert undone.exit_code == 0 and "no file had moved" in undone.stdout
    assert not (tmp_path / "review").exists()  # the folders it created went too
    again = runner.invoke(cli, ["undo", journal])
    assert again.exit_code == 0 and "nothing to restore" in again.stdout
