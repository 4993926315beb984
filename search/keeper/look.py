"""What a file of a duplicate group looks like to the `best` keeper (search/keeper.py).

Each file is looked at once (decoded at a bounded size, with a central crop at full
resolution): its pixels and the detail in their top octave (an upscaled copy has little), how
it was stored (lossless,
unless it carries the 8x8 blocks of an earlier JPEG; else its JPEG quality from the
quantisation tables), sharpness (contrast-independent), colour, clipped highlights and shadows
on its content, and dark flat margins touching the border (an added border, the black corners
of a tilted copy, a dark band), plus camera EXIF and the capture date.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from search.per_content import Recipe
from store import ImageRecord

ANALYSIS_SIDE = 768  # analysed at most this long: enough to see blur, colour and margins
NATIVE_CROP = 512  # a central crop at full resolution: enlargement and JPEG blocks
SAME_CROP = 128  # the central crop kept to tell files with the same pixels
DARK = 40  # grey levels up to this count as dark
LOOK_VERSION = 2  # of what a Look holds and how it is measured: cached ones of another are redone


@dataclass(frozen=True)
class Look:
    """What a file looks like to the keeper (see the module docstring)."""

    pixels: int
    # Detail in the top octave (what halving and enlarging back loses, relative to the
    # structure left): 0.4-0.6 for photos at their native scale, lower when blurred or enlarged.
    detail: float
    lossless: bool
    jpeg_quality: int | None  # estimated from the quantisation tables
    blocky: bool  # a lossless file with JPEG blocks: saved from a JPEG
    sharpness: float  # Laplacian variance at a common scale
    colour: bool
    clipped: float  # share of pixels at pure black or white
    margin: int  # dark corners (1 each) and dark bands along an edge (2 each), see _dark_edges
    camera: bool  # EXIF make or model
    taken: str | None  # EXIF DateTimeOriginal
    format: str
    # A central square crop of up to SAME_CROP x SAME_CROP RGB pixels at full resolution (as
    # large as the shorter side allows: central_square), and the whole frame at 48 x 48: files
    # with the same pixels (a lossless save of a JPEG) show the same, edits not.
    crop: bytes = b""
    thumb: bytes = b""

    def to_bytes(self) -> bytes:
        fields = {k: v for k, v in asdict(self).items() if k not in ("crop", "thumb")}
        header = json.dumps(fields).encode()
        sizes = struct.pack("<III", len(header), len(self.crop), len(self.thumb))
        return zlib.compress(sizes + header + self.crop + self.thumb, 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> Look:
        raw = zlib.decompress(data)
        header, crop, thumb = struct.unpack_from("<III", raw)
        at = struct.calcsize("<III")
        fields = json.loads(raw[at : at + header])
        at += header
        return cls(**fields, crop=raw[at : at + crop], thumb=raw[at + crop : at + crop + thumb])


def same_pixels(a: Look, b: Look) -> bool:
    """Whether two files show the same pixels (a lossless save of a JPEG, a pure re-tag), or
    the same pixels turned by a multiple of 90 degrees (a lossless save of a turned copy: a PNG
    made from a lossy WebP and turned)."""
    if a.pixels != b.pixels or not a.crop or len(a.crop) != len(b.crop):
        return False
    if _apart(a.crop, b.crop) <= SAME_LEVELS and _apart(a.thumb, b.thumb) <= SAME_LEVELS:
        return True
    return turned_same(a, b) is not None


SAME_LEVELS = 3  # grey levels two decodings of the same pixels may differ by (rounding)
_THUMB = 48


def _frame(look: Look) -> NDArray[np.uint8] | None:
    """The whole frame at 48 x 48 (RGB), None when the look holds none."""
    if len(look.thumb) != _THUMB * _THUMB * 3:
        return None
    return np.frombuffer(look.thumb, np.uint8).reshape(_THUMB, _THUMB, 3)


def tones(look: Look) -> NDArray[np.float32] | None:
    """The 10th, 50th and 90th percentiles of the whole frame's grey levels (48 x 48): what a
    brightness or contrast edit moves, and a re-encode, resize, turn, mirror or blur mostly
    does not. None without a frame."""
    frame = _frame(look)
    if frame is None:
        return None
    grey = frame.reshape(-1, 3).astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)
    return np.percentile(grey, [10, 50, 90]).astype(np.float32)


def grey(look: Look) -> bool:
    """No colour at all, as a grayscale copy has: the 48 x 48 frame's channels within GREY of
    their mean on average (every grayscale copy of the dev draws measures 0; near-grey photos
    0.07-1.7, so one is no grayscale copy of its contrast edit, which gains some colour)."""
    frame = _frame(look)
    if frame is None:
        return False
    rgb = frame.astype(np.float32)
    return float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean()) <= GREY


GREY = 0.3  # none but rounding's


def likeness(a: Look, b: Look) -> float | None:
    """How alike two files' whole frames are, as they are turned: the correlation of their
    48 x 48 grey frames (brightness, contrast and colour aside), -1 to 1; None without frames.
    A copy turned by 90 degrees is less like the upright copies of a group than its source."""
    frame_a, frame_b = _frame(a), _frame(b)
    if frame_a is None or frame_b is None:
        return None
    grey = []
    for rgb in (frame_a, frame_b):
        frame = rgb.mean(axis=2)
        frame = frame - frame.mean()
        grey.append(frame / max(float(np.sqrt((frame * frame).sum())), 1e-6))
    # A mirror image is as upright as its source: the other frame mirrored counts as well.
    return float(max((grey[0] * grey[1]).sum(), (grey[0] * grey[1][:, ::-1]).sum()))


def turned_same(a: Look, b: Look) -> int | None:
    """The quarter turns (1-3) that make a's pixels b's, None when none does. The central
    crops of a turned image are each other's turn up to a pixel of rounding in where the
    centre falls, so the turned crop is compared inside a 4-pixel margin at shifts of 1. The
    whole frames, first, must look alike on average (two pictures can share a centre)."""
    side = round(np.sqrt(len(a.crop) / 3))  # the crops are square: they turn onto themselves
    if len(a.crop) != side * side * 3 or len(b.crop) != len(a.crop) or side <= 10:
        return None
    frame_a, frame_b = _frame(a), _frame(b)
    if frame_a is None or frame_b is None:
        return None
    shape = (side, side, 3)
    crop_a = np.frombuffer(a.crop, np.uint8).reshape(shape).astype(np.int16)
    crop_b = np.frombuffer(b.crop, np.uint8).reshape(shape).astype(np.int16)
    thumb_a, thumb_b = frame_a.astype(np.int16), frame_b.astype(np.int16)
    for turns in (1, 2, 3):
        # A 48 x 48 box-filtered frame is not quite the turn of the other's (the boxes fall
        # across other pixels): alike on average; the full-resolution crops decide.
        if np.abs(np.rot90(thumb_a, turns) - thumb_b).mean() > 2.0:
            continue
        inner = np.rot90(crop_a, turns)[4:-4, 4:-4]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                window = crop_b[4 + dy : side - 4 + dy, 4 + dx : side - 4 + dx]
                if np.abs(inner - window).max() <= SAME_LEVELS:
                    return turns
    return None


def _apart(p: bytes, q: bytes) -> float:
    x = np.frombuffer(p, dtype=np.uint8).astype(np.int16)
    y = np.frombuffer(q, dtype=np.uint8).astype(np.int16)
    return float(np.abs(x - y).max(initial=0))


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
    return look_at_path(record.path)


def central_square(width: int, height: int) -> tuple[int, int, int]:
    """Where a look's central crop lies in a width x height frame: (left, top, side). Square,
    so that the crop of a turned copy is this one turned (a photo under SAME_CROP pixels on a
    side included: its turned PNG went unrecognised when the crop was not)."""
    side = min(SAME_CROP, width, height)
    return (width - side) // 2, (height - side) // 2, side


def look_at_path(path: str) -> Look | None:
    try:
        return _look(path)
    except Exception:  # PIL raises many kinds for a changed or broken file
        return None


def _look(path: str) -> Look:
    from PIL import Image

    from indexer.decode import upright_rgb
    from search.pixels import content_mask

    with Image.open(path) as source:
        fmt = source.format or "?"
        lossless = fmt in ("PNG", "BMP", "TIFF", "GIF") or (
            fmt == "WEBP" and source.info.get("lossless", False)
        )
        quality = _jpeg_quality(source) if fmt == "JPEG" else None
        exif = source.getexif()
        camera = bool(exif.get(0x010F) or exif.get(0x0110))
        taken = exif.get_ifd(0x8769).get(0x9003) if exif else None
        # No copy of a full-size RGB image: a 20-megapixel JPEG's look took 0.37 s, a fifth
        # of it copying and converting all of its pixels.
        rgb = upright_rgb(source, in_place=True)
    width, height = rgb.size
    # Native pixels (no resampling) for what resampling would hide: enlargement, JPEG blocks.
    cx, cy = max(0, (width - NATIVE_CROP) // 2), max(0, (height - NATIVE_CROP) // 2)
    native = np.asarray(
        rgb.crop((cx, cy, cx + NATIVE_CROP, cy + NATIVE_CROP)).convert("L"), dtype=np.float32
    )
    sx, sy, side = central_square(width, height)
    central = np.asarray(rgb.crop((sx, sy, sx + side, sy + side)), dtype=np.uint8).tobytes()
    rgb.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE))
    small_rgb = rgb.resize(
        (256, max(1, round(256 * rgb.height / rgb.width))), Image.Resampling.BILINEAR
    )
    array = np.asarray(small_rgb, dtype=np.float32)
    spread = float(np.abs(array - array.mean(axis=2, keepdims=True)).mean())
    small = np.asarray(small_rgb.convert("L"), dtype=np.uint8)
    mask = content_mask(small)
    margin = _dark_edges(small)
    content = np.ones(small.shape, dtype=bool) if mask is None else mask > 0
    levels = small[content] if content.any() else small.ravel()
    return Look(
        pixels=width * height,
        detail=_top_octave(native),
        lossless=lossless,
        jpeg_quality=quality,
        blocky=lossless and _blocky(native),
        sharpness=_sharpness(small),
        colour=spread > 2.0,
        clipped=float(((levels <= 1) | (levels >= 254)).mean()),
        margin=margin,
        camera=camera,
        taken=str(taken) if taken else None,
        format=fmt,
        crop=central,
        thumb=np.asarray(rgb.resize((_THUMB, _THUMB), Image.Resampling.BOX), np.uint8).tobytes(),
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


_QUALITIES = np.arange(1, 101)
_SCALES = np.where(_QUALITIES < 50, 5000 / _QUALITIES, 200 - 2 * _QUALITIES)
# libjpeg's table for each quality (100, 64), sorted: encoders store zigzag or natural order.
_TABLES = np.sort(
    np.clip(np.floor((_STANDARD[None, :] * _SCALES[:, None] + 50) / 100), 1, 255), axis=1
)


def _jpeg_quality(image: object) -> int | None:
    """The libjpeg quality whose scaled luminance table is closest to the file's."""
    tables = getattr(image, "quantization", None)
    if not tables or 0 not in tables:
        return None
    table = np.sort(np.asarray(tables[0], dtype=np.float64))
    if table.shape != (64,):
        return None
    return int(_QUALITIES[int(np.abs(_TABLES - table[None, :]).mean(axis=1).argmin())])


