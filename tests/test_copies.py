"""Copy detection on real photos: geometric verification, the pipeline on photos and their
edited copies (the bundled backbone), its caches and workers, and queries that are copies.
Candidates: tests/test_copy_candidates.py; regions: tests/test_copy_regions.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from indexer.models import copy_thresholds, find_card
from indexer.options import DEFAULT_MODEL
from search.cli import cli
from search.copies.verify import features_of, verify
from tests.helpers import PHOTOS, RecordedSteps, edits


def test_verification_maps_copies_and_refuses_other_photos(tmp_path: Path) -> None:
    made = edits(PHOTOS[0], tmp_path)
    original = features_of(str(made["original"]))
    for name in ("crop-60", "corner", "pasted", "grayscale", "turned", "band", "q10"):
        check = verify(original, features_of(str(made[name])))
        assert check.verified, (name, check)
    mirror = verify(original, features_of(str(made["mirror"])).mirrored(), mirrored=True)
    assert mirror.verified  # against the mirror of the copy's features
    assert not verify(original, features_of(str(made["mirror"]))).verified
    twice = original.mirrored().mirrored()  # the mirror's mirror is the image itself
    assert np.allclose(twice.points, original.points, atol=1e-4)
    assert np.array_equal(twice.descriptors, original.descriptors)
    assert np.array_equal(twice.thumb, original.thumb)
    for other in PHOTOS[1:]:
        assert not verify(original, features_of(str(other))).verified
    # A crop's keypoints cover its own frame, and only part of its source's.
    crop = verify(original, features_of(str(made["corner"])))
    assert crop.coverage_b > 2 * crop.coverage_a


def test_a_shared_caption_band_is_not_a_copy(tmp_path: Path) -> None:
    """Two different photos with the same overlaid band of text: matches on the band alone
    cover little of either frame."""
    bands = []
    for photo in PHOTOS[:2]:
        image = Image.open(photo).convert("RGB").resize((480, 320))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 270, 480, 320), fill=(20, 20, 20))
        for x in range(0, 480, 120):
            draw.text((x + 8, 285), "© Holiday 2026", fill=(255, 255, 255))
        bands.append(tmp_path / f"{photo.stem}-band.jpg")
        image.save(bands[-1], quality=90)
    check = verify(features_of(str(bands[0])), features_of(str(bands[1])))
    assert not check.verified, check


@pytest.fixture(scope="module")
def copies_home(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, dict[str, Path]]]:
    folder = tmp_path_factory.mktemp("photos")
    sets = {photo.stem: edits(photo, folder) for photo in PHOTOS[:3]}
    (folder / "broken.jpg").write_bytes(b"not an image")
    home = tmp_path_factory.mktemp("home")
    result = CliRunner().invoke(cli, ["--home", str(home), "index", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    return home, sets


def test_plain_dupes_finds_the_edited_copies_and_keeps_the_originals(
    copies_home: tuple[Path, dict[str, dict[str, Path]]],
) -> None:
    home, sets = copies_home
    result = CliRunner().invoke(cli, ["--home", str(home), "dupes", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mode"] == "copies"
    assert data["candidate_recall"] == 1.0  # a collection this small is joined exactly
    # A collection this small takes the card's small-collection score; the rest verifies.
    card = copy_thresholds(find_card(DEFAULT_MODEL))
    assert data["threshold"] == pytest.approx(card.small_accept) and card.small_accept > card.accept
    groups = {Path(g["keep"]["path"]).name: {Path(m["path"]).name for m in g["members"]}
              for g in data["groups"]}  # fmt: skip
    for stem, made in sets.items():
        expected = {p.name for name, p in made.items() if name != "original"}
        assert made["original"].name in groups, (stem, groups)
        found = groups[made["original"].name]
        assert found <= expected | {p.name for m in sets.values() for p in m.values()}
        assert len(found & expected) >= len(expected) - 1, (stem, expected - found)
        assert not found - expected, f"a copy of another photo joined {stem}: {found - expected}"


def test_a_second_run_reads_the_looks_and_features_from_the_catalog(
    copies_home: tuple[Path, dict[str, dict[str, Path]]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import shutil
    import sqlite3

    from search.copies import verify as verifying
    from search.copies.dupes import DupeOptions, find_duplicates
    from search.keeper import look as quality
    from store import Store

    home, _ = copies_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        db.execute("DELETE FROM results_cache")
        db.execute("DELETE FROM content_cache")
    with Store.writer(copy) as store:
        first = find_duplicates(store, DupeOptions())
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        kinds = dict(db.execute("SELECT kind, count(*) FROM content_cache GROUP BY kind"))
    members = {m.record.id for g in first.groups for m in g.members} | {
        g.keep.id for g in first.groups
    }
    assert kinds["look"] >= len(members) > 0 and kinds["local_features"] > 0
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        db.execute("DELETE FROM results_cache")  # pairs verified again, from cached features

    read: list[str] = []  # the readers' callers catch what they raise: record the reads

    def unreadable(path: str, box: object = None) -> None:
        read.append(path)
        raise OSError(f"{path} was read again")

    monkeypatch.setattr(quality, "_look", unreadable)
    monkeypatch.setattr(verifying, "features_of", unreadable)
    with Store.writer(copy) as store:
        again = find_duplicates(store, DupeOptions())
    assert not again.cached and again.checked == first.checked and read == []
    assert [(g.keep.id, g.reason, [m.record.id for m in g.members]) for g in again.groups] == [
        (g.keep.id, g.reason, [m.record.id for m in g.members]) for g in first.groups
    ]


def test_a_query_reads_its_candidates_without_forking(
    copies_home: tuple[Path, dict[str, dict[str, Path]]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The server runs queries in threads, and a process forked from a threaded one can inherit
    a lock that another thread held: a query reads its candidates' features itself."""
    import shutil
    import sqlite3

    from search import workers
    from search.copies import verify as verifying
    from search.copies.rerank import CANDIDATES
    from search.query import QueryOptions, by_images
    from store import Store

    home, sets = copies_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        db.execute("DELETE FROM content_cache")
    read: list[str] = []
    real = verifying.features_of

    def reading(path: str, box: object = None) -> object:
        read.append(path)
        return real(path, box)  # type: ignore[arg-type]

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a query forked workers")

    monkeypatch.setattr(verifying, "features_of", reading)
    monkeypatch.setattr(workers, "ProcessPoolExecutor", no_pool)
    with Store.open(copy) as store:
        (result,) = by_images(store, [str(sets["coffee"]["corner"])], QueryOptions(k=5))
    assert len(read) > CANDIDATES  # the query and every candidate, read here
    assert Path(result.matches[0].record.path).name.startswith("coffee")


