"""Photos pasted on another picture: the photo is the source, not the composite that shows it
(search/keeper/best.py: a seam around the shared part, or fewer pixels of it), and two photos
pasted on one background never end up in one group."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from search.cli import cli
from search.copies.verify import features_of, verify
from search.keeper.best import PASTED, SEAM, choose_best
from search.pixels import seam
from search.records import Edge
from tests.helpers import EXAMPLES
from tests.helpers import file_record as record

BACKGROUND = (640, 480)


def _photo(name: str, longer: int) -> Image.Image:
    image = Image.open(EXAMPLES / name).convert("RGB")
    image.thumbnail((longer, longer), Image.Resampling.LANCZOS)
    return image


def _composite(
    photo: Image.Image, background: Path, at: tuple[int, int], shown: float = 1.0
) -> Image.Image:
    """`photo` at `shown` of its size on a 640 x 480 crop of the `background` photo. The seam
    is seen where the two differ in tone along the photo's border (a dark sky, a star field
    here); a photo on a background of like tones and texture is not told from a crop's source
    (chelsea on coffee.jpg or astronaut.jpg: 0.33-0.62 of its border, under SEAM)."""
    base = ImageOps.fit(Image.open(background).convert("RGB"), BACKGROUND)
    size = (round(photo.width * shown), round(photo.height * shown))
    base.paste(photo.resize(size, Image.Resampling.LANCZOS), at)
    return base


def _pair(tmp_path: Path, shown: float) -> tuple[Path, Path, Edge]:
    photo = _photo("chelsea.jpg", 240)
    original, composite = tmp_path / "original.jpg", tmp_path / "composite.jpg"
    photo.save(original, quality=92)
    _composite(photo, EXAMPLES / "rocket.jpg", (300, 200), shown).save(composite, quality=92)
    check = verify(features_of(str(original)), features_of(str(composite)))
    assert check.verified
    return original, composite, Edge(1, 2, 0.4, 0.6, 0, check)


@pytest.mark.parametrize("shown", [1.0, 0.85])
def test_the_photo_is_kept_over_a_composite_that_shows_it(tmp_path: Path, shown: float) -> None:
    """Pasted at its own size (the seam decides) or a little smaller (fewer of its pixels):
    the composite's frame reaches beyond the photo, yet it is not the photo's source."""
    original, composite, edge = _pair(tmp_path, shown)
    kept, reason = choose_best([record(composite, 2), record(original, 1)], [edge])
    assert Path(kept.path).name == "original.jpg"
    assert PASTED in reason


def test_without_a_seam_a_composite_at_the_photos_size_would_contain_it(tmp_path: Path) -> None:
    """What decides at the photo's own size is the seam: with it taken away, the composite
    holds the same pixels of the photo and more, as a crop's source does."""
    original, composite, edge = _pair(tmp_path, 1.0)
    assert edge.check is not None and edge.check.seam_b >= SEAM  # the photo's frame, in b
    unseen = replace(edge, check=replace(edge.check, seam_a=0.0, seam_b=0.0))
    kept, reason = choose_best([record(composite, 2), record(original, 1)], [unseen])
    assert Path(kept.path).name == "composite.jpg" and "contains" in reason


def test_a_crops_border_is_no_seam(tmp_path: Path) -> None:
    """A centre crop's border runs through one photo: its source keeps it as a crop."""
    photo = _photo("astronaut.jpg", 400)
    original, crop = tmp_path / "original.jpg", tmp_path / "crop.jpg"
    photo.save(original, quality=92)
    photo.crop((80, 80, 320, 320)).save(crop, quality=92)
    check = verify(features_of(str(original)), features_of(str(crop)))
    assert check.verified and check.seam_a < SEAM
    edge = Edge(1, 2, 0.4, 0.6, 0, check)
    kept, reason = choose_best([record(crop, 2), record(original, 1)], [edge])
    assert Path(kept.path).name == "original.jpg" and "contains" in reason


def test_seam_counts_the_border_where_the_pixels_step() -> None:
    flat = np.full((60, 80), 100, dtype=np.uint8)
    pasted = flat.copy()
    pasted[20:40, 30:60] = 220  # a bright picture on a plain one
    square = np.array([[30, 20], [60, 20], [60, 40], [30, 40]], dtype=np.float64)
    assert seam(pasted, square) == 1.0
    assert seam(flat, square) == 0.0
    # A side outside the frame is not looked at; none inside: nothing to say.
    assert seam(pasted, square + np.array([200.0, 0.0])) == 0.0


WALL = Path(__file__).parent / "data" / "graf1.jpg"  # a graffiti wall: texture of like tones


@pytest.mark.parametrize(
    "background",
    [
        EXAMPLES / "hubble_deep_field.jpg",
        pytest.param(WALL, marks=pytest.mark.xfail(strict=True, reason=(
            "known limit: on a textured background of like tones the seam is not seen (cat: "
            "0.21 of its border), the composite is kept as the cat's source, and the two "
            "composites, one wall twice (241 keypoints), put the cat and the cup's composite "
            "(and graf3, the wall from another viewpoint) in one group"))),
    ],
    ids=["star-field", "graffiti-wall"],
)  # fmt: skip
def test_each_photo_is_kept_and_grouped_with_its_composite_alone(
    tmp_path: Path, background: Path
) -> None:
    """Two photos, each also pasted on one background photo, through `index` and `dupes`:
    every group holds one photo, kept, and its composite."""
    photos = tmp_path / "photos"
    photos.mkdir()
    cat, cup = _photo("chelsea.jpg", 280), _photo("coffee.jpg", 280)
    cat.save(photos / "cat.jpg", quality=92)
    cup.save(photos / "cup.jpg", quality=92)
    _composite(cat, background, (25, 30)).save(photos / "cat-pasted.jpg", quality=90)
    _composite(cup, background, (340, 270)).save(photos / "cup-pasted.jpg", quality=90)
    for name in ("astronaut.jpg", "rocket.jpg"):
        shutil.copy(EXAMPLES / name, photos / name)
    for name in ("graf1.jpg", "graf3.jpg"):
        if background.name != name:
            shutil.copy(WALL.parent / name, photos / name)
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    assert runner.invoke(cli, [*home, "index", str(photos)]).exit_code == 0
    found = runner.invoke(cli, [*home, "dupes", "--json"])
    assert found.exit_code == 0, found.output
    groups = {
        Path(g["keep"]["path"]).name: sorted(Path(m["path"]).name for m in g["members"])
        for g in json.loads(found.output)["groups"]
    }
    assert groups == {"cat.jpg": ["cat-pasted.jpg"], "cup.jpg": ["cup-pasted.jpg"]}