def _top_octave(grey: np.ndarray) -> float:
    """What halving and enlarging back loses, relative to the structure that is left."""
    if min(grey.shape) < 32:
        return 0.5
    even = grey[: grey.shape[0] // 2 * 2, : grey.shape[1] // 2 * 2]
    quarters = [even[i::2, j::2] for i in (0, 1) for j in (0, 1)]
    half = (quarters[0] + quarters[1] + quarters[2] + quarters[3]) / 4
    detail = float(sum(np.abs(q - half).sum() for q in quarters)) / even.size
    structure = float(np.abs(np.diff(half, axis=1)).mean()) + 1e-6
    return detail / structure


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


def _dark_edges(small: np.ndarray) -> int:
    """Black corners (a tilted copy's fill) count 1 each, dark bands along the top or bottom
    edge (a caption band, letterboxing) 2 each. A photo's own dark sky is dark in its copies
    too, so only a difference between two copies means something was added."""
    height, width = small.shape
    side = max(3, min(height, width) // 40)
    corners = [
        small[:side, :side],
        small[:side, -side:],
        small[-side:, :side],
        small[-side:, -side:],
    ]
    found = sum(1 for c in corners if c.max() <= DARK // 2 and c.std() <= 2.0)
    band = max(2, height // 14)
    for strip in (small[:band], small[-band:]):
        if (strip <= DARK).mean() >= 0.8:
            found += 2
    return found


def _sharpness(small: np.ndarray) -> float:
    """Laplacian variance over grey variance: edges relative to contrast, so a copy with its
    contrast raised does not look sharper."""
    a = small.astype(np.float32)
    laplacian = a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4 * a[1:-1, 1:-1]
    return float(laplacian.var() / max(1.0, float(a.var())))


# Cached by content in the catalog (search/per_content.py).
LOOKS = Recipe(
    "look", "looking at the copies", LOOK_VERSION, look_at_path, Look.to_bytes, Look.from_bytes
)
