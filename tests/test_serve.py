"""`imgsearch serve`: the API through an HTTP client against the app, and the page end to end
in headless Chromium (Debian's chromium, driven by Playwright) against a real server."""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from indexer.options import IndexOptions, ModelOptions
from indexer.pipeline import index_folders
from search.cli.serve import is_loopback
from search.records import MIN_INLIERS
from search.server.app import create_app
from search.server.state import ServerState
from store import Store
from tests.helpers import EXAMPLES, SAMPLE_PHOTOS, review_photos, write_collection
from tests.subprocs import REPO, serving

ARTIFACTS = REPO / "test-artifacts"
TEST_HOSTS = ("testserver",)  # the Host header of TestClient's requests


def app_for(home: Path, **options: object) -> TestClient:
    state = ServerState(home, ModelOptions(), hosts=TEST_HOSTS, **options)  # type: ignore[arg-type]
    return TestClient(create_app(state))


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample photos, a byte copy and a re-compressed copy, and a broken file, indexed
    with the default model."""
    folder = tmp_path_factory.mktemp("photos")
    for photo in SAMPLE_PHOTOS:
        shutil.copy(photo, folder / photo.name)
    shutil.copy(folder / "rocket.jpg", folder / "rocket-copy.jpg")
    Image.open(folder / "coffee.jpg").save(folder / "coffee-small.jpg", quality=70)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    home = tmp_path_factory.mktemp("home")
    index_folders(home, [str(folder)], IndexOptions(workers=0))
    return home


@pytest.fixture
def client(served_home: Path) -> TestClient:
    return app_for(served_home, max_upload=1 << 20)


def ids_by_name(home: Path) -> dict[str, int]:
    with Store.open(home) as store:
        return {Path(p).name: r.id for p, r in store.catalog.file_states().items()}


def test_info_search_by_id_and_path(client: TestClient, served_home: Path) -> None:
    info = client.get("/api/info").json()
    assert (info["model"], info["count"]) == ("effnet-lite0", 7)
    ids = ids_by_name(served_home)
    answer = client.get("/api/search", params={"id": ids["rocket.jpg"], "k": 3}).json()
    assert answer["results"][0]["id"] == ids["rocket-copy.jpg"]
    assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert all(r["id"] != ids["rocket.jpg"] for r in answer["results"])
    assert answer["results"][0]["thumbnail"] == f"/api/images/{ids['rocket-copy.jpg']}/thumbnail"
    coffee = next(p for p in ids_by_name(served_home) if p == "coffee.jpg")
    by_path = client.get("/api/search", params={"path": str(_path_of(served_home, coffee))})
    assert by_path.status_code == 200
    assert Path(by_path.json()["results"][0]["path"]).name == "coffee-small.jpg"


def _path_of(home: Path, name: str) -> str:
    with Store.open(home) as store:
        return next(p for p in store.catalog.file_states() if Path(p).name == name)


def test_upload_finds_the_original_and_bad_uploads_are_json_errors(client: TestClient) -> None:
    coffee = next(p for p in SAMPLE_PHOTOS if p.name == "coffee.jpg")
    answer = client.post("/api/search", files={"file": ("mine.jpg", coffee.read_bytes())}).json()
    assert Path(answer["results"][0]["path"]).name == "coffee.jpg"
    started = time.perf_counter()  # the model stays loaded: the second upload is quick
    again = client.post("/api/search", files={"file": ("again.jpg", coffee.read_bytes())})
    assert again.status_code == 200 and time.perf_counter() - started < 1.0
    tagged = client.post("/api/search", params={"tag": "espresso"},
                         files={"file": ("mine.jpg", coffee.read_bytes())}).json()  # fmt: skip
    assert sorted(Path(r["path"]).name for r in tagged["results"]) == [
        "coffee-small.jpg",
        "coffee.jpg",
    ]
    text = client.post("/api/search", files={"file": ("notes.jpg", b"hello")})
    assert text.status_code == 415 and "notes.jpg" in text.json()["detail"]
    big = client.post("/api/search", files={"file": ("big.jpg", b"x" * ((1 << 20) + 1))})
    assert big.status_code == 413


def test_errors_are_json_with_status_codes(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/api/search", params={"id": 99999}).status_code == 404
    assert client.get("/api/search", params={"id": "99999999999999999999"}).status_code == 404
    assert client.get("/api/search").status_code == 400
    assert client.get("/api/search", params={"id": 1, "k": 0}).status_code == 422
    assert client.get("/api/images/99999/thumbnail").status_code == 404
    assert client.get("/api/dupes", params={"keep": "biggest"}).status_code == 422
    assert client.get("/api/search", params={"path": "/etc/passwd"}).status_code == 404
    assert client.get("/api/images/..%2F..%2Fetc%2Fpasswd/thumbnail").status_code in (404, 422)
    empty = app_for(tmp_path / "none")
    response = empty.get("/api/info")
    assert response.status_code == 503 and "no index" in response.json()["detail"]
    assert "/api/search" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs")  # a page of the endpoints that needs no CDN
    assert docs.status_code == 200 and "/api/dupes/act" in docs.text and "cdn" not in docs.text


def test_hostile_requests_are_bounded(served_home: Path, tmp_path: Path) -> None:
    client = app_for(served_home, max_upload=1 << 20, max_pixels=10_000_000)
    # Another Host (DNS rebinding) is refused.
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400
    # A body announced larger than the cap is refused before it is read.
    huge = client.post(
        "/api/search",
        content=b"x" * 10,
        headers={
            "content-length": str(200 << 20),
            "content-type": "multipart/form-data; boundary=x",
        },
    )
    assert huge.status_code == 413
    # A pixel bomb (a one-colour PNG of 225 MP, a few hundred kB) is refused from its header.
    bomb = tmp_path / "bomb.png"
    Image.new("L", (15000, 15000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 1 << 20
    started = time.perf_counter()
    answer = client.post("/api/search", files={"file": ("bomb.png", bomb.read_bytes())})
    assert answer.status_code == 415 and "too many pixels" in answer.json()["detail"]
    assert time.perf_counter() - started < 5  # not decoded


def test_serve_on_a_busy_port_is_one_line_and_exit_1(served_home: Path) -> None:
    from click.testing import CliRunner

    from search.cli import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["--home", str(served_home), "serve", "--port",
                                          str(port)])  # fmt: skip
    assert result.exit_code == 1
    assert (
        result.stderr.startswith("imgsearch: cannot listen on") and result.stderr.count("\n") == 1
    )


def test_only_the_indexed_file_itself_is_served(tmp_path: Path) -> None:
    photos = write_collection(tmp_path / "photos")
    home = tmp_path / "home"
    index_folders(home, [str(tmp_path / "photos")], IndexOptions(workers=0))
    client = app_for(home)
    red = ids_by_name(home)["red.png"]
    ok = client.get(f"/api/images/{red}/thumbnail", params={"size": 32})
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
    secret = tmp_path / "secret.png"
    shutil.copy(photos["gradient"], secret)
    photos["red"].unlink()
    photos["red"].symlink_to(secret)  # swapped for a link to a file that was never indexed
    assert client.get(f"/api/images/{red}/thumbnail").status_code == 409

    # The parent folder replaced by a link to a folder holding a file of the same size/mtime.
    blue = ids_by_name(home)["blue.jpg"]
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "photos", elsewhere, symlinks=True)
    shutil.rmtree(tmp_path / "photos")
    (tmp_path / "photos").symlink_to(elsewhere)
    assert (tmp_path / "photos" / "sub" / "blue.jpg").is_file()
    assert client.get(f"/api/images/{blue}/thumbnail").status_code == 409


def test_dupes_and_not_a_duplicate_is_remembered(served_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(served_home, home)  # the shared home stays as it is
    client = app_for(home)
    groups = client.get("/api/dupes").json()["groups"]
    assert [g["kind"] for g in groups] == ["exact", "near"]
    exact, near = groups
    assert Path(exact["keep"]["path"]).name.startswith("rocket")
    assert Path(near["keep"]["path"]).name == "coffee.jpg"  # the original: q70 is a re-encode
    assert near["reason"] and near["members"][0]["format"] == "JPEG"
    ids = [near["keep"]["id"], *[m["id"] for m in near["members"]]]
    assert client.post("/api/dupes/ignore", json=ids).json() == {"remembered": 1}
    assert [g["kind"] for g in client.get("/api/dupes").json()["groups"]] == ["exact"]
    identical = [exact["keep"]["id"], exact["members"][0]["id"]]
    assert client.post("/api/dupes/ignore", json=identical).status_code == 400
    assert client.post("/api/dupes/ignore", json=[ids[0]]).status_code == 400


def test_loopback_by_default() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="Debian's chromium is not installed (make test installs it with apt; it could not here)",
)


@needs_chromium
def test_the_page_searches_by_upload_and_browses(served_home: Path) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    coffee = next(p for p in SAMPLE_PHOTOS if p.name == "coffee.jpg")
    with serving(served_home) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#info:has-text('7 images')")
        page.wait_for_selector("#browse-count:has-text('7 of 7')")  # browsing, no upload
        page.set_input_files("#file", str(coffee))
        page.wait_for_selector(
            "#query-label:has-text('Neighbours of mine')".replace("mine", "coffee.jpg"),
            timeout=60_000,
        )
        first = page.locator("#results figure").first
        assert "coffee" in first.inner_text()
        page.wait_for_function(  # the thumbnail is shown
            "() => document.querySelector('#results figure img').naturalWidth > 0"
        )
        first.click()  # search from the result
        page.wait_for_selector("#query-label:has-text('Neighbours of image')")
        page.screenshot(path=str(ARTIFACTS / "serve-search.png"), full_page=True)
        browser.close()


@needs_chromium
def test_the_review_flow_picks_a_keeper_moves_the_rest_and_undoes(tmp_path: Path) -> None:
    """Open the groups, keep the other copy with the keyboard, move the rest, see the counter
    advance, undo from the page; the files on disk are checked at each step."""
    from playwright.sync_api import sync_playwright

    photos = review_photos(tmp_path / "photos")
    home, dest = tmp_path / "home", tmp_path / "moved"
    index_folders(home, [str(photos)], IndexOptions(workers=0))
    ARTIFACTS.mkdir(exist_ok=True)
    with serving(home) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.click("#tab-dupes")
        page.wait_for_selector("#counter:has-text('1 / 2')")
        page.locator("body").press("j")  # the near group of the coffee photos
        page.wait_for_selector("#counter:has-text('2 / 2')")
        assert page.locator("#group figure.keep figcaption").inner_text().endswith("coffee.jpg")
        assert "kept because" in page.inner_text("#reason")
        shown = page.get_attribute("#group", "data-group")
        files = sorted(page.locator("#group figcaption").all_inner_texts())
        page.locator("body").press("2")  # keep the other copy instead
        page.wait_for_selector("#group figure.keep figcaption:has-text('coffee-small.jpg')")
        assert page.get_attribute("#group", "data-group") == shown  # the same group, still
        assert len(page.locator("#group figcaption").all_inner_texts()) == len(files)
        page.screenshot(path=str(ARTIFACTS / "serve-review.png"), full_page=True)
        page.fill("#dest", str(dest))
        page.locator("#dest").evaluate("input => input.blur()")  # keys go to the page again
        page.locator("body").press("m")  # move the rest
        page.wait_for_selector("#counter:has-text('1 / 1')")
        assert (dest / "coffee.jpg").is_file() and not (photos / "coffee.jpg").exists()
        assert (photos / "coffee-small.jpg").is_file()
        page.locator("body").press("u")  # undo from the page
        page.wait_for_selector("#notice:has-text('restored 1 file')")
        assert (photos / "coffee.jpg").is_file() and not (dest / "coffee.jpg").exists()
        page.wait_for_selector("#counter:has-text('/ 2')")
        browser.close()
    with Store.open(home) as store:  # the restored file is indexed again, under its old id
        assert str(photos / "coffee.jpg") in store.catalog.file_states()


def test_serve_refuses_a_home_without_an_index(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from search.cli import cli

    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "x"), "serve"])
    assert result.exit_code == 1 and "no index" in result.stderr


def test_changes_from_another_origin_are_refused_and_ipv6_hosts_are_read(
    served_home: Path,
) -> None:
    client = app_for(served_home, max_upload=1 << 20)
    photo = SAMPLE_PHOTOS[0].read_bytes()
    for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}):
        answer = client.post("/api/search", files={"file": ("a.jpg", photo)}, headers=headers)
        assert answer.status_code == 403, headers
        assert client.post("/api/dupes/ignore", json=[1, 2], headers=headers).status_code == 403
    same = client.post(
        "/api/search", files={"file": ("a.jpg", photo)}, headers={"origin": "http://testserver"}
    )
    assert same.status_code == 200
    v6 = TestClient(create_app(ServerState(served_home, ModelOptions(), hosts=("::1",))))
    assert v6.get("/api/info", headers={"host": "[::1]:8000"}).status_code == 200
    assert v6.get("/api/info", headers={"host": "[::2]:8000"}).status_code == 400


def test_concurrent_huge_uploads_decode_within_the_pixel_budget(served_home: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from search.server import state as state_module

    seen: list[int] = []
    budget = state_module.PixelBudget(30_000_000)
    real = budget.taking

    @contextlib.contextmanager
    def watched(pixels: int) -> Iterator[None]:
        with real(pixels):
            seen.append(budget.used)
            time.sleep(0.05)
            yield

    budget.taking = watched  # type: ignore[method-assign]
    state = ServerState(served_home, ModelOptions(), hosts=TEST_HOSTS, max_upload=8 << 20)
    state.budget = budget
    client = TestClient(create_app(state))
    big = io.BytesIO()
    Image.new("RGB", (5000, 4000), (90, 120, 30)).save(big, format="PNG")  # 20 MP, flat
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda _: client.post("/api/search", files={"file": ("big.png", big.getvalue())}),
                range(4),
            )
        )
    assert [a.status_code for a in answers] == [200] * 4
    assert len(seen) == 4 and max(seen) <= 30_000_000  # never two 20 MP decodes at once


def test_an_action_names_the_files_it_saw_and_a_changed_group_is_409(tmp_path: Path) -> None:
    """The bug of round 2: a keeper picked re-sorted the groups and the next key acted on a
    group nobody saw. Now a request carries the group's files; a group that changed is 409."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee.jpg", "rocket.jpg", "chelsea.jpg"):
        shutil.copy(EXAMPLES / name, photos / name)
    shutil.copy(photos / "rocket.jpg", photos / "rocket-copy.jpg")
    # Other bytes each: a keeper is remembered by content (identical files cannot be told apart).
    Image.open(photos / "coffee.jpg").save(photos / "coffee-copy.jpg", quality=80)
    Image.open(photos / "coffee.jpg").save(photos / "coffee-copy2.jpg", quality=60)
    home = tmp_path / "home"
    index_folders(home, [str(photos)], IndexOptions(workers=0))
    client = app_for(home)
    groups = client.get("/api/dupes").json()["groups"]
    order = [g["id"] for g in groups]
    coffee = next(g for g in groups if "coffee" in g["keep"]["path"])
    seen = [coffee["keep"]["id"], *(m["id"] for m in coffee["members"])]
    other = coffee["members"][0]["id"]

    kept = client.post("/api/dupes/keep", json={"id": other, "members": seen})
    assert kept.status_code == 200
    again = client.get("/api/dupes").json()["groups"]
    assert [g["id"] for g in again] == order  # a new keeper moves no group
    assert next(g for g in again if g["id"] == coffee["id"])["keep"]["id"] == other

    before = sorted(p.name for p in photos.iterdir())
    stale = client.post(
        "/api/dupes/act", json={"keep": other, "members": seen[:-1], "action": "trash"}
    )
    assert stale.status_code == 409
    assert stale.json()["detail"]["group"]["id"] == coffee["id"]  # the group as it is now
    assert sorted(p.name for p in photos.iterdir()) == before  # nothing moved
    missing = client.post("/api/dupes/act", json={"keep": other, "action": "trash"})
    assert missing.status_code == 422  # the members are not optional

    dest = tmp_path / "moved"
    done = client.post(
        "/api/dupes/act",
        json={"keep": other, "members": seen, "action": "move", "dest": str(dest)},
    )
    assert done.status_code == 200, done.text
    gone = {Path(p).name for p in done.json()["done"]}
    assert gone == {Path(f["path"]).name for f in [coffee["keep"], *coffee["members"]]} - {
        Path(next(f["path"] for f in coffee["members"] if f["id"] == other)).name
    }
    assert all((dest / name).is_file() for name in gone)
    assert (photos / "rocket.jpg").is_file() and (photos / "rocket-copy.jpg").is_file()


def test_the_upload_search_is_the_query_of_imgsearch_query(
    served_home: Path, tmp_path: Path
) -> None:
    """One query path: the page's upload and `imgsearch query IMAGE` give the same answer,
    verified copies first and marked."""
    from search.query import QueryOptions, by_images

    edited = tmp_path / "edited-coffee.jpg"
    Image.open(EXAMPLES / "coffee.jpg").crop((60, 40, 540, 360)).resize((240, 160)).save(
        edited, quality=50
    )
    client = app_for(served_home, max_upload=1 << 20)
    answer = client.post(
        "/api/search", params={"k": 5}, files={"file": ("e.jpg", edited.read_bytes())}
    )
    assert answer.status_code == 200, answer.text
    page = answer.json()
    with Store.open(served_home) as store:
        (cli,) = by_images(store, [str(edited)], QueryOptions(k=5))
    assert page["query"] == "e.jpg"
    assert [r["id"] for r in page["results"]] == [m.record.id for m in cli.matches]
    assert page["results"][0]["verified"] >= MIN_INLIERS  # matched keypoints: a verified copy
    assert Path(page["results"][0]["path"]).name in ("coffee.jpg", "coffee-small.jpg")
