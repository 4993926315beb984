"""Duplicate finding, grouping, keepers, ignores and actions, on exactly known data."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.errors import InvalidOption
from search.actions import apply_actions, plan_actions, undo
from search.cli import cli
from search.dupes import DupeOptions, find_duplicates, near_groups
from search.keep import parse_keep
from store import Embedded, ImageFile, ImageRecord, Store

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
    store = Store.open_for_model(tmp_path / "home", "test-model", DIM)
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
    ids = {name: store.record_by_path(str(photos / name)).id for name in vectors}
    return store, ids, photos


def as_names(groups: list, ids: dict[str, int]) -> list[tuple[str, str, list[str]]]:
    name = {v: k for k, v in ids.items()}
    return [(g.kind, name[g.keep.id], sorted(name[m.record.id] for m in g.members)) for g in groups]


def test_known_groups_and_the_chaining_guard(tmp_path: Path) -> None:
    store, ids, _ = build(tmp_path)
    vectors = {n: store.vector(i) for n, i in ids.items()}
    assert (
        float(vectors["c.jpg"] @ vectors["e.jpg"])
        < 0.9
        < float(vectors["d.jpg"] @ vectors["e.jpg"])
    )
    threshold, groups = find_duplicates(store, DupeOptions(threshold=0.9))
    assert threshold == 0.9
    assert as_names(groups, ids) == [
        ("exact", "a.jpg", ["copies/a.jpg"]),
        ("near", "b.jpg", ["b1.jpg", "b2.jpg"]),
        ("near", "c.jpg", ["d.jpg"]),
    ]
    near_b = groups[1]
    assert [m.score for m in near_b.members] == pytest.approx([0.97, 0.93], abs=1e-5)


def test_exact_only_and_a_lower_threshold(tmp_path: Path) -> None:
    store, ids, _ = build(tmp_path)
    _, exact = find_duplicates(store, DupeOptions(threshold=0.9, exact_only=True))
    assert as_names(exact, ids) == [("exact", "a.jpg", ["copies/a.jpg"])]
    _, loose = find_duplicates(store, DupeOptions(threshold=0.8))
    assert ("near", "c.jpg", ["d.jpg", "e.jpg"]) in as_names(loose, ids)  # now e matches c


def test_chains_split_around_keepers() -> None:
    records = {i: ImageRecord(i, f"/p/{i}.jpg", 100 - i, 0, f"h{i}", 10, 10) for i in range(1, 6)}
    # 1~2, 2~3, 3~4, 4~5: a chain; "largest" prefers lower ids (bigger files).
    pairs = [(1, 2, 0.95), (2, 3, 0.95), (3, 4, 0.95), (4, 5, 0.95)]
    groups = near_groups(pairs, records, parse_keep("largest"))
    assert [(g.keep.id, [m.record.id for m in g.members]) for g in groups] == [(1, [2]), (3, [4])]


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
    with pytest.raises(InvalidOption, match="--keep"):
        parse_keep("smallest")


def test_ignored_pairs_are_left_out(tmp_path: Path) -> None:
    store, ids, _ = build(tmp_path)
    records = store.records([ids["b.jpg"], ids["b1.jpg"]])
    assert store.ignore_pairs([r.content_hash for r in records.values()]) == 1
    assert store.ignore_pairs([r.content_hash for r in records.values()]) == 0  # remembered once
    _, groups = find_duplicates(store, DupeOptions(threshold=0.9))
    assert ("near", "b.jpg", ["b2.jpg"]) in as_names(groups, ids)
    assert "b1.jpg" not in str(as_names(groups, ids))


def test_dry_run_changes_nothing_then_move_and_undo(tmp_path: Path) -> None:
    store, ids, photos = build(tmp_path)
    _, groups = find_duplicates(store, DupeOptions(threshold=0.9))
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
    assert apply_actions(plan, store, journal) == []
    assert (dest / "copies" / "a.jpg").read_bytes() == b"same bytes"  # relative paths kept
    assert (dest / "b1.jpg").is_file() and not (photos / "b1.jpg").exists()
    for name in ("a.jpg", "b.jpg", "c.jpg", "e.jpg", "f.jpg"):  # keepers and others untouched
        assert (photos / name).is_file()
    assert store.count() == store.faiss_count() == len(ids) - 4

    report = undo(journal)
    assert len(report.restored) == 4 and not report.not_restored
    assert tree_digest(tmp_path / "photos") == before


def test_move_never_overwrites(tmp_path: Path) -> None:
    store, _, _ = build(tmp_path)
    _, groups = find_duplicates(store, DupeOptions(threshold=0.9))
    dest = tmp_path / "dupes"
    dest.mkdir()
    (dest / "b1.jpg").write_bytes(b"someone else's file")
    plan = plan_actions(groups, "move", dest)
    assert [Path(p).name for p, why in plan.skipped if "never overwritten" in why] == ["b1.jpg"]
    apply_actions(plan, store, tmp_path / "j.jsonl")
    assert (dest / "b1.jpg").read_bytes() == b"someone else's file"


def test_symlink_and_delete(tmp_path: Path) -> None:
    store, ids, photos = build(tmp_path)
    _, groups = find_duplicates(store, DupeOptions(threshold=0.9))
    links = tmp_path / "review"
    journal = tmp_path / "links.jsonl"
    apply_actions(plan_actions(groups, "symlink", links), store, journal)
    assert os.readlink(links / "b1.jpg") == str(photos / "b1.jpg")
    assert (photos / "b1.jpg").is_file() and store.count() == len(ids)  # nothing left the index
    undo(journal)
    assert not (links / "b1.jpg").exists()

    changed = photos / "d.jpg"
    changed.write_bytes(b"edited after indexing")  # must be left alone
    plan = plan_actions(groups, "delete", None)
    assert [Path(p).name for p, why in plan.skipped] == ["d.jpg"]
    journal = tmp_path / "delete.jsonl"
    apply_actions(plan, store, journal)
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
                                 "--csv", str(csv_file), "--html", str(html_file)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["threshold"] == 0.9 and data["keep_policy"] == "largest"
    assert [
        (g["kind"], g["keep"]["id"], [m["id"] for m in g["members"]]) for g in data["groups"]
    ] == [
        ("exact", ids["a.jpg"], [ids["copies/a.jpg"]]),
        ("near", ids["b.jpg"], [ids["b1.jpg"], ids["b2.jpg"]]),
        ("near", ids["c.jpg"], [ids["d.jpg"]]),
    ]
    rows = csv_file.read_text().splitlines()
    assert rows[0].startswith("group,kind,role,id,path,score") and len(rows) == 1 + 7
    assert all(row.endswith(",largest") for row in rows[1:])
    sheet = html_file.read_text()
    assert sheet.count("<figure") == 7 and sheet.count('class="keep"') == 3
    assert "Keeper policy: <b>largest</b>" in sheet

    before = tree_digest(photos)
    dry = runner.invoke(cli, ["--home", home, "dupes", "--threshold", "0.9", "--delete"])
    assert "would delete" in dry.stdout and "add --yes" in dry.stderr
    assert tree_digest(photos) == before

    moved = runner.invoke(cli, ["--home", home, "dupes", "--threshold", "0.9",
                                "--move-to", str(tmp_path / "dupes"), "--yes"])  # fmt: skip
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
