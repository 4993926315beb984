"""The `best` keeper: the copy a person would keep, with the reason in words.

Each file of a group is looked at once (decoded at a bounded size): its real detail (pixels,
unless it was upscaled), how it was stored (lossless, unless it carries the 8x8 blocks of an
earlier JPEG; else its JPEG quality from the quantisation tables), sharpness, colour, clipped
highlights and shadows, and flat margins (an added border, the black corners of a tilted copy,
an overlaid band). The copy pairs of the group add which side contains the other (a crop or a
pasted thumbnail is the derivative). Camera EXIF and the earlier capture date break ties.
Where nothing tells two copies apart (a mirror image, a pure EXIF re-tag) either may win.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from search.copies.decide import Edge
from store import ImageRecord

ANALYSIS_SIDE = 768  # analysed at most this long: enough to see blur, colour and margins
NATIVE_CROP = 512  # a central crop at full resolution: enlargement and JPEG blocks


@dataclass(frozen=True)
class Look:
    """What a file looks like to the keeper (see the module docstring)."""

    pixels: int
    upscale: float  # 1.0: native detail; 2.0: looks enlarged 2x
    lossless: bool
    jpeg_quality: int | None  # estimated from the quantisation tables
    blocky: bool  # a lossless file with JPEG blocks: saved from a JPEG
    sharpness: float  # Laplacian variance at a common scale
    colour: bool
    clipped: float  # share of pixels at pure black or white
    margin: float  # share of the frame that is flat and touches the border
    camera: bool  # EXIF make or model
    taken: str | None  # EXIF DateTimeOriginal
    format: str


def format_of(record: ImageRecord) -> str:
    """The file's image format from its header (JPEG, PNG, WEBP, ...), "?" if unreadable."""
    try:
        from PIL import Image

        with Image.open(record.path) as image:
            return image.format or "?"
    except Exception:
        return "?"


def look_at(record: ImageRecord) -> Look | None:
    """None when the file cannot be read."""
    try:
        return _look(record.path, record.size, record.mtime_ns)
    except Exception:
        return None


@lru_cache(maxsize=4096)
def _look(path: str, _size: int, _mtime_ns: int) -> Look:  # the file as of (size, mtime)
    from PIL import Image, ImageOps

    from search.copies.verify import content_mask

    with Image.open(path) as source:
        fmt = source.format or "?"
        lossless = fmt in ("PNG", "BMP", "TIFF", "GIF") or (
            fmt == "WEBP" and source.info.get("lossless", False)
        )
        quality = _jpeg_quality(source) if fmt == "JPEG" else None
        exif = source.getexif()
        camera = bool(exif.get(0x010F) or exif.get(0x0110))
        taken = exif.get_ifd(0x8769).get(0x9003) if exif else None
        image = ImageOps.exif_transpose(source)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        rgb = image.convert("RGB")
    width, height = rgb.size
    # Native pixels (no resampling) for what resampling would hide: enlargement, JPEG blocks.
    cx, cy = max(0, (width - NATIVE_CROP) // 2), max(0, (height - NATIVE_CROP) // 2)
    native = np.asarray(
        rgb.convert("L").crop((cx, cy, cx + NATIVE_CROP, cy + NATIVE_CROP)), dtype=np.float32
    )
    rgb.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE))
    array = np.asarray(rgb, dtype=np.float32)
    grey = array.mean(axis=2)
    spread = float(np.abs(array - grey[..., None]).mean())
    small = np.asarray(
        rgb.convert("L").resize(
            (256, max(1, round(256 * rgb.height / rgb.width))), Image.Resampling.BILINEAR
        ),
        dtype=np.uint8,
    )
    mask = content_mask(small)
    margin = 0.0 if mask is None else float((mask == 0).mean())
    return Look(
        pixels=width * height,
        upscale=_upscale(native),
        lossless=lossless,
        jpeg_quality=quality,
        blocky=lossless and _blocky(native),
        sharpness=_sharpness(small),
        colour=spread > 2.0,
        clipped=float(((grey <= 1) | (grey >= 254)).mean()),
        margin=margin,
        camera=camera,
        taken=str(taken) if taken else None,
        format=fmt,
    )


# libjpeg's standard luminance table at quality 50.
_STANDARD = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    dtype=np.float64,
)


def _jpeg_quality(image: object) -> int | None:
    """The libjpeg quality whose scaled luminance table is closest to the file's."""
    tables = getattr(image, "quantization", None)
    if not tables or 0 not in tables:
        return None
    table = np.asarray(tables[0], dtype=np.float64)
    if table.shape != (64,):
        return None
    best, error = None, math.inf
    for quality in range(1, 101):
        scale = 5000 / quality if quality < 50 else 200 - 2 * quality
        expected = np.clip(np.floor((_STANDARD * scale + 50) / 100), 1, 255)
        # Tables are stored in zigzag order by some encoders and natural order by others.
        difference = float(np.abs(np.sort(expected) - np.sort(table)).mean())
        if difference < error:
            best, error = quality, difference
    return best


