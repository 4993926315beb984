"""Calibrate a backbone's near-duplicate threshold on real photos and their edited copies.

    bash ../shared/data/devphotos/fetch.sh ~/devphotos      # once: 887 real photos, ~800 MB
    python bench/calibrate_dupes.py --photos ~/devphotos [--model effnet-lite0]

Each general photo gets 13 edited copies; the astronomy photos (which look alike) are hard
negatives. Everything is embedded through the real `index` pipeline. Positive pairs: a photo and
its edits, and two edits of one photo. Negative pairs: anything from two different photos, except
photos that the manifest marks as the same scene (those pairs count on neither side). The chosen
threshold is the lowest with pair precision >= 0.99, i.e. the best recall at that precision.
Prints JSON with precision and recall per edit type.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from indexer.decode import to_rgb
from indexer.options import IndexOptions, ModelChoice
from indexer.pipeline import index_folders
from store import Store

TARGET_PRECISION = 0.99


def _jpeg(quality: int) -> Callable[[Image.Image], tuple[Image.Image, dict[str, int]]]:
    return lambda im: (im, {"quality": quality})


def _resize(scale: float) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.resize((max(8, int(im.width * scale)), max(8, int(im.height * scale))))


def _crop(keep: float) -> Callable[[Image.Image], Image.Image]:
    def crop(im: Image.Image) -> Image.Image:
        w, h = im.size
        dx, dy = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
        return im.crop((dx, dy, w - dx, h - dy))

    return crop


def _text_band(im: Image.Image) -> Image.Image:
    out = im.copy()
    draw = ImageDraw.Draw(out)
    band = max(12, im.height // 8)
    draw.rectangle((0, im.height - band, im.width, im.height), fill=(0, 0, 0))
    draw.text(
        (10, im.height - band + band // 4), "© imgsearch calibration 2026", fill=(255, 255, 255)
    )
    return out


def _on_canvas(im: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", im.size, (255, 255, 255))
    thumb = im.resize((max(8, im.width * 2 // 5), max(8, im.height * 2 // 5)))
    canvas.paste(thumb, (im.width // 10, im.height // 10))
    return canvas


def _jitter(im: Image.Image) -> Image.Image:
    im = ImageEnhance.Color(im).enhance(1.5)
    im = ImageEnhance.Contrast(im).enhance(1.2)
    return ImageEnhance.Brightness(im).enhance(0.9)


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resize-50": _resize(0.5),
    "resize-25": _resize(0.25),
    "crop-80": _crop(0.8),
    "crop-60": _crop(0.6),
    "flip": ImageOps.mirror,
    "rotate-5": lambda im: im.rotate(
        5, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255)
    ),
    "rotate-minus-5": lambda im: im.rotate(
        -5, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255)
    ),
    "grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "color-jitter": _jitter,
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(max(1.0, im.width / 300))),
    "text-band": _text_band,
    "thumbnail-on-canvas": _on_canvas,
}
JPEG_EDITS = {"jpeg-q30": 30, "jpeg-q60": 60}


def build_set(photos: Path, out: Path) -> dict[str, tuple[str, str, str]]:
    """Write originals, edits and negatives; {file name: (source, edit type, scene group)}."""
    with open(photos / "manifest.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels: dict[str, tuple[str, str, str]] = {}
    out.mkdir(parents=True, exist_ok=True)
    for n, row in enumerate(rows):
        if row["domain"] not in ("photos", "astro"):
            continue
        source = f"{row['domain']}{n:04}"
        group = row["group"] or source
        # As the pipeline sees it: upright, transparency over white (many are cut-outs).
        image = to_rgb(ImageOps.exif_transpose(Image.open(photos / row["relpath"])))
        image.save(out / f"{source}-original.png")
        labels[f"{source}-original.png"] = (source, "original", group)
        if row["domain"] != "photos":
            continue  # astro photos are the hard negatives
        for edit, change in EDITS.items():
            change(image).save(out / f"{source}-{edit}.jpg", quality=90)
            labels[f"{source}-{edit}.jpg"] = (source, edit, group)
        for edit, quality in JPEG_EDITS.items():
            image.save(out / f"{source}-{edit}.jpg", quality=quality)
            labels[f"{source}-{edit}.jpg"] = (source, edit, group)
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=Path, required=True, help="where fetch.sh put them")
    parser.add_argument("--model", default="effnet-lite0")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--save", type=Path, help="also save names, labels and vectors (.npz)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "set"
        labels = build_set(args.photos, folder)
        options = IndexOptions(model=ModelChoice(args.model, args.weights))
        index_folders(Path(tmp) / "home", [str(folder)], options)
        with Store.open(Path(tmp) / "home") as store:
            records = sorted(store.file_states().values(), key=lambda r: r.path)
            vectors = np.stack([store.vector(r.id) for r in records])
    names = [Path(r.path).name for r in records]
    source = np.array([labels[n][0] for n in names])
    edit = np.array([labels[n][1] for n in names])
    group = np.array([labels[n][2] for n in names])
    if args.save:
        np.savez(args.save, names=names, source=source, edit=edit, group=group, vectors=vectors)
    sims = vectors @ vectors.T
    upper = np.triu(np.ones_like(sims, dtype=bool), k=1)
    positive = (source[:, None] == source[None, :]) & upper
    negative = (group[:, None] != group[None, :]) & upper
    pos_scores, neg_scores = np.sort(sims[positive]), np.sort(sims[negative])

    def precision_recall(
        t: float, mask_pos: np.ndarray, mask_neg: np.ndarray
    ) -> tuple[float, float]:
        tp = int((sims[mask_pos] >= t).sum())
        fp = int((sims[mask_neg] >= t).sum())
        return (tp / (tp + fp) if tp + fp else 1.0), (tp / max(1, int(mask_pos.sum())))

    chosen = None
    for t in np.arange(0.30, 1.0, 0.005):
        tp = len(pos_scores) - np.searchsorted(pos_scores, t)
        fp = len(neg_scores) - np.searchsorted(neg_scores, t)
        if tp + fp and tp / (tp + fp) >= TARGET_PRECISION:
            chosen = round(float(t), 3)
            break
    assert chosen is not None, "no threshold reaches the target precision"
    is_original = edit == "original"
    per_edit = {}
    for kind in [*JPEG_EDITS, *EDITS]:
        involves = (edit[:, None] == kind) | (edit[None, :] == kind)
        # Recall: the original found from this edit; precision: among pairs with this edit type.
        with_original = positive & involves & (is_original[:, None] | is_original[None, :])
        _, recall = precision_recall(chosen, with_original, np.zeros_like(positive))
        precision, _ = precision_recall(chosen, positive & involves, negative & involves)
        per_edit[kind] = {"recall": round(recall, 4), "precision": round(precision, 4)}
    precision, recall = precision_recall(chosen, positive, negative)
    print(json.dumps({
        "benchmark": "calibrate_dupes", "model": args.model, "images": len(names),
        "originals": int(is_original.sum()), "positive_pairs": int(positive.sum()),
        "negative_pairs": int(negative.sum()), "target_precision": TARGET_PRECISION,
        "threshold": chosen, "precision": round(precision, 4), "recall": round(recall, 4),
        "per_edit": per_edit, "machine": machine(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
