"""Photo-sized JPEGs (2-12 MP) made from the sample photos, cached under bench/out/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "examples").glob("*.jpg"))


def make_photos(count: int, out: Path, seed: int = 0) -> list[Path]:
    """`count` distinct JPEGs of 2-12 megapixels: crops, flips and colour changes, upscaled."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(count):
        path = out / f"photo{i:04}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        source = Image.open(SAMPLES[i % len(SAMPLES)]).convert("RGB")
        w, h = source.size
        left, top = int(rng.randint(0, w // 5)), int(rng.randint(0, h // 5))
        crop = source.crop((left, top, left + int(w * 0.8), top + int(h * 0.8)))
        if rng.rand() < 0.5:
            crop = ImageOps.mirror(crop)
        crop = ImageEnhance.Color(crop).enhance(float(rng.uniform(0.6, 1.4)))
        megapixels = float(rng.uniform(2, 12))
        aspect = rng.choice([4 / 3, 3 / 2, 16 / 9])
        height = int((megapixels * 1e6 / aspect) ** 0.5)
        size = (int(height * aspect), height)
        if rng.rand() < 0.3:  # some portrait photos
            size = size[::-1]
        crop.resize(size, Image.Resampling.BILINEAR).save(path, quality=90)
    return paths