def test_workers_start_after_this_process_used_opencv(
    copies_home: tuple[Path, dict[str, dict[str, Path]]], tmp_path: Path
) -> None:
    """A query verifies with OpenCV here, then dupes forks workers that use it too: none may
    wait forever on the thread pool of the process it was forked from."""
    import os
    import shutil
    import signal
    import sqlite3
    import subprocess
    import sys

    home, sets = copies_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        db.execute("DELETE FROM results_cache")
        db.execute("DELETE FROM content_cache")
    script = f"""
import search.workers, search.copies.decide
search.workers.PARALLEL_FROM = search.copies.decide.PARALLEL_PAIRS = 2  # always workers
from search.copies.dupes import find_duplicates
from search.query import QueryOptions, by_images
from store import Store
with Store.writer({str(copy)!r}) as store:
    by_images(store, [{str(sets["coffee"]["corner"])!r}], QueryOptions(k=5))
    print(len(find_duplicates(store).groups))
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               cwd=Path(__file__).parent.parent)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=120)  # about 5 s when nothing waits
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its workers too
        process.communicate()
        raise AssertionError("dupes never finished: a worker waits on a dead thread") from None
    assert process.returncode == 0, stderr
    assert int(stdout) >= len(sets)


def test_the_long_steps_are_reported_as_they_go(
    copies_home: tuple[Path, dict[str, dict[str, Path]]], tmp_path: Path
) -> None:
    import shutil
    import sqlite3

    from search.copies.dupes import DupeOptions, find_duplicates
    from store import Store

    home, _ = copies_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        db.execute("DELETE FROM results_cache")
        db.execute("DELETE FROM content_cache")
    steps = RecordedSteps()
    with Store.writer(copy) as store:
        found = find_duplicates(store, DupeOptions(), steps)
    seen = steps.seen
    # Every copy here verifies on whole frames, or joins through one that does: no region
    # looks enough like an image left unverified to be read (tests/test_copy_regions.py).
    assert set(seen) == {"finding candidate pairs", "reading local features",
                         "verifying candidate pairs", "looking at the copies"}  # fmt: skip
    assert all(total == done > 0 for total, done in seen.values()), seen
    assert seen["verifying candidate pairs"][0] == found.checked


def test_queries_that_are_a_crop_or_a_pasted_copy_find_the_photo_first(
    copies_home: tuple[Path, dict[str, dict[str, Path]]], tmp_path: Path
) -> None:
    home, sets = copies_home
    coffee = sets["coffee"]["original"]
    image = Image.open(coffee).convert("RGB")
    w, h = image.size
    crop = tmp_path / "crop.jpg"
    image.crop((w // 3, h // 4, w // 3 + w // 2, h // 4 + h // 2)).save(crop, quality=80)
    canvas = Image.new("RGB", (w, h), (240, 240, 240))
    canvas.paste(image.resize((w * 2 // 5, h * 2 // 5)), (w // 2, h // 2))
    pasted = tmp_path / "pasted.jpg"
    canvas.save(pasted, quality=80)
    for query in (crop, pasted):
        result = CliRunner().invoke(cli, ["--home", str(home), "query", str(query), "--json"])
        assert result.exit_code == 0, result.output
        top = json.loads(result.stdout)["results"][0]
        assert Path(top["path"]).stem.startswith("coffee"), (query.name, top)
        assert top.get("verified", 0) > 0


def test_a_file_that_cannot_be_read_again_leaves_its_pairs_unverified(
    copies_home: tuple[Path, dict[str, dict[str, Path]]], tmp_path: Path
) -> None:
    import shutil
    import sqlite3

    home, sets = copies_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    with sqlite3.connect(copy / "catalog.sqlite") as db:  # nothing verified from the caches
        db.execute("DELETE FROM results_cache")
        db.execute("DELETE FROM content_cache")
    moved = sets["chelsea"]["corner"]
    backup = tmp_path / "corner.jpg"
    shutil.move(moved, backup)  # gone since it was indexed
    try:
        result = CliRunner().invoke(cli, ["--home", str(copy), "dupes", "--json"])
    finally:
        shutil.move(backup, moved)
    assert result.exit_code == 0, result.output
    assert f"could not read {moved} again" in result.stderr
    assert json.loads(result.stdout)["groups"]  # everything else is still found


def test_ratio_matches_are_those_of_opencvs_matcher(tmp_path: Path) -> None:
    """verify.matches is Lowe's ratio test with one match per keypoint of b, as OpenCV's
    BFMatcher.knnMatch and a loop made them (at a third of the time)."""
    from search.copies.verify import matches
    from search.pixels import opencv

    made = edits(PHOTOS[1], tmp_path)
    pairs = [("original", "q10"), ("original", "corner"), ("blur", "band")]
    pairs += [("original", str(p)) for p in PHOTOS[2:]]  # other photos: few matches
    for name_a, name_b in pairs:
        a = features_of(str(made.get(name_a, name_a)))
        b = features_of(str(made.get(name_b, name_b)))
        best: dict[int, tuple[float, int]] = {}
        for pair in (
            opencv().BFMatcher(opencv().NORM_L2).knnMatch(a.descriptors, b.descriptors, k=2)
        ):
            if len(pair) == 2 and pair[0].distance < 0.8 * pair[1].distance:
                m = pair[0]
                if m.trainIdx not in best or best[m.trainIdx][0] > m.distance:
                    best[m.trainIdx] = (m.distance, m.queryIdx)
        expected = {(q, t) for t, (_, q) in best.items()}
        query, train = matches(a.descriptors, b.descriptors)
        found = set(zip(query.tolist(), train.tolist(), strict=True))
        # Float rounding may tip a match sitting exactly on the ratio: allow one in a hundred.
        assert len(found ^ expected) <= max(1, len(expected) // 100), (name_a, name_b)


def test_views_placed_in_files_a_chunk_at_a_time_give_the_same_groups(
    copies_home: tuple[Path, dict[str, dict[str, Path]]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`dupes` reads the views from the catalog a chunk of images at a time and, past
    IN_MEMORY_UP_TO, keeps them in files sorted by cell (search/copies/cellviews.py): the same
    groups as with every view in memory, and the files gone after; a folder that cannot be
    written keeps them in memory."""
    import shutil
    import sqlite3
    import tempfile

    from search.copies import cellviews
    from search.copies.dupes import DupeOptions, find_duplicates
    from store import Store

    home, _ = copies_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy)

    def groups() -> list[tuple[int, str, list[int]]]:
        with sqlite3.connect(copy / "catalog.sqlite") as db:
            db.execute("DELETE FROM results_cache")
        with Store.writer(copy) as store:
            found = find_duplicates(store, DupeOptions()).groups
        return [(g.keep.id, g.reason, [m.record.id for m in g.members]) for g in found]

    in_memory = groups()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(cellviews, "IN_MEMORY_UP_TO", 0)
    monkeypatch.setattr(cellviews, "VIEW_CHUNK", 4)  # runs of 4 images
    read: list[bool] = []
    take = cellviews.Run.take

    def recorded(self: cellviews.Run, first: int, last: int) -> object:
        read.append(self.file is not None and self.file.with_suffix(".views").is_file())
        return take(self, first, last)

    monkeypatch.setattr(cellviews.Run, "take", recorded)
    assert groups() == in_memory and in_memory
    assert len(read) > 3 and all(read)  # every run read back from its file
    assert not list(scratch.iterdir())
    read.clear()
    monkeypatch.setattr(cellviews, "_write", _full_disk)
    assert groups() == in_memory
    assert read and not any(read)  # kept in memory instead


def _full_disk(self: object, *args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device")
