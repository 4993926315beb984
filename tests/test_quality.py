"""The bundled backbone on real photos: an edited copy finds its original at rank 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from search.cli import cli
from tests.helpers import SAMPLE_PHOTOS, edited, shapes


@pytest.mark.slow
def test_edited_copies_find_their_originals(tmp_path: Path) -> None:
    home = tmp_path / "home"
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in SAMPLE_PHOTOS:
        (photos / photo.name).write_bytes(photo.read_bytes())
    for i in range(8):  # distractors
        shapes(i, size=(320, 240)).save(photos / f"distractor{i}.png")
    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(home), "index", str(photos), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == len(SAMPLE_PHOTOS) + 8

    queries = tmp_path / "queries"
    queries.mkdir()
    copies = []
    for photo in SAMPLE_PHOTOS:
        copy = queries / f"edited-{photo.name}"
        edited(Image.open(photo).convert("RGB")).save(copy, quality=70)
        copies.append(copy)
    result = runner.invoke(cli, ["--home", str(home), "query", *map(str, copies), "-k", "2",
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for photo, answer in zip(SAMPLE_PHOTOS, json.loads(result.stdout), strict=True):
        top, runner_up = answer["results"]
        assert Path(top["path"]).name == photo.name
        assert top["score"] > 0.8
        assert top["score"] - runner_up["score"] > 0.1  # not a coin toss


@pytest.mark.slow
def test_dupes_with_the_default_threshold_on_real_photos(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in SAMPLE_PHOTOS:
        (photos / photo.name).write_bytes(photo.read_bytes())
    (photos / "rocket-copy.jpg").write_bytes((photos / "rocket.jpg").read_bytes())
    Image.open(photos / "coffee.jpg").save(photos / "coffee-reencoded.jpg", quality=75)
    Image.open(photos / "chelsea.jpg").save(photos / "chelsea.png")  # lossless: same pixels
    home = str(tmp_path / "home")
    runner = CliRunner()
    assert runner.invoke(cli, ["--home", home, "index", str(photos)]).exit_code == 0
    sheet = tmp_path / "dupes.html"
    result = runner.invoke(cli, ["--home", home, "dupes", "--json", "--html", str(sheet)])
    assert result.exit_code == 0, result.output
    html = sheet.read_text()
    assert html.count("<figure") == 6 == html.count('src="data:image/jpeg;base64,')
    groups = [
        (
            g["kind"],
            Path(g["keep"]["path"]).name,
            sorted(Path(m["path"]).name for m in g["members"]),
        )
        for g in json.loads(result.stdout)["groups"]
    ]
    assert sorted(groups) == [
        ("exact", "rocket.jpg", ["rocket-copy.jpg"]),
        # Same pixels: a PNG saved from the JPEG carries its blocks, so the JPEG is kept.
        ("near", "chelsea.jpg", ["chelsea.png"]),
        ("near", "coffee.jpg", ["coffee-reencoded.jpg"]),
    ]


@pytest.mark.slow
def test_rotated_copies_are_found_with_rotations(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in SAMPLE_PHOTOS:
        (photos / photo.name).write_bytes(photo.read_bytes())
    chelsea = Image.open(photos / "chelsea.jpg")
    chelsea.transpose(Image.Transpose.ROTATE_90).save(photos / "chelsea-turned.jpg", quality=90)
    Image.open(photos / "rocket.jpg").rotate(180).save(
        photos / "rocket-upside-down.jpg", quality=90
    )
    home = str(tmp_path / "home")
    runner = CliRunner()
    assert runner.invoke(cli, ["--home", home, "index", str(photos)]).exit_code == 0

    def groups(*extra: str) -> list[tuple[str, list[str]]]:
        result = runner.invoke(cli, ["--home", home, "dupes", "--json", *extra])
        assert result.exit_code == 0, result.output
        return sorted(
            (Path(g["keep"]["path"]).name, sorted(Path(m["path"]).name for m in g["members"]))
            for g in json.loads(result.stdout)["groups"]
        )

    expected = [("chelsea.jpg", ["chelsea-turned.jpg"]), ("rocket.jpg", ["rocket-upside-down.jpg"])]
    # SIFT verification is rotation invariant: copy detection finds them even upright ...
    assert groups() == expected
    # ... and --rotations makes candidates of the turned descriptors, without verification too.
    assert groups("--rotations", "--no-verify") == expected
