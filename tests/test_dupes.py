"""Duplicate finding, grouping, keepers and ignores, on exactly known data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.errors import InvalidOption
from indexer.scan import content_hash
from search.actions.plan import apply_plan, plan_actions
from search.cli import cli
from search.copies.dupes import DupeOptions, find_duplicates
from search.copies.groups import build_groups
from search.keeper.policy import parse_keep
from search.records import Edge
from store import Embedded, ImageFile, ImageRecord, NewIndex, Store
from tests.dupes_home import DIM, as_names, at_cosine, build, tree_digest, unit

LARGEST = parse_keep("largest")


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


def test_a_chain_joins_only_what_verifies_against_the_keeper_itself() -> None:
    from search.records import Verification

    records = [ImageRecord(i, f"/p/{i}.jpg", 100 - i, 0, f"h{i}", 10, 10) for i in range(1, 4)]
    part = Verification(40, 0.1, 0.9, 1.0, False)  # 2's keypoints cover a tenth of it: a part
    # 1 ~ 2 by score, 2 ~ 3 verified on a part: 3 joins 1's group only if 1 ~ 3 verifies too.
    edges = [Edge(1, 2, 0.9, 0.9, 0, None), Edge(2, 3, 0.3, 0.6, 0, part)]
    (group,) = build_groups(records, edges, set(), LARGEST.chooser(), lambda a, b: part)
    assert group.keep.id == 1
    assert [(m.record.id, m.how, m.inliers) for m in group.members] == [
        (2, "score", None),
        (3, "via #2", 40),
    ]
    assert any({e.a, e.b} == {1, 3} for e in group.edges)  # the direct check is kept
    refused = build_groups(records, edges, set(), LARGEST.chooser(), lambda a, b: None)
    assert [(g.keep.id, [m.record.id for m in g.members]) for g in refused] == [(1, [2])]
    ignored = {("h1", "h3")}  # "not duplicates": never joined, even when it verifies
    (alone,) = build_groups(records, edges, ignored, LARGEST.chooser(), lambda a, b: part)
    assert [m.record.id for m in alone.members] == [2]
    # Two steps that are each one whole picture (most of both frames) carry on unchecked.
    whole = Verification(40, 0.7, 0.8, 1.0, False)
    chain = [Edge(1, 2, 0.9, 0.9, 0, None), Edge(2, 3, 0.3, 0.6, 0, whole)]
    (group,) = build_groups(records, chain, set(), LARGEST.chooser(), lambda a, b: None)
    assert [(m.record.id, m.how) for m in group.members] == [(2, "score"), (3, "via #2")]


def test_every_member_says_how_it_is_linked_to_the_keeper() -> None:
    """The same words in every output (render.link_text): the same bytes, a copy score alone,
    verified on whole frames, verified in a region (a crop, a pasted photo), or reached
    through another member and verified against the keeper."""
    from search.records import Verification
    from search.render import link_text

    records = [ImageRecord(i, f"/p/{i}.jpg", 100 - i, 0, f"h{i}", 10, 10) for i in range(1, 5)]
    records.append(ImageRecord(5, "/p/5.jpg", 50, 0, "h1", 10, 10))  # 1's bytes
    whole = Verification(40, 0.7, 0.8, 1.0, False)
    region = Verification(12, 0.2, 0.9, 2.0, False, in_region=True)
    edges = [Edge(1, 2, 0.9, 0.9, 0, None), Edge(1, 3, 0.5, 0.6, 0, whole),
             Edge(1, 4, 0.3, 0.5, 0, region)]  # fmt: skip
    (group,) = build_groups(records, edges, set(), LARGEST.chooser())
    assert group.keep.id == 1
    assert {m.record.id: link_text(m, "copies") for m in group.members} == {
        5: "same bytes",
        2: "copy score 0.900",
        3: "copy score 0.500, verified: 40 keypoints",
        4: "copy score 0.300, verified in a region: 12 keypoints",
    }


def test_two_pictures_on_one_background_never_share_a_group() -> None:
    """A (1) and B (4) are different photos; A' (2) and B' (3) are each pasted on the same
    background, so A' and B' verify against each other through it. The group of A holds A',
    the group of B' holds B: no group holds both originals."""
    from search.records import Verification

    records = [ImageRecord(i, f"/p/{i}.jpg", 100 - i, 0, f"h{i}", 10, 10) for i in range(1, 5)]
    seen = Verification(40, 0.1, 0.9, 1.0, False)
    edges = [Edge(1, 2, 0.5, 0.6, 0, seen), Edge(2, 3, 0.6, 0.7, 0, seen),
             Edge(3, 4, 0.5, 0.6, 0, seen)]  # fmt: skip
    same = {frozenset((1, 2)), frozenset((2, 3)), frozenset((3, 4))}

    def confirm(a: ImageRecord, b: ImageRecord) -> Verification | None:
        return seen if frozenset((a.id, b.id)) in same else Verification(3, 0, 0, 1, False)

    groups = build_groups(records, edges, set(), LARGEST.chooser(), confirm)
    assert [(g.keep.id, [m.record.id for m in g.members]) for g in groups] == [(1, [2]), (3, [4])]


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
        file = ImageFile(str(photos / name), st.st_size, st.st_mtime_ns, content_hash(content))
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


def test_asking_again_with_other_outputs_uses_the_cached_pairs(tmp_path: Path) -> None:
    store, _, _ = build(tmp_path)
    first = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST))
    again = find_duplicates(store, DupeOptions(threshold=0.9, keep=LARGEST))
    assert not first.cached and again.cached
    assert [g.keep.id for g in first.groups] == [g.keep.id for g in again.groups]
    other = find_duplicates(store, DupeOptions(threshold=0.8, keep=LARGEST))
    assert not other.cached  # other options: computed again


def test_cached_pairs_keep_their_checks_and_tilts() -> None:
    """A re-run reads the pairs from the catalog's cache: every edge comes back as it was
    found, its check and its tilt with it (the keeper decides on them again)."""
    from search.copies.decide import Decided
    from search.copies.dupes import _from_cache, _to_cache
    from search.records import Verification

    check = Verification(40, 0.7, 0.8, 1.0, False, seam_a=0.2, turn=-4.9)
    edges = [Edge(1, 2, 0.6, 0.9, 0, check, check.tilt), Edge(2, 3, 0.8, 0.95, 90, None, 0.3)]
    found = _from_cache(_to_cache("copies", 0.5, True, Decided(edges, 2, [], 0.0, 0.0, 0.99)))
    assert found is not None
    assert found[3].edges == edges and found[3].candidate_recall == 0.99
    assert edges[0].tilt is not None and abs(edges[0].tilt + 4.9) < 1e-9
    assert Verification(40, 0.7, 0.8, 1.0, False, turn=-93.0).tilt == pytest.approx(-3.0)
