"""Reference folders (`--keep-in`) and copies across sets (`--across`), from the CLI, a plan
and the review server: a reference file is the keeper and never acted on; across reports only
groups that span two sets and acts only on the sets after the first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from indexer.options import ModelOptions
from search.cli import cli
from search.server.app import create_app
from search.server.state import ServerState
from search.sets import REFERENCE, Sets
from tests.dupes_home import build, tree_digest

PLAIN = ["--threshold", "0.9", "--keep", "largest"]


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Path]:
    store, _, photos = build(tmp_path)
    store.flush()
    store.close()
    return tmp_path / "home", photos


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def groups_of(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    groups: list[dict[str, Any]] = json.loads(result.stdout)["groups"]
    return groups


def names(group: dict[str, Any], photos: Path) -> tuple[str, list[str]]:
    keep = str(Path(group["keep"]["path"]).relative_to(photos))
    return keep, sorted(str(Path(m["path"]).relative_to(photos)) for m in group["members"])


def test_a_reference_file_is_kept_and_never_acted_on(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    home, photos = made
    reference = str(photos / "copies")
    groups = groups_of(run(home, "dupes", *PLAIN, "--keep-in", reference, "--json"))
    exact = next(g for g in groups if g["kind"] == "exact")
    assert names(exact, photos) == ("copies/a.jpg", ["a.jpg"])
    assert exact["reason"] == REFERENCE
    # Without it, the policy keeps the other copy (its path sorts first).
    plain = next(g for g in groups_of(run(home, "dupes", *PLAIN, "--json")) if g["kind"] == "exact")
    assert names(plain, photos)[0] == "a.jpg"

    dest = tmp_path / "moved"
    done = run(home, "dupes", *PLAIN, "--keep-in", reference, "--move-to", str(dest), "--yes")
    assert done.exit_code == 0, done.output
    assert (photos / "copies" / "a.jpg").is_file() and (dest / "a.jpg").is_file()


def test_a_group_of_reference_files_acts_on_none_of_them(made: tuple[Path, Path]) -> None:
    home, photos = made
    before = tree_digest(photos)
    done = run(home, "dupes", *PLAIN, "--keep-in", str(photos), "--trash", "--yes")
    assert done.exit_code == 0, done.output
    assert tree_digest(photos) == before
    assert done.stdout.count(REFERENCE) >= 3  # a.jpg, b1.jpg, b2.jpg, ... left alone, said why


def test_across_reports_only_groups_spanning_two_sets_and_acts_on_the_later(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    home, photos = made
    train, test = str(photos / "copies"), str(photos)  # copies/ is the reference set
    groups = groups_of(run(home, "dupes", *PLAIN, "--across", train, "--across", test, "--json"))
    assert [names(g, photos) for g in groups] == [("copies/a.jpg", ["a.jpg"])]
    assert groups[0]["keep"]["set"] == train and groups[0]["members"][0]["set"] == test
    dest = tmp_path / "leaked"
    done = run(home, "dupes", *PLAIN, "--across", train, "--across", test, "--move-to", str(dest),
               "--yes")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert (photos / "copies" / "a.jpg").is_file() and (dest / "a.jpg").is_file()
    assert (photos / "b1.jpg").is_file()  # a group inside one set is not touched

    once = run(home, "dupes", "--across", train)
    assert once.exit_code == 2 and "at least twice" in once.output


def test_apply_leaves_reference_files_alone_whatever_the_plan_keeps(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    home, photos = made
    plan = json.loads(run(home, "dupes", *PLAIN, "--json").stdout)
    exact = next(g for g in plan["groups"] if g["kind"] == "exact")
    assert exact["keep"]["path"].endswith("/photos/a.jpg")  # the plan keeps the other copy
    plan["groups"] = [exact]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    before = tree_digest(photos)
    done = run(home, "apply", str(tmp_path / "plan.json"), "--keep-in", str(photos / "copies"),
               "--trash", "--yes")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert tree_digest(photos) == before and REFERENCE in done.stdout


def test_the_review_server_keeps_reference_folders(made: tuple[Path, Path]) -> None:
    home, photos = made
    state = ServerState(home, ModelOptions(), hosts=("testserver",))
    state.sets = Sets.of([str(photos / "copies")])
    client = TestClient(create_app(state))
    groups = client.get("/api/dupes", params={"threshold": 0.9}).json()["groups"]
    exact = next(g for g in groups if g["kind"] == "exact")
    assert exact["keep"]["path"] == str(photos / "copies" / "a.jpg")
    # Even a keeper picked in the page cannot send a reference file away.
    members = [exact["keep"]["id"], exact["members"][0]["id"]]
    answer = client.post("/api/dupes/act", json={"keep": members[1], "members": members,
                                                 "action": "trash"}).json()  # fmt: skip
    assert answer["done"] == [] and answer["left_alone"][0][1] == REFERENCE
    assert (photos / "copies" / "a.jpg").is_file()
