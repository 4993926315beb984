"""Which of two turned saves of one picture is kept: the rotation model (the `rotnet` card)
decides when its weights are in the cache and it is sure, then the group, then file size."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import indexer.orientation as orientation
from indexer.embedder import Embedder
from indexer.errors import UnreadableImage
from indexer.models import find_card, weights_file
from indexer.orientation import upright_estimator
from search.copies.dupes import DupeOptions, find_duplicates
from search.keeper.best import MODEL_UPRIGHT, choose_best
from store import Embedded, FileStat, ImageFile, ImageRecord, NewIndex, Store
from tests.helpers import EXAMPLES
from tests.helpers import file_record as record
from tests.seeds import Served


def _turned_pair(folder: Path) -> tuple[Path, Path]:
    """chelsea as a PNG, and the same pixels turned by 90 degrees in a smaller PNG."""
    image = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB")
    original, turned = folder / "chelsea.png", folder / "chelsea-turned.png"
    image.save(original, compress_level=0)
    image.transpose(Image.Transpose.ROTATE_90).save(turned, compress_level=9)
    assert turned.stat().st_size < original.stat().st_size
    return original, turned


def test_the_rotation_model_decides_between_turned_saves_when_it_is_sure(
    tmp_path: Path,
) -> None:
    original, turned = _turned_pair(tmp_path)
    records = [record(turned, 1), record(original, 2)]
    asked: list[str] = []

    def model(upright_one: float, other: float) -> orientation.UprightOf:
        def upright(path: str) -> float | None:
            asked.append(Path(path).name)
            return upright_one if path == str(original) else other

        return upright

    kept, reason = choose_best(records, [], upright=model(0.97, 0.01))
    assert kept.path == str(original) and reason == "upright, as the rotation model sees it"
    assert sorted(asked) == ["chelsea-turned.png", "chelsea.png"]  # each asked once
    # Unsure (closer than MODEL_UPRIGHT), or no model: the two say nothing of orientation.
    for unsure in (model(0.40, 0.40 - MODEL_UPRIGHT / 2), None):
        kept, reason = choose_best(records, [], upright=unsure)
        assert kept.path == str(turned) and "same pixels in a smaller file" in reason
    # Copies that are not each other's turn are never asked about.
    bright = tmp_path / "bright.jpg"
    Image.open(EXAMPLES / "coffee.jpg").save(bright, quality=80)
    asked.clear()
    choose_best([record(bright, 3), record(original, 2)], [], upright=model(0.9, 0.1))
    assert asked == []


def test_dupes_asks_the_rotation_model_only_when_its_weights_are_here(
    tmp_path: Path,
    seed_registry: Served,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No weights: no model (nothing downloaded). The tiny rotnet in the cache: `dupes` loads
    it and asks it about the two turned saves alone. Damaged weights: said once, not used."""
    photos = tmp_path / "photos"
    photos.mkdir()
    original, turned = _turned_pair(photos)
    Image.open(EXAMPLES / "coffee.jpg").save(photos / "coffee.jpg", quality=80)
    assert upright_estimator() is None
    card = find_card("rotnet")
    assert card is not None and card.weights is not None
    path = weights_file(card)
    assert path is not None and not path.exists()
    path.parent.mkdir(parents=True)
    shutil.copy(seed_registry.folder / f"{card.weights}.pt", path)
    assert upright_estimator() is not None

    asked: list[str] = []
    real = orientation.predict

    def spy(
        files: Sequence[FileStat], embedder: Embedder, batch_size: int
    ) -> Iterator[orientation.Orientation | UnreadableImage]:
        asked.extend(Path(f.path).name for f in files)
        return real(files, embedder, batch_size)

    monkeypatch.setattr(orientation, "predict", spy)
    home = tmp_path / "home"
    with Store.writer(home, new=NewIndex("synthetic", 4)) as store:
        _add(store, [original, turned, photos / "coffee.jpg"])
    with Store.open(home) as store:
        found = find_duplicates(store, DupeOptions(threshold=0.99))
    (group,) = found.groups
    assert {Path(r.path).name for r in group.files} == {"chelsea.png", "chelsea-turned.png"}
    assert sorted(asked) == ["chelsea-turned.png", "chelsea.png"]
    path.write_bytes(b"not a checkpoint")
    asked.clear()
    with Store.open(home) as store:
        again = find_duplicates(store, DupeOptions(threshold=0.99))
    assert [g.files for g in again.groups] == [group.files] and asked == []
    assert "rotation model rotnet could not be loaded" in caplog.text


def _add(store: Store, paths: list[Path]) -> None:
    """The files with vectors that make the two chelsea files one pair (cosine 1.0)."""
    rows = []
    for n, path in enumerate(paths):
        vector = np.zeros(4, np.float32)
        vector[0 if "chelsea" in path.name else 1] = 1.0
        rec: ImageRecord = record(path, n + 1)
        rows.append(
            Embedded(
                ImageFile(str(path), rec.size, rec.mtime_ns, rec.content_hash),
                rec.width,
                rec.height,
                vector,
            )
        )
    store.commit_batch(rows, [])
    store.flush()


def test_the_file_the_camera_wrote_is_upright_among_turned_saves(tmp_path: Path) -> None:
    """Without a rotation model: the copy that carries the camera's EXIF (make, model) is what
    the camera wrote, shown as it meant; a turned save of its pixels lost it."""
    image = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB")
    original, turned = tmp_path / "camera.png", tmp_path / "turned.png"
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    image.save(original, compress_level=0, exif=exif.tobytes())
    image.transpose(Image.Transpose.ROTATE_270).save(turned, compress_level=9)
    assert turned.stat().st_size < original.stat().st_size
    kept, reason = choose_best([record(turned, 1), record(original, 2)], [])
    assert kept.path == str(original) and reason == "as the camera saved it"
