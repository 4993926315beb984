"""The review page in headless Chromium against a real `imgsearch serve`: it acts only on the
group it shows (a keeper picked by key keeps the same files on screen; trash takes exactly that
group's other files; a stale member list is refused), compares two copies with why they are
copies drawn, and takes actions and decisions back from its history. Then the compare API, the
checkerboard under transparency, and one score name for a pair in every output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from indexer.options import IndexOptions, ModelOptions
from indexer.pipeline import index_folders
from search.cli import cli
from search.server.app import create_app
from search.server.state import ServerState
from search.thumbnails import jpeg_thumbnail
from tests.helpers import review_photos
from tests.subprocs import serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (make test installs it with apt; it could not here)",
)


def indexed(root: Path) -> tuple[Path, Path]:
    """review_photos under `root`, indexed: (home, photos)."""
    photos = review_photos(root / "photos")
    home = root / "home"
    index_folders(home, [str(photos)], IndexOptions(workers=0))
    return home, photos


@pytest.fixture(scope="module")
def photos_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two groups: rocket.jpg and its byte copy; coffee.jpg and a q60 copy of it."""
    return indexed(tmp_path_factory.mktemp("review"))


def on_disk(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@needs_chromium
def test_a_key_picked_keeper_keeps_the_group_and_trash_takes_exactly_its_others(
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    home, photos = indexed(tmp_path)  # its own: it changes them
    before = on_disk(photos)
    with serving(home) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.click("#tab-dupes")
        page.wait_for_selector("#counter:has-text('1 / 2')")
        page.locator("body").press("j")
        page.wait_for_selector("#counter:has-text('2 / 2')")
        shown = page.get_attribute("#group", "data-group")
        files = sorted(page.locator("#group figcaption").all_inner_texts())
        paths = {Path(line.split(" · ")[-1]).name for line in files}
        assert paths == {"coffee.jpg", "coffee-small.jpg"}
        page.locator("body").press("2")  # keep the other copy
        page.wait_for_selector("#group figure.keep figcaption:has-text('coffee-small.jpg')")
        assert page.get_attribute("#group", "data-group") == shown
        now = {
            Path(t.split(" · ")[-1]).name
            for t in page.locator("#group figcaption").all_inner_texts()
        }
        assert now == paths  # the same files, only the keeper changed

        # A request that carries a member list the group no longer has: 409, nothing moves.
        stale = page.request.post(
            f"http://127.0.0.1:{port}/api/dupes/act",
            data=json.dumps({"keep": 1, "members": [1, 999], "action": "trash"}),
            headers={"Content-Type": "application/json"},
        )
        assert stale.status == 409 and on_disk(photos) == before

        page.locator("body").press("t")  # trash the others of the group on screen
        page.wait_for_selector("#counter:has-text('1 / 1')")
        assert on_disk(photos) == sorted(set(before) - {"coffee.jpg"})
        trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash" / "info"
        assert any(str(photos / "coffee.jpg") in i.read_text() for i in trash.glob("*.trashinfo"))

        # History: the action is listed with its undo, which brings the file back.
        page.locator("body").press("h")
        page.wait_for_selector("#history li:has-text('trash, 1 file(s)')")
        page.locator("#history li:has-text('trash, 1 file(s)') button").click()
        page.wait_for_selector("#notice:has-text('restored 1 file')")
        assert on_disk(photos) == before
        page.wait_for_selector("#history li:has-text('(undone)')")
        browser.close()


@needs_chromium
def test_compare_draws_why_and_history_takes_decisions_back(
    photos_home: tuple[Path, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    home, photos = indexed(tmp_path)  # its own: it changes them
    with serving(home) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.click("#tab-dupes")
        page.select_option("#f-kind", "near")  # the filter: the coffee group alone
        page.wait_for_selector("#counter:has-text('1 / 1')")
        page.locator("body").press("c")
        page.wait_for_selector("#why:has-text('verified')")
        assert page.locator("#pair svg").count() == 2
        assert page.locator("#pair svg circle").count() >= 2 * 8  # keypoints on both sides
        differs = page.locator("#facts tr.differs td:first-child").all_inner_texts()
        assert "bytes" in differs and "JPEG quality" in differs and "folder" not in differs
        page.check("#overlay")
        assert page.locator("#pair .side").count() == 1  # one over the other
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

        page.locator("body").press("2")  # a keeper picked: in history, then reset there
        page.wait_for_selector("#group figure.keep figcaption:has-text('coffee-small.jpg')")
        page.locator("body").press("n")  # not duplicates: the group goes
        page.wait_for_selector("#counter:has-text('no duplicates')")
        page.locator("body").press("h")
        page.wait_for_selector("#history li:has-text('≠')")
        page.locator("#history li:has-text('≠') button").click()
        page.wait_for_selector("#counter:has-text('1 / 1')")  # the group is back
        page.wait_for_selector("#group figure.keep figcaption:has-text('coffee-small.jpg')")
        page.locator("#history li:has-text('coffee-small.jpg') button:has-text('reset')").click()
        page.wait_for_selector("#group figure.keep figcaption:has-text('coffee.jpg')")
        browser.close()
    assert sorted(p.name for p in photos.iterdir()) == sorted(
        p.name for p in photos_home[1].iterdir()
    )


def client(home: Path) -> TestClient:
    return TestClient(create_app(ServerState(home, ModelOptions(), hosts=("testserver",))))


def test_compare_maps_the_copy_onto_its_original(photos_home: tuple[Path, Path]) -> None:
    home, _ = photos_home
    app = client(home)
    group = next(g for g in app.get("/api/dupes").json()["groups"] if g["kind"] == "near")
    a, b = group["keep"]["id"], group["members"][0]["id"]
    why = app.get("/api/compare", params={"a": a, "b": b}).json()
    assert why["verified"] and why["inliers"] >= 8 and not why["mirrored"]
    # The same picture at the same size: each keypoint lands where it was, and a's frame
    # covers b's.
    shift = np.abs(np.array(why["points_a"]) - np.array(why["points_b"])).max()
    assert shift < 0.02
    assert np.allclose(why["frame_in_b"], [[0, 0], [1, 0], [1, 1], [0, 1]], atol=0.03)
    assert why["a"]["jpeg_quality"] != why["b"]["jpeg_quality"]
    rocket = next(g for g in app.get("/api/dupes").json()["groups"] if g["kind"] == "exact")
    unrelated = app.get("/api/compare", params={"a": a, "b": rocket["keep"]["id"]}).json()
    assert not unrelated["verified"]
    assert app.get("/api/compare", params={"a": a, "b": 99999}).status_code == 404


def test_transparent_pixels_are_drawn_on_a_checkerboard(tmp_path: Path) -> None:
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(clear)
    with Image.open(__import__("io").BytesIO(jpeg_thumbnail(str(clear), 64))) as thumb:
        grey = np.asarray(thumb.convert("L"), dtype=np.int32)
    assert abs(int(grey[2, 2]) - int(grey[2, 10])) > 30  # light and dark squares alternate
    assert grey.min() > 150  # and none of it black


def test_one_score_name_for_a_pair_in_the_text_the_sheet_and_the_page(
    photos_home: tuple[Path, Path], tmp_path: Path
) -> None:
    home, _ = photos_home
    runner = CliRunner()
    text = runner.invoke(cli, ["--home", str(home), "dupes"]).stdout
    sheet = tmp_path / "sheet.html"
    runner.invoke(cli, ["--home", str(home), "dupes", "--html", str(sheet)])
    page: dict[str, Any] = client(home).get("/api/dupes").json()
    near = next(g for g in page["groups"] if g["kind"] == "near")
    link = near["members"][0]["link"]
    assert link.startswith("copy score ") and link in text and link in sheet.read_text()
    assert "(1 exact, 1 near)" in text
