"""Every hostile file of a real photo collection: reported (file + reason), the run goes on,
and the index stays consistent. Files are generated in tmp_path."""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from indexer.decode import Preprocess, decode, open_rgb
from indexer.options import IndexOptions
from indexer.pipeline import IndexReport, index_folders
from store import Store
from tests.helpers import shapes

PREP = Preprocess((32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
INVERSE = {  # stored pixels such that applying the EXIF orientation gives the upright image
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb's calling card."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def index(home: Path, folder: Path, options: IndexOptions) -> IndexReport:
    return index_folders(home, [str(folder)], options)


def consistent(home: Path) -> dict[str, int]:
    with Store.open(home) as store:
        assert store.index.count == store.catalog.count()
        return {path: r.id for path, r in store.catalog.file_states().items()}


def mean_rgb(data: bytes) -> np.ndarray:
    image, _, _ = open_rgb(data, "x")
    return np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)


# -- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "AVIF", "HEIF", "TIFF", "PNG"])
@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientations_are_applied(fmt: str, orientation: int) -> None:
    upright = shapes(4, size=(120, 60))
    exif = Image.Exif()
    exif[0x0112] = orientation
    lossy = {"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF", "HEIF") else {}
    data = encode(upright.transpose(INVERSE[orientation]), fmt, exif=exif.tobytes(), **lossy)
    image, width, height = open_rgb(data, f"x.{fmt.lower()}")
    assert (width, height) == (120, 60) and image.size == (120, 60)
    difference = np.abs(np.asarray(image, float) - np.asarray(upright, float)).mean()
    assert difference < 12, f"{fmt} orientation {orientation} not applied"


def test_jpeg_draft_records_the_upright_full_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    big = shapes(1, size=(600, 2000)).transpose(Image.Transpose.ROTATE_90)  # stored 2000 x 600
    image, width, height = open_rgb(encode(big, "JPEG", exif=exif.tobytes()), "x", (32, 32))
    assert (width, height) == (600, 2000)
    assert image.width < 600  # decoded at a reduced DCT scale


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_images_are_scaled_not_clipped(fmt: str) -> None:
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    deep = encode(Image.fromarray(ramp), fmt)
    shallow = encode(Image.fromarray((ramp // 257).astype(np.uint8)), fmt)
    assert Image.open(io.BytesIO(deep)).mode.startswith("I")
    assert np.allclose(mean_rgb(deep), mean_rgb(shallow), atol=1.0)  # ~127, not ~255


def test_cmyk_jpeg_palette_and_grey_alpha() -> None:
    red = Image.new("RGB", (16, 16), (230, 20, 20))
    assert mean_rgb(encode(red.convert("CMYK"), "JPEG", quality=95))[0] > 200
    palette = red.convert("P", palette=Image.Palette.ADAPTIVE)
    assert np.allclose(mean_rgb(encode(palette, "PNG")), (230, 20, 20), atol=3)
    la = Image.new("LA", (16, 16), (0, 0))  # black, fully transparent
    assert np.allclose(mean_rgb(encode(la, "PNG")), 255)  # over white


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_animated_and_multi_frame_files_give_their_first_frame(fmt: str) -> None:
    red, green, blue = (
        Image.new("RGB", (16, 16), c) for c in [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    )
    data = encode(red, fmt, save_all=True, append_images=[green, blue])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    r, g, b = mean_rgb(data)
    assert r > 200 and g < 50 and b < 50


def test_decompression_bomb_is_refused_from_its_header() -> None:
    from indexer.errors import UnreadableImage

    with pytest.raises(UnreadableImage, match=r"too many pixels \(100000 x 100000; the limit is"):
        decode(png_declaring(100_000, 100_000), "bomb.png", PREP)
    small = encode(shapes(1, size=(64, 48)), "PNG")
    with pytest.raises(UnreadableImage, match="--max-pixels"):
        decode(small, "x.png", PREP, max_pixels=1000)
    assert decode(small, "x.png", PREP, max_pixels=64 * 48).width == 64


# -- the pipeline ---------------------------------------------------------------------------


def test_a_hostile_collection_is_indexed_around_its_bad_files(
    tmp_path: Path, home: Path, tiny_options: IndexOptions
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    good = {
        "cmyk.jpg": encode(shapes(1).convert("CMYK"), "JPEG"),
        "deep.png": encode(Image.fromarray(np.full((40, 50), 30000, np.uint16)), "PNG"),
        "palette.gif": encode(shapes(2).convert("P"), "GIF"),
        "alpha.png": encode(shapes(3).convert("RGBA"), "PNG"),
        "anim.webp": encode(shapes(4), "WEBP", save_all=True, append_images=[shapes(5)]),
        "photo.heic": encode(shapes(6), "HEIF"),
        "photo.avif": encode(shapes(7), "AVIF"),
        "pages.tiff": encode(shapes(8), "TIFF", save_all=True, append_images=[shapes(9)]),
        "huge.jpg": encode(shapes(10, size=(6000, 4000)), "JPEG", quality=80),
        ("x" * 250) + ".png": encode(shapes(11), "PNG"),  # a 254-byte name
    }
    bad = {
        "empty.jpg": (b"", "empty file"),
        "truncated.jpg": (encode(shapes(12), "JPEG")[:300], "not a readable image"),
        "truncated.png": (encode(shapes(13), "PNG")[:100], "not a readable image"),
        "text.jpg": (b"hello\n", "not a readable image"),
        "bomb.png": (png_declaring(100_000, 100_000), "too many pixels"),
    }
    for name, data in good.items():
        (folder / name).write_bytes(data)
    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    report = index(home, folder, tiny_options)
    failed = {Path(f.path).name: f.error for f in report.failed}
    assert set(failed) == set(bad)
    for name, (_, reason) in bad.items():
        assert failed[name].startswith(reason), (name, failed[name])
    assert report.added == len(good)
    ids = consistent(home)
    assert {Path(p).name for p in ids} == set(good)
    with Store.open(home) as store:
        huge = store.catalog.record_by_path(str(folder / "huge.jpg"))
        assert (huge.width, huge.height) == (6000, 4000)
        assert len(store.catalog.failures()) == len(bad)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")
def test_non_utf8_file_names(tmp_path: Path, home: Path, tiny_options: IndexOptions) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.png"  # Latin-1 bytes: not valid UTF-8
    shapes(1).save(os.fsdecode(raw), "PNG")
    (folder / "plain.png").write_bytes(encode(shapes(2), "PNG"))
    report = index(home, folder, tiny_options)
    assert report.added == 2 and not report.failed
    ids = consistent(home)
    assert os.fsdecode(raw) in ids
    again = index(home, folder, tiny_options)  # found again by its exact bytes: unchanged
    assert (again.unchanged, again.embedded) == (2, 0)
    os.remove(raw)
    assert index(home, folder, tiny_options).removed == 1


def test_symlink_loops_and_links_to_one_file(
    tmp_path: Path, home: Path, tiny_options: IndexOptions
) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shapes(1).save(folder / "sub" / "a.png")
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "link-to-a.png").symlink_to(folder / "sub" / "a.png")
    os.link(folder / "sub" / "a.png", folder / "hardlink.png")
    report = index(home, folder, tiny_options)
    assert report.added == 1 and report.embedded == 1
    assert len(consistent(home)) == 1


def test_unreadable_file(
    tmp_path: Path, home: Path, tiny_options: IndexOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shapes(1).save(folder / "locked.png")
    shapes(2).save(folder / "open.png")
    if os.geteuid() != 0:  # a real permission bit; root reads anything, so simulate it there
        (folder / "locked.png").chmod(0)
    else:
        real_open = os.open

        def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
            if str(file).endswith("locked.png"):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded)
    report = index(home, folder, tiny_options)  # workers=0: decoding runs in this process
    assert [(Path(f.path).name, f.error) for f in report.failed] == [
        ("locked.png", "cannot read the file (Permission denied)")
    ]
    assert report.added == 1
    consistent(home)


def test_files_deleted_or_rewritten_between_scan_and_decode(
    tmp_path: Path, home: Path, tiny_options: IndexOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.session

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        shapes(i).save(folder / f"{i}.png")
    real_make_plan = indexer.session.make_plan

    def plan_then_change(*args: Any) -> Any:
        plan = real_make_plan(*args)
        (folder / "1.png").unlink()
        shapes(20, size=(50, 50)).save(folder / "2.png")  # other size: stat differs from scan
        return plan

    monkeypatch.setattr(indexer.session, "make_plan", plan_then_change)
    report = index(home, folder, tiny_options)
    assert [(Path(f.path).name, f.error) for f in report.failed] == [
        ("1.png", "the file disappeared during the run")
    ]
    ids = consistent(home)
    assert len(ids) == 3
    with Store.open(home) as store:
        record = store.catalog.record_by_path(str(folder / "2.png"))
        assert (record.width, record.height) == (50, 50)
        assert record.size == (folder / "2.png").stat().st_size  # the stat of what was read
    monkeypatch.undo()
    again = index(home, folder, tiny_options)
    assert (again.embedded, again.unchanged, len(again.failed)) == (0, 3, 0)
    with Store.open(home) as store:
        assert store.catalog.failures() == {}  # the vanished file's failure was pruned


def test_max_pixels_option_reaches_the_workers(
    tmp_path: Path, home: Path, tiny_options: IndexOptions
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shapes(1, size=(100, 100)).save(folder / "big.png")
    shapes(2, size=(20, 20)).save(folder / "small.png")
    options = dataclasses.replace(tiny_options, workers=1, max_pixels=5_000)
    report = index(home, folder, options)
    assert [Path(f.path).name for f in report.failed] == ["big.png"]
    assert report.added == 1