def _upscale(grey: np.ndarray) -> float:
    """How enlarged the image looks: 1.0 when halving it and enlarging it back loses detail,
    more when it loses almost none (an upscaled image has no top octave)."""
    if min(grey.shape) < 32:
        return 1.0
    even = grey[: grey.shape[0] // 2 * 2, : grey.shape[1] // 2 * 2]
    half = even.reshape(even.shape[0] // 2, 2, even.shape[1] // 2, 2).mean(axis=(1, 3))
    back = np.repeat(np.repeat(half, 2, axis=0), 2, axis=1)
    detail = float(np.abs(even - back).mean())
    structure = float(np.abs(np.diff(half, axis=1)).mean()) + 1e-6
    ratio = detail / structure  # ~0.3-0.5 for photos at native scale, ~0.1 when enlarged 2x
    return 1.0 if ratio >= 0.2 else min(4.0, 0.4 / max(ratio, 0.1))


def _blocky(grey: np.ndarray) -> bool:
    """Whether steps at every 8th column and row stand out (JPEG blocks in a lossless file)."""
    if min(grey.shape) < 64:
        return False
    columns = np.abs(np.diff(grey, axis=1)).mean(axis=0)
    rows = np.abs(np.diff(grey, axis=0)).mean(axis=1)

    def ratio(steps: np.ndarray) -> float:
        at = steps[7::8].mean()
        others = np.delete(steps, np.arange(7, len(steps), 8)).mean() + 1e-6
        return float(at / others)

    return ratio(columns) > 1.25 and ratio(rows) > 1.25


def _sharpness(small: np.ndarray) -> float:
    a = small.astype(np.float32)
    laplacian = a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4 * a[1:-1, 1:-1]
    return float(laplacian.var())


# -- choosing --------------------------------------------------------------------------------


def contained(edges: Sequence[Edge]) -> dict[int, set[int]]:
    """image id -> ids it contains, from verified pairs: one side's keypoints spread over the
    other's whole frame while covering only part of its own (a crop, a pasted thumbnail)."""
    found: dict[int, set[int]] = {}
    for e in edges:
        check = e.check
        if check is None or not check.verified:
            continue
        if check.coverage_b >= 0.35 and check.coverage_a <= 0.6 * check.coverage_b:
            found.setdefault(e.a, set()).add(e.b)  # b's whole frame matched inside a
        elif check.coverage_a >= 0.35 and check.coverage_b <= 0.6 * check.coverage_a:
            found.setdefault(e.b, set()).add(e.a)
    return found


@dataclass(frozen=True)
class _Merit:
    record: ImageRecord
    look: Look | None
    contains: int  # how many others of the group it contains

    def points(self, group: Sequence[_Merit]) -> float:
        look = self.look
        if look is None:
            return -100.0  # unreadable now: never kept over a readable copy
        fine = [m.look for m in group if m.look is not None]
        score = 3.0 * self.contains
        score += math.log2(max(1.0, look.pixels / look.upscale**2))
        if look.lossless and not look.blocky:
            score += 0.6
        elif look.jpeg_quality is not None:
            score += (look.jpeg_quality - 80) / 20
        best_sharp = max(f.sharpness for f in fine) or 1.0
        score += 0.8 * math.log2(max(look.sharpness, 1.0) / max(best_sharp, 1.0))
        if not look.colour and any(f.colour for f in fine):
            score -= 2.0
        score -= 6.0 * max(0.0, look.clipped - min(f.clipped for f in fine))
        score -= 6.0 * max(0.0, look.margin - min(f.margin for f in fine))
        score += 0.2 if look.camera else 0.0
        return score


def choose_best(records: Sequence[ImageRecord], edges: Sequence[Edge]) -> tuple[ImageRecord, str]:
    """The file to keep among `records` (one or more contents) and why, in words."""
    contains = contained(edges)
    merits = [
        _Merit(r, look_at(r), len(contains.get(r.id, set()) & {x.id for x in records}))
        for r in records
    ]
    ranked = sorted(
        merits, key=lambda m: (-m.points(merits), _taken(m), m.record.mtime_ns, m.record.path)
    )
    keep = ranked[0]
    others = [m for m in ranked[1:] if m.record.content_hash != keep.record.content_hash]
    if not others:
        return keep.record, "same bytes: the first by capture date, then file date"
    return keep.record, _reason(keep, others[0])


def _taken(merit: _Merit) -> str:
    return merit.look.taken if merit.look and merit.look.taken else "~"  # "~" sorts last


def _reason(keep: _Merit, runner: _Merit) -> str:
    a, b = keep.look, runner.look
    if a is None:
        return "no copy could be read"
    if b is None:
        return "the other copies could not be read"
    said = []
    if keep.contains:
        said.append("contains the others" if keep.contains > 1 else "contains the other")
    ratio = (a.pixels / a.upscale**2) / max(1.0, b.pixels / b.upscale**2)
    if ratio >= 1.2:
        said.append(f"{ratio:.1f}x the pixels")
    if b.upscale > 1.3:
        said.append("the other is upscaled")
    if a.lossless and not a.blocky and not (b.lossless and not b.blocky):
        said.append(f"lossless {a.format} vs {_stored(b)}")
    elif b.lossless and b.blocky:
        said.append(f"{_stored(b)} carries JPEG blocks")
    elif a.jpeg_quality and b.jpeg_quality and a.jpeg_quality - b.jpeg_quality >= 5:
        said.append(f"JPEG q{a.jpeg_quality} vs q{b.jpeg_quality}")
    if a.sharpness > 1.5 * max(b.sharpness, 1.0):
        said.append("sharper")
    if a.colour and not b.colour:
        said.append("colour vs grayscale")
    if b.clipped - a.clipped > 0.05:
        said.append("fewer clipped highlights and shadows")
    if b.margin - a.margin > 0.03:
        said.append("no added border, corners or band")
    if not said and a.camera and not b.camera:
        said.append("camera EXIF")
    if not said and a.taken and (not b.taken or a.taken < b.taken):
        said.append("taken earlier")
    return "; ".join(said) or "no difference that matters: either could be kept"


def _stored(look: Look) -> str:
    if look.lossless:
        return look.format
    return f"JPEG q{look.jpeg_quality}" if look.jpeg_quality else look.format
