"""Duplicate finding, grouping, keepers, ignores and actions, on exactly known data."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.errors import InvalidOption
from search.actions.plan import apply_plan, plan_actions, undo
from search.cli import cli
from search.copies.dupes import DupeOptions, find_duplicates
from search.copies.groups import build_groups
from search.keeper.policy import parse_keep
from search.records import Edge
from search.render import size_text
from store import Embedded, ImageFile, ImageRecord, NewIndex, Store

LARGEST = parse_keep("largest")

DIM = 8


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def at_cosine(base: np.ndarray, other: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector with exactly `cosine` to unit `base`, in the plane of base and other."""
    orthogonal = unit(other - (other @ base) * base)
    return unit(cosine * base + np.sqrt(1 - cosine**2) * orthogonal)


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file() and not p.is_symlink()
        else f"link:{os.readlink(p)}"
        if p.is_symlink()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


def build(tmp_path: Path) -> tuple[Store, dict[str, int], Path]:
    """Files on disk + a store whose vectors make known groups (threshold 0.9):

    exact: a.jpg == copies/a.jpg (same bytes)
    near:  b (keeper, biggest) with b1 (0.97) and b2 (0.93)
    chain: c (keeper) ~ d (0.95), d ~ e (0.95), c ~ e (0.81): e must not join c's group
    alone: f
    """
    photos = tmp_path / "photos"
    (photos / "copies").mkdir(parents=True)
    rng = np.random.RandomState(1338)
    base = {name: unit(rng.randn(DIM)) for name in "abcf"}
    # Make the bases far apart (Gram-Schmidt) so that only the intended pairs match.
    names = list(base)
    for i, name in enumerate(names):
        v = base[name]
        for other in names[:i]:
            v = v - (v @ base[other]) * base[other]
        base[name] = unit(v)
    noise = unit(rng.randn(DIM))
    d = at_cosine(base["c"], noise, 0.95)
    vectors = {
        "a.jpg": base["a"], "copies/a.jpg": base["a"],
        "b.jpg": base["b"], "b1.jpg": at_cosine(base["b"], noise, 0.97),
        "b2.jpg": at_cosine(base["b"], unit(rng.randn(DIM)), 0.93),
        "c.jpg": base["c"], "d.jpg": d, "e.jpg": at_cosine(d, -base["c"] + noise, 0.95),
        "f.jpg": base["f"],
    }  # fmt: skip
    pixels = {"b.jpg": (400, 300), "c.jpg": (400, 300)}
    store = Store.writer(tmp_path / "home", new=NewIndex("test-model", DIM))
    batch = []
    for name, vector in vectors.items():
        path = photos / name
        content = b"same bytes" if name.endswith("a.jpg") else name.encode() * 10
        path.write_bytes(content)
        st = path.stat()
        file = ImageFile(str(path), st.st_size, st.st_mtime_ns, hashlib.sha256(content).hexdigest())
        width, height = pixels.get(name, (200, 100))
        batch.append(Embedded(file, width, height, vector))
    store.commit_batch(batch, [])
    ids = {name: store.catalog.record_by_path(str(photos / name)).id for name in vectors}
    return store, ids, photos


def as_names(groups: list, ids: dict[str, int]) -> list[tuple[str, str, list[str]]]:
    name = {v: k for k, v in ids.items()}
    return [(g.kind, name[g.keep.id], sorted(name[m.record.id] for m in g.members)) for g in groups]


def test_known_groups_and_the_chaining_guard(tmp_path: Path) -> None:
    store, ids, _ = build(tmp_path)
    vectors = {n: store.catalog.vector(i) for n, i in ids.items()}
    assert (
        float(vectors["c.jpg"] @ vectors["e.jpg"])
        < 0.9
        < float(vectors["d.jpg"] @ vectors["e.jpg"])
    )
    found = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST))
    groups = found.groups
    assert found.threshold == 0.9 and found.mode == "cosine"
    assert as_names(groups, ids) == [
        ("exact", "a.jpg", ["copies/a.jpg"]),
        ("near", "b.jpg", ["b1.jpg", "b2.jpg"]),
        ("near", "c.jpg", ["d.jpg"]),
    ]
    near_b = groups[1]
    assert [m.score for m in near_b.members] == pytest.approx([0.97, 0.93], abs=1e-5)


