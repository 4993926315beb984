"""Copy detection in regions: a corner crop or a pasted photo is checked in the region of the
other image that holds it, by dupes and by queries, and a second look finds the region whose
pixels the crop has when the best-scoring view named another."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from search.cli import cli
from search.copies.candidates import GLOBAL, VIEWS, Candidates
from search.copies.decide import REGION_FROM, SECOND_LOOK_FROM, Decided, Thresholds, decide
from search.copies.verify import Features, features_of, region_likeness, verify
from search.steps import SILENT, Steps
from store import ImageRecord
from tests.helpers import EXAMPLES, RecordedSteps

PHOTOS = [EXAMPLES / n for n in ("coffee.jpg", "chelsea.jpg", "astronaut.jpg", "rocket.jpg")]


def _rocket_and_corner(folder: Path) -> tuple[list[Path], int, int]:
    """A small rocket photo, its bottom-right quarter (region 3) and an unrelated photo."""
    image = Image.open(EXAMPLES / "rocket.jpg").convert("RGB")
    image.thumbnail((480, 480))
    w, h = image.size
    paths = [folder / "rocket.png", folder / "corner.jpg", folder / "coffee.jpg"]
    image.save(paths[0])
    image.crop((w - w // 2, h - h // 2, w, h)).save(paths[1], quality=90)
    Image.open(PHOTOS[0]).convert("RGB").resize((w, h)).save(paths[2])
    assert not verify(features_of(str(paths[0])), features_of(str(paths[1]))).verified
    return paths, w, h


def _decide(paths: list[Path], w: int, h: int, candidates: Candidates,
            made: list[tuple[str, int]], steps: Steps = SILENT) -> Decided:  # fmt: skip
    records = {i + 1: ImageRecord(i + 1, str(p), 1, 1, f"h{i}", w, h) for i, p in enumerate(paths)}

    def features_for(orders):  # type: ignore[no-untyped-def]
        made.extend((recipe.kind, len(wanted)) for recipe, wanted in orders)
        return [({r.id: recipe.make(r.path) for r in wanted}, []) for recipe, wanted in orders]

    return decide(candidates, records, Thresholds(0.6, 0.3), features_for, steps)


def _candidates(pairs: list[list[int]], score: list[float], view_score: list[float],
                region: list[int]) -> Candidates:  # fmt: skip
    f32, n = np.float32, len(pairs)
    return Candidates(
        ids=np.arange(1, 1 + max(max(p) for p in pairs) + 1),
        pairs=np.array(pairs),
        cosine=np.array(score, f32),
        score=np.array(score, f32),
        view_score=np.array(view_score, f32),
        turn_score=np.full(n, -np.inf, f32),
        found_by=np.array([GLOBAL | VIEWS] * n, np.uint8),
        angle=np.zeros(n, np.int16),
        region=np.array(region, np.int8),
    )


def test_a_corner_crop_too_small_in_its_source_verifies_in_the_region(tmp_path: Path) -> None:
    """A corner crop of a small photo keeps too few keypoints in the photo's whole frame; in
    the frame of the region that holds it, it verifies, and the check is reported in whole
    frames (the crop covers a quarter of its source, at half the scale) for the keeper."""
    from indexer.decode import VIEW_BOXES

    paths, w, h = _rocket_and_corner(tmp_path)
    made: list[tuple[str, int]] = []
    # Scores below `reject`: only the views bring them in; the rocket's region 3, coffee's 1.
    candidates = _candidates([[0, 1], [1, 2]], [0.1, 0.1], [0.5, 0.5], [-(3 + 1), 1 + 1])
    steps = RecordedSteps()
    decided = _decide(paths, w, h, candidates, made, steps)
    assert [(e.a, e.b) for e in decided.edges] == [(1, 2)]  # the corner; not coffee
    # Coffee's region 1 looks nothing like the corner, pixel for pixel: it is not even read.
    assert made == [("local_features", 3), ("local_features_view3", 1)]
    assert steps.seen == {"verifying candidate pairs": [2, 2], "verifying against regions": [1, 1]}
    check = decided.edges[0].check
    assert check is not None and check.verified
    assert check.in_region and check.how == "verified in a region"  # what its member says
    # a is the source: b's frame shows half its width, so b shows it twice as large ...
    assert 1.6 < check.scale < 2.4
    assert check.coverage_a <= 0.25 + 1e-6 < check.coverage_b  # ... and a quarter of it
    assert VIEW_BOXES[3] == (0.5, 0.5, 1.0, 1.0)


def test_region_likeness_names_the_quadrant_a_crop_was_cut_from(tmp_path: Path) -> None:
    """Pixel for pixel, each quarter of a photo (saved again as JPEG) looks most like the
    region it was cut from; the thumbnail behind it survives the features' cache bytes."""
    image = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")
    w, h = image.size
    image.save(tmp_path / "whole.png")
    whole = features_of(str(tmp_path / "whole.png"))
    assert Features.from_bytes(whole.to_bytes()).thumb.tolist() == whole.thumb.tolist()
    assert whole.thumb.shape == (whole.shape[0] // 4, whole.shape[1] // 4)
    other = features_of(str(PHOTOS[1]))
    for region, (x, y) in enumerate([(0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2)]):
        path = tmp_path / f"quarter{region}.jpg"
        image.crop((x, y, x + w // 2, y + h // 2)).save(path, quality=85)
        likeness = region_likeness(features_of(str(path)), whole)
        assert int(np.argmax(likeness)) == region and likeness[region] > 0.9, likeness
        assert region_likeness(features_of(str(path)), other).max() < likeness[region] - 0.3


def test_a_second_look_finds_a_corner_crop_whose_best_view_named_another_region(
    tmp_path: Path,
) -> None:
    """The corner's best view named the rocket's region 0 (as a star field's can) with a view
    score below the region check's floor: the corner, joined to nothing, is looked at again in
    the region whose pixels it has (3) and verifies there. An image already joined to another
    is not looked at again."""
    paths, w, h = _rocket_and_corner(tmp_path)
    assert SECOND_LOOK_FROM <= 0.27 < REGION_FROM
    made: list[tuple[str, int]] = []
    candidates = _candidates([[0, 1], [1, 2]], [0.1, 0.1], [0.27, 0.27], [-(0 + 1), 1 + 1])
    decided = _decide(paths, w, h, candidates, made)
    assert [(e.a, e.b) for e in decided.edges] == [(1, 2)]  # the corner; not coffee
    # The rocket's region 3, where the corner's pixels are, not region 0 that its view named
    # (coffee's region most like the corner may be looked at too, and fail).
    assert made[0] == ("local_features", 3) and ("local_features_view3", 1) in made
    assert ("local_features_view0", 1) not in made
    check = decided.edges[0].check
    assert check is not None and 1.6 < check.scale < 2.4
    # Joined to a copy of itself (score above accept), the corner gets no second look.
    (tmp_path / "corner-copy.jpg").write_bytes(paths[1].read_bytes())
    paths.append(tmp_path / "corner-copy.jpg")
    made.clear()
    candidates = _candidates([[0, 1], [1, 3]], [0.1, 0.9], [0.27, -np.inf], [-(0 + 1), 0])
    decided = _decide(paths, w, h, candidates, made)
    assert [(e.a, e.b) for e in decided.edges] == [(2, 4)]
    # Whole-frame features only (of the pair in the band, and of the pair accepted by its
    # score, checked for a contradiction): no region was looked at.
    assert made == [("local_features", 3)]


def test_a_query_that_is_a_small_corner_of_a_photo_is_verified_in_its_region(
    tmp_path: Path,
) -> None:
    """The corner of a small photo has too few keypoints in the photo's whole frame; the query
    is checked against the photo's region that matches it best and comes first, verified."""
    image = Image.open(EXAMPLES / "rocket.jpg").convert("RGB")
    image.thumbnail((480, 480))
    folder = tmp_path / "photos"
    folder.mkdir()
    image.save(folder / "rocket.png")
    for photo in PHOTOS:
        Image.open(photo).convert("RGB").save(folder / photo.name, quality=90)
    w, h = image.size
    corner = tmp_path / "corner.jpg"
    image.crop((w - w // 2, h - h // 2, w, h)).save(corner, quality=90)
    assert not verify(features_of(str(folder / "rocket.png")), features_of(str(corner))).verified
    home = tmp_path / "home"
    runner = CliRunner()
    assert runner.invoke(cli, ["--home", str(home), "index", str(folder)]).exit_code == 0
    result = runner.invoke(cli, ["--home", str(home), "query", str(corner), "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)["results"][0]
    assert Path(top["path"]).name == "rocket.png" and top["verified"] > 0, top


def test_a_query_joined_to_nothing_looks_again_where_its_pixels_are(tmp_path: Path) -> None:
    """A query that verified with no candidate is checked again in the region whose pixels
    look most like the other whole: the photo's quarter it was cut from, or its own quarter the
    photo was pasted in; a region already tried is not tried twice."""
    from search.copies.rerank import _second_look, _Try
    from store import Hit

    photo = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB")
    photo.thumbnail((400, 400))
    w, h = photo.size
    photo.save(tmp_path / "photo.png")
    photo.crop((0, h // 2, w // 2, h)).save(tmp_path / "quarter.jpg", quality=90)  # region 2
    canvas = Image.new("RGB", (2 * w, 2 * h), (30, 90, 160))
    canvas.paste(photo, (w, 0))  # the canvas's region 1
    canvas.save(tmp_path / "canvas.jpg", quality=90)
    other = Image.open(PHOTOS[2]).convert("RGB")
    other.thumbnail((400, 400))
    other.save(tmp_path / "other.png")
    wholes = {1: features_of(str(tmp_path / "photo.png")),
              2: features_of(str(tmp_path / "other.png"))}  # fmt: skip
    hits = [Hit(2, 0.9), Hit(1, 0.8)]

    def looks(query: str, tried: list[_Try]) -> list[tuple[int, int, bool]]:
        found = _second_look(features_of(str(tmp_path / query)), wholes, hits, tried)
        return [(t.hit.id, t.region, t.theirs) for t in found]

    assert looks("quarter.jpg", []) == [(1, 2, True)]
    assert looks("quarter.jpg", [_Try(hits[1], 2, True)]) == []
    assert looks("canvas.jpg", []) == [(1, 1, False)]
