"""Two photos of one scene are not copies of each other: a pair accepted by its copy score is
refused when local features contradict it (search/copies/decide.py: `contradicted`), and a
copy too soft to verify still stands on its score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import search.copies.decide as decide
from search.cli import cli
from search.copies.decide import RICH, contradicted
from search.copies.verify import Features, features_of, verify
from search.records import Verification
from tests.helpers import EXAMPLES

DATA = Path(__file__).parent / "data"


def _wall(folder: Path) -> Path:
    """graf1 and graf3 (one wall, two viewpoints), a q60 copy of graf1, and three photos."""
    folder.mkdir()
    for name in ("graf1.jpg", "graf3.jpg"):
        shutil.copy(DATA / name, folder / name)
    Image.open(DATA / "graf1.jpg").save(folder / "graf1-copy.jpg", quality=60)
    for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def _groups(home: Path, photos: Path) -> list[set[str]]:
    runner = CliRunner()
    assert runner.invoke(cli, ["--home", str(home), "index", str(photos)]).exit_code == 0
    # A copy score low enough that the two viewpoints are accepted by their score alone
    # (they score about 0.4 here): what local features say decides.
    found = runner.invoke(cli, ["--home", str(home), "dupes", "--copy-threshold", "0.3", "--json"])
    assert found.exit_code == 0, found.output
    return [
        {Path(m["path"]).name for m in [g["keep"], *g["members"]]}
        for g in json.loads(found.output)["groups"]
    ]


def test_two_viewpoints_of_one_wall_are_not_grouped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = _wall(tmp_path / "photos")
    one, other = features_of(str(photos / "graf1.jpg")), features_of(str(photos / "graf3.jpg"))
    check = verify(one, other)
    assert not check.verified and min(len(one.points), len(other.points)) >= RICH
    # The copy of graf1 stays with it; graf3, a photo of its own, is in no group.
    assert _groups(tmp_path / "home", photos) == [{"graf1.jpg", "graf1-copy.jpg"}]
    # Without the check, the score alone would have put the other viewpoint in the group.
    monkeypatch.setattr(decide, "RICH", 10**6)
    assert _groups(tmp_path / "unchecked", photos) == [{"graf1.jpg", "graf1-copy.jpg", "graf3.jpg"}]


def _features(keypoints: int) -> Features:
    rng = np.random.default_rng(keypoints)
    return Features(
        rng.uniform(0, 256, (keypoints, 2)).astype(np.float32),
        rng.uniform(0, 255, (keypoints, 128)).astype(np.float32),
        (256, 256),
    )


def test_only_images_with_keypoints_to_spare_can_contradict_a_score() -> None:
    failed, passed = Verification(3, 0.01, 0.01, 1.0, False), Verification(40, 0.8, 0.8, 1.0, False)
    rich, poor = _features(RICH), _features(RICH // 4)
    assert contradicted(failed, rich, _features(RICH + 50))
    # A q10 or blurred copy keeps few keypoints: its failing check says nothing.
    assert not contradicted(failed, rich, poor) and not contradicted(failed, poor, rich)
    assert not contradicted(passed, rich, rich)