def test_exact_only_and_a_lower_threshold(tmp_path: Path) -> None:
    store, ids, _ = build(tmp_path)
    exact = find_duplicates(store, DupeOptions(threshold=0.9, exact_only=True, keep=LARGEST))
    assert as_names(exact.groups, ids) == [("exact", "a.jpg", ["copies/a.jpg"])]
    loose = find_duplicates(store, DupeOptions(threshold=0.8, keep=LARGEST))
    assert ("near", "c.jpg", ["d.jpg", "e.jpg"]) in as_names(loose.groups, ids)  # now e matches c


def test_chains_split_around_keepers() -> None:
    records = [ImageRecord(i, f"/p/{i}.jpg", 100 - i, 0, f"h{i}", 10, 10) for i in range(1, 6)]
    # 1~2, 2~3, 3~4, 4~5: a chain of unverified pairs; "largest" prefers lower ids (bigger).
    edges = [Edge(a, a + 1, 0.95, 0.95, 0, None) for a in range(1, 5)]
    groups = build_groups(records, edges, set(), LARGEST.chooser())
    assert [(g.keep.id, [m.record.id for m in g.members]) for g in groups] == [(1, [2]), (3, [4])]


def test_verified_pairs_carry_membership_through_a_member() -> None:
    from search.records import Verification

    records = [ImageRecord(i, f"/p/{i}.jpg", 100 - i, 0, f"h{i}", 10, 10) for i in range(1, 4)]
    seen = Verification(40, 0.5, 0.9, 1.0, False)
    # 1 ~ 2 by score, 2 ~ 3 verified: 3 shares content with 2, which copies 1.
    edges = [Edge(1, 2, 0.9, 0.9, 0, None), Edge(2, 3, 0.3, 0.6, 0, seen)]
    (group,) = build_groups(records, edges, set(), LARGEST.chooser())
    assert group.keep.id == 1
    assert [(m.record.id, m.how) for m in group.members] == [(2, "score"), (3, "via #2")]


