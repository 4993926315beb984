"""How a copy's pixels were stored, as the `best` keeper ranks it (signal 3 of
search/keeper/best.py): lossless, else by JPEG quality from the quantisation tables; a
lossless file with JPEG blocks and a lossy WebP, AVIF or HEIC count as a good JPEG. A lossless
file against a lossy WebP, AVIF or HEIC says nothing: it may be a save of that very file."""

from __future__ import annotations

from search.keeper.look import Look
from search.keeper.verdict import Verdict, differ

LOSSY_UNSEEN = ("WEBP", "AVIF", "HEIF", "HEIC")  # lossy formats whose traces are not looked for
# How well a file of unknown lossy quality stored its pixels (a lossy WebP, AVIF or HEIC, a
# lossless file saved from a JPEG), on _stored's scale: a good JPEG (q89.5).
GOOD_JPEG = 0.3


def storage(x: Look, y: Look) -> Verdict:
    """How the pixels were stored. A lossless file against a lossy WebP, AVIF or HEIC says
    nothing: it may well be a save of that very file, edited or not (the traces of a JPEG are
    looked for, theirs are not), and an edit decides later."""
    if _lossless_of_unseen(x, y) or _lossless_of_unseen(y, x):
        return None
    return differ(_stored(x) - _stored(y), 0.3, _formats(x, y))


def _lossless_of_unseen(x: Look, y: Look) -> bool:
    """x is lossless (no JPEG blocks) and y a lossy WebP, AVIF or HEIC."""
    return x.lossless and not x.blocky and not y.lossless and y.format in LOSSY_UNSEEN


def _stored(look: Look) -> float:
    """How well the pixels were stored: lossless, else by JPEG quality; a lossless file with
    JPEG blocks and a lossy WebP, AVIF or HEIC (the quality is not in the file) count as a good
    JPEG."""
    if look.lossless:  # saved from a JPEG of unknown quality: a good JPEG, as below
        return GOOD_JPEG if look.blocky else 1.0
    if look.jpeg_quality is not None:
        return (look.jpeg_quality - 85) / 15
    return GOOD_JPEG if look.format in LOSSY_UNSEEN else 0.0


def _formats(x: Look, y: Look) -> str:
    if x.jpeg_quality and y.jpeg_quality:
        return f"JPEG q{x.jpeg_quality} vs q{y.jpeg_quality}"
    return f"{_format(x)} vs {_format(y)}"


def _format(look: Look) -> str:
    if look.lossless:
        return f"lossless {look.format}" + (" with JPEG blocks" if look.blocky else "")
    return f"JPEG q{look.jpeg_quality}" if look.jpeg_quality else f"lossy {look.format}"
