"""`imgsearch orient`: angles from the checkpoint, the EXIF fix without re-encoding, the
journal and undo. The rotation head is a random-weight checkpoint biased towards one class."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image, ImageOps

from indexer.errors import InvalidOption
from indexer.orientation import ANGLES, class_angles
from search.actions.orient_fix import Fix, _turned, combined_orientation
from search.cli import cli
from tests.helpers import shapes
from tests.seeds import Served

ROTNET_WEIGHTS = "rope_vit_reg8_so150m_p14_swiglu_rms_ap_rotnet-capi"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_class_angles_come_from_the_class_names() -> None:
    assert class_angles(("0", "90", "180", "270")) == (0, 90, 180, 270)
    assert class_angles(("270", "0", "90", "180")) == (270, 0, 90, 180)
    assert class_angles(("up", "left", "down", "right")) == ANGLES  # not angles: index x 90
    with pytest.raises(InvalidOption, match="not a rotation model"):
        class_angles(("cat", "dog"))


def jpeg(orientation: int, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    shapes(7, size).save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def shown(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(ImageOps.exif_transpose(image))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("angle", [90, 180, 270])
def test_exif_fix_shows_the_picture_turned_back_without_reencoding(
    tmp_path: Path, orientation: int, angle: int
) -> None:
    before = jpeg(orientation)
    path = tmp_path / "a.jpg"
    path.write_bytes(before)
    after = _turned(Fix(str(path), angle, "exif", len(before), 0))
    expected = np.asarray(Image.fromarray(shown(before)).rotate(-angle, expand=True))
    assert np.array_equal(shown(after), expected)
    with Image.open(io.BytesIO(before)) as a, Image.open(io.BytesIO(after)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # same stored pixels: no re-encode
    back = combined_orientation(combined_orientation(orientation, angle), 360 - angle)
    assert back == orientation


def biased_rotnet(served: Served, folder: Path, favourite: str) -> Path:
    """The served tiny rotnet with its head biased so that every image is `favourite`."""
    checkpoint = torch.load(served.folder / f"{ROTNET_WEIGHTS}.pt", weights_only=True)
    bias = torch.full((4,), -20.0)
    bias[checkpoint["class_to_idx"][favourite]] = 20.0
    checkpoint["state"]["classifier.bias"] = bias
    path = folder / "biased-rotnet.pt"
    torch.save(checkpoint, path)
    return path


def test_orient_reports_fixes_and_undoes(tmp_path: Path, seed_server: Served) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(jpeg(1))
    (photos / "b.jpg").write_bytes(jpeg(6))
    shapes(3).save(photos / "c.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    originals = {p.name: p.read_bytes() for p in photos.iterdir()}
    weights = biased_rotnet(seed_server, tmp_path, "90")
    home = str(tmp_path / "home")
    base = ("--home", home, "orient", str(photos), "--weights", str(weights))

    rows = json.loads(run(*base, "--json").stdout)
    assert sorted(Path(r["path"]).name for r in rows) == ["a.jpg", "b.jpg", "c.png"]
    for r in rows:
        assert r["angle"] == 90 and r["confidence"] > 0.99
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-5)

    dry = run(*base, "--fix")
    assert dry.exit_code == 0 and "dry run: 3 files would change" in dry.stderr
    assert "skipped" in dry.stderr and "broken.jpg" in dry.stderr
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == originals

    done = run(*base, "--fix", "--yes")
    assert done.exit_code == 0, done.output
    journal = done.stderr.split("journal: ")[1].split(" ")[0]
    for name in ("a.jpg", "b.jpg"):
        turned = np.asarray(Image.fromarray(shown(originals[name])).rotate(-90, expand=True))
        assert np.array_equal(shown((photos / name).read_bytes()), turned)
    with Image.open(photos / "c.png") as png:  # re-encoded, losslessly
        expected = Image.open(io.BytesIO(originals["c.png"])).rotate(-90, expand=True)
        assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(expected))

    undone = run("undo", journal)
    assert undone.exit_code == 0, undone.output
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == originals


def test_orient_refuses_a_model_without_a_rotation_head(
    tmp_path: Path, seed_registry: Served
) -> None:
    shapes(1).save(tmp_path / "x.png")
    result = run("--home", str(tmp_path / "home"), "orient", str(tmp_path / "x.png"),
                 "--model", "pe-core-s16")  # fmt: skip
    assert result.exit_code == 2
    assert "no classification head" in result.stderr
