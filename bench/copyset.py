"""A copydays-style set built from the development photos: originals, edited copies, distractors.

    bash ../shared/data/devphotos/fetch.sh ~/devphotos
    python bench/copyset.py --photos ~/devphotos --out ~/copyset      # writes dev/ and heldout/

Originals are the general photos at least MIN_SIDE pixels on their shorter side plus some
astronomy photos (copies of one star field among others are the hard case). As a user holds
them: by a hash of their name, re-encoded as lossy WebP, AVIF or JPEG in FORMAT_SHARES, the
rest copied byte for byte in their own format. Each gets
EDITS_PER_ORIGINAL edits of the original as the user has it, drawn so that every edit occurs
about equally often; turned copies are saved as PNG (lossless pixels of a lossy original), the
others as JPEG. SHARED_CANVAS_PAIRS pairs of originals are each also pasted on one photo (two
composites sharing a background: they are copies of their own originals, and of nothing
else). Distractors: the other astronomy photos (look-alikes) and the small
photos. Originals and distractors are split into `dev` (tuning) and `heldout` (reported, never
tuned on) by a hash of their name, and each split is its own folder (its own collection:
nothing of the held-out part reaches a tuned step). `labels.csv` in each folder gives every
file's source, edit and scene group (same-scene pairs are neither positive nor negative).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer import decode

MIN_SIDE = 120
ASTRO_ORIGINALS = 40
EDITS_PER_ORIGINAL = 8
HELDOUT_SHARE = 1 / 3
ROTATIONS = ("rotate-90", "rotate-180", "rotate-270")
# Originals as the hidden set holds them (69 of 120 lossy WebP, 39 JPEG, 12 PNG).
FORMAT_SHARES = (("WEBP", 0.5), ("AVIF", 0.1), ("JPEG", 0.3))  # the rest: as they come
QUALITY_OF = {"WEBP": 80, "AVIF": 60, "JPEG": 90}
SHARED_CANVAS_PAIRS = 6  # in each split

Edit = Callable[[Image.Image, np.random.RandomState, Image.Image], Image.Image]


@dataclass(frozen=True)
class Row:
    name: str
    source: str  # the original it was made from ("" for a distractor)
    edit: str  # "original", "distractor", or the edit's name
    group: str  # scene group: same-group pairs count on neither side
    canvas: str = ""  # composites on one background: pairs of them count on neither side


def _resize(scale: float) -> Edit:
    def edit(im: Image.Image, _rng: np.random.RandomState, _c: Image.Image) -> Image.Image:
        size = (max(8, round(im.width * scale)), max(8, round(im.height * scale)))
        return im.resize(size, Image.Resampling.LANCZOS)

    return edit


def _centre_crop(keep: float) -> Edit:
    def edit(im: Image.Image, _rng: np.random.RandomState, _c: Image.Image) -> Image.Image:
        w, h = im.size
        dx, dy = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
        return im.crop((dx, dy, w - dx, h - dy))

    return edit


def _corner_crop(im: Image.Image, rng: np.random.RandomState, _c: Image.Image) -> Image.Image:
    w, h = im.size
    x, y = int(rng.randint(2)) * (w - w // 2), int(rng.randint(2)) * (h - h // 2)
    return im.crop((x, y, x + w // 2, y + h // 2))


def _tilt(im: Image.Image, rng: np.random.RandomState, _c: Image.Image) -> Image.Image:
    angle = 5.0 if rng.rand() < 0.5 else -5.0
    return im.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def _brightness(im: Image.Image, rng: np.random.RandomState, _c: Image.Image) -> Image.Image:
    out = ImageEnhance.Brightness(im).enhance(float(rng.choice([0.7, 1.35])))
    return ImageEnhance.Contrast(out).enhance(float(rng.choice([0.8, 1.25])))


def _blur(im: Image.Image, _rng: np.random.RandomState, _c: Image.Image) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(max(1.5, min(im.size) / 120)))


def _caption(im: Image.Image, rng: np.random.RandomState, _c: Image.Image) -> Image.Image:
    out = im.copy()
    band = max(8, round(im.height * 0.15))
    top = 0 if rng.rand() < 0.5 else im.height - band
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, top, im.width, top + band), fill=(20, 20, 20))
    draw.text((max(2, im.width // 40), top + band // 4), "Holiday 2026 - do not copy",
              fill=(255, 255, 255))  # fmt: skip
    return out


def _pasted(im: Image.Image, rng: np.random.RandomState, canvas: Image.Image) -> Image.Image:
    """The photo at half its size on a plain or a photo canvas of the original's size."""
    if rng.rand() < 0.5:
        colour = tuple(int(c) for c in rng.randint(0, 256, 3))
        base = Image.new("RGB", im.size, colour)
    else:
        base = ImageOps.fit(canvas, im.size)
    thumb = im.resize((max(8, im.width // 2), max(8, im.height // 2)), Image.Resampling.LANCZOS)
    x = int(rng.randint(0, im.width - thumb.width + 1))
    y = int(rng.randint(0, im.height - thumb.height + 1))
    base.paste(thumb, (x, y))
    return base


def _keep(im: Image.Image, _rng: np.random.RandomState, _c: Image.Image) -> Image.Image:
    return im


EDITS: dict[str, Edit] = {
    "jpeg-q10": _keep,
    "jpeg-q30": _keep,
    "jpeg-q50": _keep,
    "resize-50": _resize(0.5),
    "resize-25": _resize(0.25),
    "crop-80": _centre_crop(0.8),
    "crop-60": _centre_crop(0.6),
    "corner-crop-50": _corner_crop,
    "hflip": lambda im, _r, _c: ImageOps.mirror(im),
    "rotate-90": lambda im, _r, _c: im.rotate(90, expand=True),
    "rotate-180": lambda im, _r, _c: im.rotate(180, expand=True),
    "rotate-270": lambda im, _r, _c: im.rotate(270, expand=True),
    "tilt-5": _tilt,
    "grayscale": lambda im, _r, _c: ImageOps.grayscale(im).convert("RGB"),
    "brightness-contrast": _brightness,
    "blur": _blur,
    "caption-band": _caption,
    "pasted-thumbnail": _pasted,
    "exif-orientation": _keep,
}
QUALITY = {"jpeg-q10": 10, "jpeg-q30": 30, "jpeg-q50": 50}


def heldout(name: str) -> bool:
    digest = hashlib.sha256(name.encode()).digest()
    return digest[0] / 256 < HELDOUT_SHARE


def upright_rgb(path: Path) -> Image.Image:
    """As the indexer sees a file: EXIF applied, transparency over white."""
    with Image.open(path) as image:
        return decode.upright_rgb(image)


def _original_format(source: str) -> str | None:
    """The lossy format an original is re-encoded in (by a hash of its name), or None (kept as
    it is: the development photos are PNG)."""
    share = hashlib.sha256(f"format:{source}".encode()).digest()[0] / 256
    for name, part in FORMAT_SHARES:
        if share < part:
            return name
        share -= part
    return None


def _suffix(edit: str) -> str:
    return ".png" if edit in ROTATIONS else ".jpg"


def _composite(image: Image.Image, canvas: Image.Image, rng: np.random.RandomState) -> Image.Image:
    """`image` within 40 % of the sides of a 640 x 480 crop of `canvas` (made smaller, never
    larger), somewhere on it."""
    base = ImageOps.fit(canvas, (640, 480))
    thumb = image.copy()
    thumb.thumbnail((256, 192), Image.Resampling.LANCZOS)
    x = int(rng.randint(0, base.width - thumb.width + 1))
    y = int(rng.randint(0, base.height - thumb.height + 1))
    base.paste(thumb, (x, y))
    return base


def _save_edit(image: Image.Image, edit: str, path: Path) -> None:
    if edit in ROTATIONS:
        image.save(path, "PNG")
        return
    if edit == "exif-orientation":  # pixels stored turned, the EXIF tag turns them back
        exif = Image.Exif()
        exif[0x0112] = 6  # shown rotated 90 degrees clockwise
        image.rotate(90, expand=True).save(path, "JPEG", quality=92, exif=exif.tobytes())
        return
    image.save(path, "JPEG", quality=QUALITY.get(edit, 90))


@dataclass(frozen=True)
class Draw:
    """What to build: `seed` picks the astronomy originals, and the edits, canvases and
    dates too unless `edit_seed` is given (another draw of copies of the same originals, in
    the same splits: more development cases without touching the held-out photos' split)."""

    seed: int = 2026
    astro_count: int = ASTRO_ORIGINALS
    edit_seed: int | None = None
    shared_canvas_pairs: int = SHARED_CANVAS_PAIRS  # in each split


def build(photos: Path, out: Path, draw: Draw = Draw()) -> dict[str, list[Row]]:
    """Write `out/dev` and `out/heldout`; returns their rows (also in each labels.csv)."""
    seed, astro_count = draw.seed, draw.astro_count
    with open(photos / "manifest.csv", encoding="utf-8") as handle:
        manifest = list(csv.DictReader(handle))
    rng = np.random.RandomState(seed)

    def short(r: dict[str, str]) -> int:
        return min(int(r["width"]), int(r["height"]))

    general = [r for r in manifest if r["domain"] == "photos" and short(r) >= MIN_SIDE]
    astro = [r for r in manifest if r["domain"] == "astro"]
    big_astro = [r for r in astro if short(r) >= 200]
    astro_originals = [big_astro[i] for i in sorted(rng.choice(len(big_astro), astro_count,
                                                               replace=False))]  # fmt: skip
    originals = general + astro_originals
    if draw.edit_seed is not None:  # the same originals, other edits
        rng, seed = np.random.RandomState(draw.edit_seed), draw.edit_seed
    chosen = {r["relpath"] for r in originals}
    # The GIMP examples are left out: they hold unlabelled families of one image's filter
    # variants (the corpus README), which would count as false pairs.
    distractors = [r for r in manifest if r["relpath"] not in chosen and r["domain"] != "edits"
                   and not (r["domain"] == "photos" and r["group"])]  # fmt: skip
    rows: dict[str, list[Row]] = {"dev": [], "heldout": []}
    for split in rows:
        if (out / split).exists():
            shutil.rmtree(out / split)
        (out / split).mkdir(parents=True)
    # Every edit about equally often: each original takes the next EDITS_PER_ORIGINAL of a
    # shuffled cycle of all edits.
    cycle = list(EDITS)
    rng.shuffle(cycle)
    position = 0
    # A photo canvas is a distractor of the *other* split, each used once: within a collection
    # a pasted copy then shares no picture with any other file (a shared canvas would make two
    # pasted copies true partial copies of each other).
    named = [(f"d{n:03}-{r['domain']}{Path(r['relpath']).suffix.lower()}", r)
             for n, r in enumerate(distractors)]  # fmt: skip
    canvases = {split: [photos / r["relpath"] for name, r in named
                        if heldout(name) != (split == "heldout")]
                for split in rows}  # fmt: skip
    for found in canvases.values():
        rng.shuffle(found)
    held: dict[str, list[tuple[str, str, Path]]] = {split: [] for split in rows}
    for n, row in enumerate(originals):
        source = f"o{n:03}"
        split = "heldout" if heldout(source) else "dev"
        folder = out / split
        file = photos / row["relpath"]
        lossy = _original_format(source)
        if lossy is None:
            name = f"{source}-original{file.suffix.lower()}"
            shutil.copyfile(file, folder / name)  # byte for byte, in its own format
        else:
            name = f"{source}-original.{lossy.lower().replace('jpeg', 'jpg')}"
            upright_rgb(file).save(folder / name, lossy, quality=QUALITY_OF[lossy])
        group = row["group"] or source
        rows[split].append(Row(name, source, "original", group))
        held[split].append((source, group, folder / name))
        image = upright_rgb(folder / name)  # the original as the user has it
        for _ in range(EDITS_PER_ORIGINAL):
            edit = cycle[position % len(cycle)]
            position += 1
            canvas = upright_rgb(canvases[split].pop()) if edit == "pasted-thumbnail" else image
            edited = EDITS[edit](image, rng, canvas)
            name = f"{source}-{edit}{_suffix(edit)}"
            _save_edit(edited, edit, folder / name)
            rows[split].append(Row(name, source, edit, group))
    for split, mine in held.items():  # two originals on one background, pair by pair
        order = rng.permutation(len(mine))[: 2 * draw.shared_canvas_pairs]
        for k in range(len(order) // 2):
            canvas = upright_rgb(canvases[split].pop())
            for source, group, path in (mine[order[2 * k]], mine[order[2 * k + 1]]):
                name = f"{source}-shared-canvas.jpg"
                _composite(upright_rgb(path), canvas, rng).save(out / split / name, quality=90)
                rows[split].append(Row(name, source, "shared-canvas", group, f"c{k}"))
    for name, row in named:
        file = photos / row["relpath"]
        split = "heldout" if heldout(name) else "dev"
        shutil.copyfile(file, out / split / name)
        rows[split].append(Row(name, "", "distractor", row["group"] or name))
    # File dates in random order: a keeper must not win by being written first.
    dates = np.random.RandomState(seed + 1)
    for split, found in rows.items():
        for row in found:
            when = 1.7e9 + float(dates.uniform(0, 3e7))
            os.utime(out / split / row.name, (when, when))
        with open(out / split / "labels.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", "source", "edit", "group", "canvas"])
            writer.writerows([r.name, r.source, r.edit, r.group, r.canvas] for r in found)
    return rows


def read_labels(folder: Path) -> list[Row]:
    with open(folder / "labels.csv", encoding="utf-8") as handle:
        return [Row(r["name"], r["source"], r["edit"], r["group"], r.get("canvas") or "")
                for r in csv.DictReader(handle)]  # fmt: skip


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=Path, required=True, help="where fetch.sh put them")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--astro-originals", type=int, default=ASTRO_ORIGINALS)
    parser.add_argument("--edit-seed", type=int, help="another draw of copies of the originals")
    parser.add_argument(
        "--shared-canvas-pairs",
        type=int,
        default=SHARED_CANVAS_PAIRS,
        help="pairs of originals pasted on one background, in each split",
    )
    args = parser.parse_args()
    draw = Draw(astro_count=args.astro_originals, edit_seed=args.edit_seed,
                shared_canvas_pairs=args.shared_canvas_pairs)  # fmt: skip
    rows = build(args.photos, args.out, draw)
    for split, found in rows.items():
        print(split, len(found), "files,", sum(r.edit == "original" for r in found), "originals")


if __name__ == "__main__":
    main()