def test_groups_are_disjoint_when_exact_and_near_copies_overlap(tmp_path: Path) -> None:
    """A, a byte copy of A, and a larger near copy B of A: one group, B kept, both copies of A
    members; no file is both kept and acted on (issue: the keeper of an exact group was
    deleted as a member of a near group)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.RandomState(3)
    a = unit(rng.randn(DIM))
    b = at_cosine(a, unit(rng.randn(DIM)), 0.97)
    store = Store.writer(tmp_path / "home", new=NewIndex("test-model", DIM))
    batch = []
    for name, vector, content, size in (
        ("a.jpg", a, b"A" * 50, (100, 100)),
        ("a-copy.jpg", a, b"A" * 50, (100, 100)),
        ("b.jpg", b, b"B" * 80, (400, 400)),
    ):
        (photos / name).write_bytes(content)
        st = (photos / name).stat()
        file = ImageFile(
            str(photos / name), st.st_size, st.st_mtime_ns, hashlib.sha256(content).hexdigest()
        )
        batch.append(Embedded(file, *size, vector))
    store.commit_batch(batch, [])
    groups = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST)).groups
    assert len(groups) == 1
    (group,) = groups
    assert Path(group.keep.path).name == "b.jpg"
    assert sorted(Path(m.record.path).name for m in group.members) == ["a-copy.jpg", "a.jpg"]
    plan = plan_actions(groups, "delete", None)
    kept = {g.keep.path for g in groups}
    assert not kept & {a.source for a in plan.actions}
    apply_plan(plan, store, tmp_path / "j.jsonl")
    assert (photos / "b.jpg").is_file()
    assert not (photos / "a.jpg").exists() and not (photos / "a-copy.jpg").exists()


def test_keep_policies(tmp_path: Path) -> None:
    old = ImageRecord(1, "/a/old.jpg", 500, 1, "h", 100, 100)
    big = ImageRecord(2, "/b/big.jpg", 400, 5, "h", 200, 200)
    new = ImageRecord(3, "/c/new.jpg", 900, 9, "h", 100, 100)
    records = [old, big, new]
    assert parse_keep("largest").choose(records) is big
    assert parse_keep("oldest").choose(records) is old
    assert parse_keep("newest").choose(records) is new
    assert parse_keep("path-priority:/c,/a").choose(records) is new
    assert parse_keep("path-priority:/x").choose(records) is big  # no folder matches: largest
    with pytest.raises(InvalidOption, match="is not one of") as raised:
        parse_keep("smallest")
    assert raised.value.field == "keep"


def test_ignored_pairs_are_left_out(tmp_path: Path) -> None:
    store, ids, _ = build(tmp_path)
    records = store.catalog.records([ids["b.jpg"], ids["b1.jpg"]])
    assert store.catalog.ignore_pairs([r.content_hash for r in records.values()]) == 1
    assert (
        store.catalog.ignore_pairs([r.content_hash for r in records.values()]) == 0
    )  # remembered once
    groups = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST)).groups
    assert ("near", "b.jpg", ["b2.jpg"]) in as_names(groups, ids)
    assert "b1.jpg" not in str(as_names(groups, ids))


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


def test_cli_json_csv_html_and_actions(tmp_path: Path) -> None:
    store, ids, photos = build(tmp_path)
    store.close()
    home = str(tmp_path / "home")
    runner = CliRunner()
    csv_file, html_file = tmp_path / "d.csv", tmp_path / "d.html"
    result = runner.invoke(cli, ["--home", home, "dupes", "--threshold", "0.9", "--json",
                                 "--keep", "largest",
                                 "--csv", str(csv_file), "--html", str(html_file)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["threshold"] == 0.9 and data["keep_policy"] == "largest"
    assert data["mode"] == "cosine"
    member = data["groups"][1]["members"][0]
    assert {"width", "height", "bytes", "format", "score"} <= member.keys()
    assert [
        (g["kind"], g["keep"]["id"], [m["id"] for m in g["members"]]) for g in data["groups"]
    ] == [
        ("exact", ids["a.jpg"], [ids["copies/a.jpg"]]),
        ("near", ids["b.jpg"], [ids["b1.jpg"], ids["b2.jpg"]]),
        ("near", ids["c.jpg"], [ids["d.jpg"]]),
    ]
    rows = list(csv.DictReader(csv_file.open()))
    assert len(rows) == 7 and {r["keep_policy"] for r in rows} == {"largest"}
    assert all(r["reason"].startswith("largest") for r in rows if r["role"] == "keep")
    sheet = html_file.read_text()
    assert sheet.count("<figure") == 7 and sheet.count('class="keep"') == 3
    assert "Keeper policy: <b>largest</b>" in sheet

    before = tree_digest(photos)
    dry = runner.invoke(
        cli, ["--home", home, "dupes", "--threshold", "0.9", "--keep", "largest", "--delete"]
    )
    assert "would delete" in dry.stdout and "add --yes" in dry.stderr
    assert tree_digest(photos) == before

    moved = runner.invoke(
        cli,
        [
            "--home",
            home,
            "dupes",
            "--threshold",
            "0.9",
            "--keep",
            "largest",
            "--move-to",
            str(tmp_path / "dupes"),
            "--yes",
        ],
    )
    assert moved.exit_code == 0, moved.output
    journal = moved.stderr.split("journal: ")[1].split(" ")[0]
    restored = runner.invoke(cli, ["undo", journal])
    assert restored.exit_code == 0 and tree_digest(photos) == before

    ignored = runner.invoke(cli, ["--home", home, "dupes", "--ignore", str(ids["c.jpg"]),
                                  str(ids["e.jpg"])])  # fmt: skip
    assert ignored.stdout.strip() == "1 pair(s) remembered as not duplicates"
    assert runner.invoke(cli, ["--home", home, "dupes", "1", "2"]).exit_code == 2
    both = ["--home", home, "dupes", "--delete", "--move-to", "x"]
    assert runner.invoke(cli, both).exit_code == 2


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


def test_asking_again_with_other_outputs_uses_the_cached_pairs(tmp_path: Path) -> None:
    store, _, _ = build(tmp_path)
    first = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST))
    again = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST))
    assert not first.cached and again.cached
    assert [g.keep.id for g in first.groups] == [g.keep.id for g in again.groups]
    other = find_duplicates(store, DupeOptions(threshold=0.8, keep=LARGEST))
    assert not other.cached  # other options: computed again
