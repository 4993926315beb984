"""Copy detection stage by stage: normalised scores, geometric verification, the pipeline on
real photos and their edited copies (the bundled backbone), and queries that are copies."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from indexer.models import (
    FALLBACK_ACCEPT,
    LARGE_COLLECTION,
    SMALL_COLLECTION,
    copy_thresholds,
    find_card,
)
from indexer.options import DEFAULT_MODEL
from search.cli import cli
from search.copies.candidates import BETA, Descriptors, find_candidates
from search.copies.verify import features_of, verify
from tests.helpers import EXAMPLES

PHOTOS = [EXAMPLES / n for n in ("coffee.jpg", "chelsea.jpg", "astronaut.jpg", "rocket.jpg")]


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def at_cosine(base: np.ndarray, cosine: float, rng: np.random.RandomState) -> np.ndarray:
    other = rng.randn(len(base)).astype(np.float32)
    orthogonal = unit(other - (other @ base) * base)
    return unit(cosine * base + np.sqrt(1 - cosine**2) * orthogonal)


def test_a_pair_in_a_crowd_scores_lower_than_a_closer_pair_alone() -> None:
    """Score normalisation: among look-alikes two images must be much closer to count."""
    rng = np.random.RandomState(0)
    dim = 48
    centre = unit(rng.randn(dim))
    crowd = np.stack([at_cosine(centre, 0.95, rng) for _ in range(30)])  # look-alikes
    others = unit(rng.randn(40, dim))  # everything else: unrelated
    lonely = at_cosine(others[0], 0.85, rng)  # a copy of one of them, at cosine 0.85
    vectors = np.concatenate([crowd, others, lonely[None]])
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    found = find_candidates(Descriptors(ids, vectors))
    pairs = found.pairs.tolist()
    crowd_rows = [m for m, (a, b) in enumerate(pairs) if a < 30 and b < 30]
    best_crowd = max(crowd_rows, key=lambda m: found.cosine[m])
    copy = pairs.index([30, len(vectors) - 1])
    assert found.cosine[best_crowd] > found.cosine[copy]  # the look-alikes are closer ...
    assert found.score[copy] > found.score[best_crowd]  # ... but the copy scores higher
    assert 0 < BETA <= 1


def edits(photo: Path, folder: Path) -> dict[str, Path]:
    """The original and copies of it, written as a user's tools would."""
    image = Image.open(photo).convert("RGB")
    w, h = image.size
    made = {"original": folder / photo.name}
    image.save(made["original"], quality=95)

    def save(name: str, edited: Image.Image, quality: int = 90) -> None:
        made[name] = folder / f"{photo.stem}-{name}.jpg"
        edited.save(made[name], quality=quality)

    save("crop-60", image.crop((w // 5, h // 5, w - w // 5, h - h // 5)))
    save("corner", image.crop((0, 0, w // 2, h // 2)))
    canvas = Image.new("RGB", (w, h), (40, 90, 160))
    canvas.paste(image.resize((w // 2, h // 2)), (w // 4, h // 3))
    save("pasted", canvas)
    save("grayscale", ImageOps.grayscale(image).convert("RGB"))
    save("blur", image.filter(ImageFilter.GaussianBlur(2)))
    save("q10", image, quality=10)
    save("turned", image.rotate(90, expand=True))
    save("mirror", ImageOps.mirror(image))
    banded = image.copy()
    ImageDraw.Draw(banded).rectangle((0, h - h // 7, w, h), fill=(15, 15, 15))
    save("band", banded)
    return made


def test_verification_maps_copies_and_refuses_other_photos(tmp_path: Path) -> None:
    made = edits(PHOTOS[0], tmp_path)
    original = features_of(str(made["original"]))
    for name in ("crop-60", "corner", "pasted", "grayscale", "turned", "band", "q10"):
        check = verify(original, features_of(str(made[name])))
        assert check.verified, (name, check)
    mirror = verify(original, features_of(str(made["mirror"]), mirror=True), mirrored=True)
    assert mirror.verified  # against the mirror image of the copy
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

    from search import quality
    from search.copies import verify as verifying
    from search.dupes import DupeOptions, find_duplicates
    from store import Store

    home, _ = copies_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        db.execute("DELETE FROM results_cache")
        db.execute("DELETE FROM content_cache")
    with Store.open(copy, writable=True) as store:
        first = find_duplicates(store, DupeOptions())
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        kinds = dict(db.execute("SELECT kind, count(*) FROM content_cache GROUP BY kind"))
    members = {m.record.id for g in first.groups for m in g.members} | {
        g.keep.id for g in first.groups
    }
    assert kinds["look"] >= len(members) > 0 and kinds["local_features"] > 0
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        db.execute("DELETE FROM results_cache")  # pairs verified again, from cached features

    def unreadable(path: str, mirror: bool = False) -> None:
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(quality, "_look", unreadable)
    monkeypatch.setattr(verifying, "features_of", unreadable)
    with Store.open(copy, writable=True) as store:
        again = find_duplicates(store, DupeOptions())
    assert not again.cached and again.checked == first.checked
    assert [(g.keep.id, g.reason, [m.record.id for m in g.members]) for g in again.groups] == [
        (g.keep.id, g.reason, [m.record.id for m in g.members]) for g in first.groups
    ]


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
import search.per_content, search.copies.decide
search.per_content.PARALLEL_FROM = search.copies.decide.PARALLEL_PAIRS = 2  # always workers
from search.dupes import find_duplicates
from search.query import QueryOptions, by_images
from store import Store
with Store.open({str(copy)!r}, writable=True) as store:
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
    from collections.abc import Iterator
    from contextlib import contextmanager

    from search.dupes import DupeOptions, find_duplicates
    from store import Store

    home, _ = copies_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        db.execute("DELETE FROM results_cache")
        db.execute("DELETE FROM content_cache")
    seen: dict[str, list[int]] = {}

    class Recorded:
        @contextmanager
        def step(self, name: str, total: int) -> Iterator[object]:
            done = seen.setdefault(name, [total, 0])
            yield lambda n: done.__setitem__(1, done[1] + n)

    with Store.open(copy, writable=True) as store:
        found = find_duplicates(store, DupeOptions(), Recorded())
    # The corner and the pasted copy fail on whole frames and are checked in a region.
    assert set(seen) == {"reading local features", "verifying candidate pairs",
                         "reading local features of regions", "verifying against regions",
                         "looking at the copies"}  # fmt: skip
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
    from search.copies.verify import matches, opencv

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


def test_candidates_name_the_view_that_matched() -> None:
    """A crop's whole matches a view of its source: the pair records which image holds it,
    and in which region, as decide needs to check it there."""
    rng = np.random.RandomState(3)
    dim, n = 32, 40
    vectors = unit(rng.randn(n, dim))
    views = unit(rng.randn(n, 5, dim))
    views[7, 3] = vectors[21]  # image 21 is region 3 of image 7 (7 holds 21: a < b)
    views[30, 1] = vectors[12]  # image 12 is region 1 of image 30 (b holds a)
    found = find_candidates(Descriptors(np.arange(1, n + 1), vectors, views))
    rows = {(int(a), int(b)): m for m, (a, b) in enumerate(found.pairs)}
    assert found.region[rows[(7, 21)]] == -(3 + 1)  # a (7) holds b's whole in its region 3
    assert found.region[rows[(12, 30)]] == 1 + 1  # b (30) holds a's whole in its region 1
    assert found.view_score[rows[(7, 21)]] > 0.5
    unrelated = [m for (a, b), m in rows.items() if {a, b} not in ({7, 21}, {12, 30})]
    assert all(found.view_score[m] < found.view_score[rows[(7, 21)]] for m in unrelated)


def _planted(vectors: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Views of each image (its regions: like it, not the same), and for every 7th image a
    view that is the whole of another image (a crop of that image): (views, cropped)."""
    n, dim = vectors.shape
    views = unit(vectors[:, None, :] + 1.2 * unit(rng.randn(n, 5, dim)))
    cropped = rng.permutation(n)[: len(views[::7])]
    views[::7, 2] = vectors[cropped]
    return views.astype(np.float16), cropped


def _exact(vectors: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, ...]:
    """Brute force: centred wholes, each image's density, and each pair's best copy score
    whole against view (either way)."""
    from search.copies.candidates import DENSITY_K, centred

    mean = vectors.mean(axis=0)
    wholes, flat = centred(vectors, mean), centred(views, mean)
    scores = wholes @ wholes.T
    np.fill_diagonal(scores, -np.inf)
    density = -np.partition(-scores, DENSITY_K - 1, axis=1)[:, DENSITY_K - 1]
    view = wholes @ flat[:, 0].T  # whole i against region 0 of j, then the best region
    for region in range(1, flat.shape[1]):
        np.maximum(view, wholes @ flat[:, region].T, out=view)
    view -= BETA * (density[:, None] + density[None, :]) / 2
    np.fill_diagonal(view, -np.inf)
    return wholes, density, np.maximum(view, view.T)


def test_candidates_are_exact_on_a_small_collection() -> None:
    """Below the exact size, every candidate's scores are the brute-force ones, and every
    whole-against-view pair that reaches VIEW_REJECT is found with its best view score.
    Unrelated photos with planted copies and crops: a few view pairs per image."""
    from search.copies.candidates import VIEW_REJECT, VIEWS

    rng = np.random.RandomState(11)
    n, dim = 300, 128
    vectors = unit(rng.randn(n, dim))
    vectors[1::5] = unit(vectors[::5] + 0.4 * unit(rng.randn(n // 5, dim)))  # near copies
    views, _ = _planted(vectors, rng)
    found = find_candidates(Descriptors(np.arange(n) + 1, vectors, views))
    wholes, density, best = _exact(vectors, views)
    a, b = found.pairs[:, 0], found.pairs[:, 1]
    assert np.allclose(found.cosine, np.einsum("md,md->m", vectors[a], vectors[b]), atol=1e-5)
    centred_cosine = np.einsum("md,md->m", wholes[a], wholes[b])
    assert np.allclose(found.score, centred_cosine - BETA * (density[a] + density[b]) / 2,
                       atol=1e-4)  # fmt: skip
    by_views = (found.found_by & VIEWS) > 0
    assert np.allclose(found.view_score[by_views], best[a, b][by_views], atol=1e-3)
    wanted = set(zip(*np.nonzero(np.triu(best >= VIEW_REJECT)), strict=True))
    assert n // 7 <= len(wanted) <= 5 * n
    assert wanted <= set(zip(a[by_views], b[by_views], strict=True))


def test_candidates_through_cells_find_the_crops() -> None:
    """Above the exact size (k-means cells), scores are never below the exact ones (an image's
    DENSITY_K-th neighbour is then the best of fewer), and planted crops are found through
    their views."""
    from search.copies.candidates import VIEWS
    from tests.helpers import clustered_with_duplicates

    rng = np.random.RandomState(12)
    n = 9000
    vectors = clustered_with_duplicates(n, dim=64, seed=4)
    views, cropped = _planted(vectors, rng)
    found = find_candidates(Descriptors(np.arange(n) + 1, vectors, views))
    wholes, density, best = _exact(vectors, views)
    a, b = found.pairs[:, 0], found.pairs[:, 1]
    exact = np.einsum("md,md->m", wholes[a], wholes[b]) - BETA * (density[a] + density[b]) / 2
    assert np.all(found.score >= exact - 1e-4)
    rows = {(int(x), int(y)): m for m, (x, y) in enumerate(found.pairs)}
    crops = [(min(i, j), max(i, j)) for i, j in zip(cropped, range(0, n, 7), strict=True) if i != j]
    hits = [rows.get(pair) for pair in crops]
    assert sum(m is not None and found.found_by[m] & VIEWS > 0 for m in hits) >= 0.99 * len(crops)
    assert all(found.view_score[m] >= best[pair] - 1e-3
               for pair, m in zip(crops, hits, strict=True) if m is not None)  # fmt: skip


def test_the_score_that_accepts_alone_eases_from_small_to_large_collections() -> None:
    card = copy_thresholds(find_card(DEFAULT_MODEL))
    sizes = [1, SMALL_COLLECTION, 150, 250, LARGE_COLLECTION, 10**6]
    accepts = [card.accept_in(n) for n in sizes]
    assert accepts[0] == accepts[1] == pytest.approx(card.small_accept)
    assert accepts[-2] == accepts[-1] == pytest.approx(card.accept)
    assert all(a > b for a, b in itertools.pairwise(accepts[1:5]))
    plain = copy_thresholds(None)  # uncalibrated: one fallback for every size
    assert plain.accept_in(10) == plain.accept_in(10**6) == FALLBACK_ACCEPT


def test_a_density_floor_keeps_a_small_collection_from_inflating_scores() -> None:
    """In a small collection every image's 20th neighbour is far, so every score runs high;
    the card's floor gives each image at least that density (exactly, against brute force)."""
    rng = np.random.RandomState(5)
    vectors = unit(rng.randn(40, 64))
    vectors[1] = at_cosine(vectors[0], 0.7, rng)  # two look-alikes, not copies
    ids = np.arange(1, 41)
    plain = find_candidates(Descriptors(ids, vectors))
    floored = find_candidates(Descriptors(ids, vectors), density_floor=0.5)
    _, density, _ = _exact(vectors, unit(vectors[:, None, :].repeat(5, axis=1)))
    a, b = floored.pairs[:, 0], floored.pairs[:, 1]
    raised = np.maximum(density, 0.5)
    lowered = plain.score - BETA * ((raised[a] - density[a]) + (raised[b] - density[b])) / 2
    assert np.allclose(floored.score, lowered, atol=1e-5)
    pair = plain.pairs.tolist().index([0, 1])
    card = copy_thresholds(find_card(DEFAULT_MODEL))
    assert plain.score[pair] >= card.accept > floored.score[pair]
    assert card.calibrated and 0 < card.density_floor < card.accept
