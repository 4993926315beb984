"""The review's API beyond one group: pages, filters and sorts checked against the full list,
bulk actions on exactly the filtered groups, decisions taken back (page and CLI), and groups
found again when another process changes a decision."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from indexer.options import ModelOptions
from search.cli import cli
from search.server.app import create_app
from search.server.state import ServerState
from tests.dupes_home import build

# Plain mode (a cosine threshold): the test vectors make exactly known groups.
PLAIN = {"threshold": 0.9, "keep": "largest"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    store, _, _ = build(tmp_path)
    store.flush()
    store.close()
    return tmp_path / "home"


def client_for(home: Path) -> TestClient:
    return TestClient(create_app(ServerState(home, ModelOptions(), hosts=("testserver",))))


def names(group: dict[str, object]) -> list[str]:
    files = [group["keep"], *group["members"]]  # type: ignore[list-item]
    return sorted(Path(f["path"]).name for f in files)  # type: ignore[index]


def test_pages_filters_and_sorts_match_the_whole_list(home: Path) -> None:
    client = client_for(home)
    whole = client.get("/api/dupes", params=PLAIN).json()
    assert whole["total"] == len(whole["groups"]) == 3
    ids = [g["id"] for g in whole["groups"]]
    pages = [
        client.get("/api/dupes", params={**PLAIN, "offset": o, "limit": 1}).json() for o in range(3)
    ]
    assert [p["groups"][0]["id"] for p in pages] == ids and all(p["total"] == 3 for p in pages)

    exact = client.get("/api/dupes", params={**PLAIN, "kind": "exact"}).json()
    assert [names(g) for g in exact["groups"]] == [["a.jpg", "a.jpg"]]
    under = client.get(
        "/api/dupes", params={**PLAIN, "folder": str(home.parent / "photos" / "copies")}
    )
    assert [names(g) for g in under.json()["groups"]] == [["a.jpg", "a.jpg"]]

    space = client.get("/api/dupes", params={**PLAIN, "sort": "space"}).json()["groups"]
    freed = [sum(m["bytes"] for m in g["members"]) for g in space]
    assert freed == sorted(freed, reverse=True)
    score = client.get("/api/dupes", params={**PLAIN, "sort": "score"}).json()["groups"]
    lowest = [min(m["score"] for m in g["members"]) for g in score]
    assert lowest == sorted(lowest)
    sure = client.get("/api/dupes", params={**PLAIN, "min_score": 0.94}).json()["groups"]
    assert all(m["score"] >= 0.94 for g in sure for m in g["members"])
    assert len(sure) < 3  # b2 (0.93) takes b's group out


def test_a_bulk_action_covers_exactly_the_filtered_groups(home: Path, tmp_path: Path) -> None:
    client = client_for(home)
    only = {"kind": "near"}
    near = client.get("/api/dupes", params={"kind": "near"}).json()["groups"]  # its keepers
    files = {f["path"] for g in near for f in [g["keep"], *g["members"]]}
    dest = str(tmp_path / "out")
    preview = client.post(
        "/api/dupes/apply-default", json={"action": "move", "dest": dest, "only": only}
    )
    assert preview.status_code == 200, preview.text
    listed = set(preview.json()["files"])
    assert listed == files - {g["keep"]["path"] for g in near}  # every member, no keeper
    done = client.post(
        "/api/dupes/apply-default",
        json={"action": "move", "dest": dest, "only": only, "dry_run": False},
    ).json()
    assert set(done["done"]) == listed  # exactly what the preview showed
    assert all(not os.path.exists(p) for p in listed)
    photos = tmp_path / "photos"
    assert (photos / "a.jpg").is_file() and (photos / "copies" / "a.jpg").is_file()  # exact


def test_decisions_are_listed_and_taken_back_in_the_page_and_the_cli(home: Path) -> None:
    client = client_for(home)
    groups = client.get("/api/dupes", params=PLAIN).json()["groups"]
    b_group = next(g for g in groups if "b.jpg" in names(g))
    ids = [b_group["keep"]["id"], *(m["id"] for m in b_group["members"])]

    assert client.post("/api/dupes/ignore", json=ids).json()["remembered"] == 3
    after = client.get("/api/dupes", params=PLAIN).json()["groups"]
    assert b_group["id"] not in {g["id"] for g in after}
    listed = client.get("/api/decisions").json()["not_duplicates"]
    assert len(listed) == 3
    assert client.post("/api/dupes/unignore", json=ids).json()["taken_back"] == 3
    back = client.get("/api/dupes", params=PLAIN).json()["groups"]
    assert b_group["id"] in {g["id"] for g in back}

    other = b_group["members"][0]["id"]
    assert client.post("/api/dupes/keep", json={"id": other, "members": ids}).status_code == 200
    assert [k["id"] for k in client.get("/api/decisions").json()["keepers"]] == [other]
    result = CliRunner().invoke(cli, ["--home", str(home), "dupes", "--unkeep", str(other)])
    assert result.exit_code == 0 and "1 chosen keeper(s) taken back" in result.output
    assert client.get("/api/decisions").json()["keepers"] == []  # seen by the server at once

    result = CliRunner().invoke(cli, ["--home", str(home), "dupes", "--ignore", *map(str, ids)])
    assert result.exit_code == 0, result.output
    now = client.get("/api/dupes", params=PLAIN).json()["groups"]  # another process decided
    assert b_group["id"] not in {g["id"] for g in now}
    result = CliRunner().invoke(cli, ["--home", str(home), "dupes", "--unignore", *map(str, ids)])
    assert "3 pair(s) may be duplicates again" in result.output
    assert b_group["id"] in {
        g["id"] for g in client.get("/api/dupes", params=PLAIN).json()["groups"]
    }


def test_keeping_another_identical_file_says_how_identical_files_are_kept(home: Path) -> None:
    client = client_for(home)
    groups = client.get("/api/dupes").json()["groups"]
    exact = next(g for g in groups if g["kind"] == "exact")
    ids = [exact["keep"]["id"], *(m["id"] for m in exact["members"])]
    answer = client.post("/api/dupes/keep", json={"id": ids[1], "members": ids})
    assert answer.status_code == 400 and "same bytes" in answer.json()["detail"]
    assert client.get("/api/decisions").json()["keepers"] == []  # nothing was remembered
