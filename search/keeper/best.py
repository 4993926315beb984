"""The `best` keeper: the copy a person would keep, with the reason in words.

Every two contents of a group are compared signal by signal, and the first signal that tells
them apart decides; the keeper is the copy that beats the most others (a Copeland tournament)
among the copies made from no other copy of the group (signal 1): an edited copy never wins
by beating worse copies than itself. Its reason is what decided against the others. The
signals, in order:

1. A copy made from another loses to it. An enlargement: more pixels that the other's,
   enlarged again, explain (search/keeper/enlarged.py). A copy the other copies find tilted
   by a few degrees, where they are not among themselves (search/keeper/tilt.py). A verified pair
   (search/copies/verify.py): the side holding clearly more real pixels of the picture they
   share is the source (a pasted thumbnail, a resized copy are not); with about the same,
   the side whose frame reaches beyond the shared part contains the other (a crop is the
   derivative), unless it shows the shared picture pasted on another one (behind a seam, or
   at fewer pixels than the other holds): then the photo is the composite's source.
   Files with the same pixels (a PNG saved from a JPEG or a lossy WebP): the smaller file;
   turned by 90, 180 or 270 degrees, the one the rotation model (the `rotnet` card, when its
   weights are in the cache) finds upright by MODEL_UPRIGHT, else the one with the camera's
   EXIF (shown as the camera meant it), else the one upright as the rest of the group is (its
   frame correlates best with the others', a mirror image's mirrored back too), then the
   smaller file.
2. Tones no other copy shares (a brightness or contrast edit: the copies of its source keep
   the source's), then defects a copy adds: dark flat margins at the border (an added frame,
   the black corners of a tilted copy, a dark band), grayscale (no colour at all against a
   colour photo: a near-grey photo is no grayscale copy of its contrast edit).
3. Real detail: pixels, unless enlarged; then how they were stored (lossless; JPEG quality
   from the quantisation tables; a lossless file with JPEG blocks, saved from a JPEG of
   unknown quality, and a lossy WebP, AVIF or HEIC count as a good JPEG). A lossless file
   against a lossy WebP, AVIF or HEIC is no signal: it may be a save of that file (edited or
   not), and their traces are not looked for as a JPEG's are.
4. Among three or more copies made from no other, the copy they resemble most (the medoid of
   their vectors) is likely the one they were made from; a reduced, cropped or pasted copy
   is left out of it (it resembles a blurred copy more than the sharp original).
5. Sharpness (by SHARPER: a blurred copy, not compression noise), then clipped highlights
   and shadows (a blur rounds them off), camera EXIF, the earlier capture date.

Where nothing tells two copies apart (a mirror image, a pure EXIF re-tag) either may be kept.
Measured in bench/copydetect.py (`original_kept`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from indexer.orientation import UprightOf
from search.keeper.enlarged import AMBIGUOUS, ENLARGED, residual
from search.keeper.look import Look, grey, likeness, look_at, same_pixels, tones, turned_same
from search.keeper.stored import storage
from search.keeper.tilt import straighter, tilted_shares
from search.keeper.verdict import Verdict, differ, ratio
from search.records import CONTAINS, Chooser, Edge
from store import ImageRecord

Similarity = Callable[[ImageRecord, ImageRecord], float]  # cosine of two files' vectors
RICHER = 1.5  # this much more real detail of the shared picture makes a copy the source
# A frame that contains the other (search.records.CONTAINS) is a crop's source, unless it
# shows the shared picture pasted on another one: behind a seam along this share of the
# border (search.pixels.seam on bench/copyset.py's development part: crops at most 0.52,
# pastes 0.08-1.0, most over 0.65), or at fewer pixels than the contained file holds (crops
# 0.96-1.03 of them, two originals pasted on a shared canvas 0.81).
SEAM, SHOWN_SMALLER = 0.75, 1.15
# An enlargement: at least twice the sides (UPSCALED the pixels), with clearly less detail in
# the top octave than the smaller copy (FLATTER) and little of it at all (FLAT: photos at their
# own scale measure 0.45-0.6; a downscaled copy measures more, so the larger is not flagged).
UPSCALED, FLATTER, FLAT = 3.5, 0.8, 0.45
# Sharper by this much: a blurred copy is 8.6x and more less sharp than its source on
# bench/copyset.py's development part, while a JPEG re-encode of a lossy WebP (brightened,
# tilted) measured up to 2.9x sharper than it, from compression noise alone.
SHARPER = 3.0
UPRIGHT = 0.05  # this much more like the other copies' frames: the turn the group agrees on
# This much likelier upright by the rotation model (indexer.orientation.upright_estimator): it
# decides a turned save before the group does, when its weights are in the cache.
MODEL_UPRIGHT = 0.5
# Two copies have the same tones when their grey levels' 10th, 50th and 90th percentiles
# differ by at most this (of 255) on average: on bench/copyset.py's development part, 91-100 %
# of re-encoded, resized, turned, mirrored, grayscale and blurred copies against their source,
# 11 % of brightness/contrast edits (median 32), 0-24 % of crops, captions and pastes.
TONE = 4.0


@dataclass
class _Merit:
    record: ImageRecord
    look: Look | None
    central: float = 0.0  # mean cosine to the other contents
    upright: float = 0.0  # mean likeness of its frame, as it is turned, to the others' frames
    tone: int = 0  # how many other copies have its tones (look.tones)
    tilted: float = 0.0  # the share of its measured pairs that find it tilted (keeper/tilt.py)
    wins: int = 0
    estimate: UprightOf | None = None  # the rotation model, asked once and only when needed
    _asked: list[float | None] = field(default_factory=list)

    def model_upright(self) -> float | None:
        """How likely the rotation model finds this file upright (None: no model, unreadable)."""
        if self.estimate is None:
            return None
        if not self._asked:
            self._asked.append(self.estimate(self.record.path))
        return self._asked[0]


Looks = Callable[[ImageRecord], Look | None]  # what a file looks like; None: unreadable


def chooser(
    similarity: Similarity | None = None,
    looks: Looks | None = None,
    upright: UprightOf | None = None,
) -> Chooser:
    def choose(records: Sequence[ImageRecord], edges: Sequence[Edge]) -> tuple[ImageRecord, str]:
        return choose_best(records, edges, similarity, looks or look_at, upright)

    return choose


def choose_best(
    records: Sequence[ImageRecord],
    edges: Sequence[Edge],
    similarity: Similarity | None = None,
    looks: Looks = look_at,
    upright: UprightOf | None = None,
) -> tuple[ImageRecord, str]:
    """The file to keep among `records` (one or more contents) and why, in words. `upright`:
    the rotation model, when present (asked only about copies that are each other turned)."""
    contents: dict[str, ImageRecord] = {}
    for record in sorted(records, key=lambda r: (r.mtime_ns, r.path)):
        contents.setdefault(record.content_hash, record)  # the first file of each content
    if len(contents) == 1:
        return next(iter(contents.values())), "same bytes: the first by file date, then path"
    firsts = [_Merit(record, looks(record), estimate=upright) for record in contents.values()]
    _orient(firsts)
    at = {h: n for n, h in enumerate(contents)}
    content_of = {r.id: at[r.content_hash] for r in records}
    for m, share in zip(firsts, tilted_shares(content_of, len(firsts), edges), strict=True):
        m.tilted = share
    pair = {(e.a, e.b): e for e in edges} | {(e.b, e.a): e for e in edges}
    sources: dict[tuple[int, int], Verdict] = {}
    derived: set[int] = set()  # positions of the copies made from another copy of the group
    for i, a in enumerate(firsts):
        for j, b in enumerate(firsts[i + 1 :], i + 1):
            source = sources[(i, j)] = source_of(a, b, pair.get((a.record.id, b.record.id)))
            if source is not None:
                derived.add(j if source[0] > 0 else i)
    _centre(firsts, [m for n, m in enumerate(firsts) if n not in derived], similarity)
    _tone(firsts)
    reasons: dict[tuple[int, int], str] = {}
    for i, a in enumerate(firsts):
        for j, b in enumerate(firsts[i + 1 :], i + 1):
            ab = sources[(i, j)] or _signals(a, b)  # source_of said nothing: not asked again
            if ab is None:
                continue
            if ab[0] > 0:
                a.wins += 1
                reasons[(a.record.id, b.record.id)] = ab[1]
            else:
                b.wins += 1
                # b's reason, from the signal that already decided (source_of is symmetric:
                # it is not asked again when it said nothing, nor its enlargement test redone
                # for the other signals).
                edge = pair.get((b.record.id, a.record.id))
                ba = source_of(b, a, edge) if sources[(i, j)] else _signals(b, a)
                reasons[(b.record.id, a.record.id)] = ba[1] if ba else ""
    # A copy made from another copy of the group never wins by beating the others: only the
    # copies derived from none are ranked (an edited copy collects wins over worse copies).
    order = sorted(range(len(firsts)), key=lambda n: (n in derived, -firsts[n].wins))
    ranked = [firsts[n] for n in order]  # stable: ties keep the file order
    keep = ranked[0]
    said = [reasons.get((keep.record.id, m.record.id), "") for m in ranked[1:]]
    unique = [r for r in dict.fromkeys(said) if r]
    return keep.record, "; ".join(unique) or "no difference that matters: either could be kept"


def _centre(
    firsts: Sequence[_Merit], sources: Sequence[_Merit], similarity: Similarity | None
) -> None:
    """Each copy's `central`: its mean cosine to the copies made from no other (three or
    more of them): a resized, cropped or pasted copy is left out of the reference, as it would
    pull it towards the copies that lost detail as it did (a blurred one)."""
    if similarity is None or len(sources) < 3:
        return
    for m in firsts:
        others = [similarity(m.record, o.record) for o in sources if o is not m]
        m.central = sum(others) / len(others)


def _tone(firsts: Sequence[_Merit]) -> None:
    """Each copy's `tone`: how many other copies have its tones (grey levels' percentiles
    within TONE). A re-encoded, resized, turned, mirrored, grayscale or blurred copy keeps its
    source's tones; a brightness or contrast edit moves them, so no other copy shares them."""
    found = [None if m.look is None else tones(m.look) for m in firsts]
    for m, mine in zip(firsts, found, strict=True):
        m.tone = sum(1 for o, t in zip(firsts, found, strict=True)
                     if o is not m and t is not None and mine is not None
                     and float(abs(mine - t).mean()) <= TONE)  # fmt: skip


def source_of(a: _Merit, b: _Merit, edge: Edge | None) -> Verdict:
    """Whether one of two copies was made from the other (+1: a is b's source), and why."""
    x, y = a.look, b.look
    if x is None or y is None:
        return None
    enlarged = _upscaled(a, b)
    if enlarged is not None:
        return enlarged
    tilted = straighter(a.tilted, b.tilted, edge)  # a tilted copy is made from a straight one
    if tilted is not None:
        return tilted
    related = _relation(a, b, edge)
    if related is not None:
        return related
    if same_pixels(x, y):  # a lossless save of a JPEG, a re-tag: the smaller file is the source
        if turned_same(x, y) is not None:  # a turned save: the upright one first
            upright = (
                _by_model(a, b)
                or differ(float(x.camera) - float(y.camera), 0.5, "as the camera saved it")
                or differ(a.upright - b.upright, UPRIGHT, "upright, as the other copies are")
            )
            if upright is not None:
                return upright
        return ratio(b.record.size, a.record.size, 1.05, "the same pixels in a smaller file")
    return None


def _by_model(a: _Merit, b: _Merit) -> Verdict:
    """Which of two turned saves the rotation model finds upright, when it is sure enough."""
    up_a, up_b = a.model_upright(), b.model_upright()
    if up_a is None or up_b is None:
        return None
    return differ(up_a - up_b, MODEL_UPRIGHT, "upright, as the rotation model sees it")


def _orient(firsts: Sequence[_Merit]) -> None:
    """Each copy's `upright`: how like the other copies' frames its frame is as it is turned
    (the copies that are its own pixels turned left out), for a group of three or more."""
    if len(firsts) < 3:
        return
    alike: list[list[float]] = [[] for _ in firsts]
    for i, a in enumerate(firsts):
        for j in range(i + 1, len(firsts)):
            x, y = a.look, firsts[j].look
            if x is None or y is None or turned_same(x, y) is not None:
                continue
            found = likeness(x, y)  # symmetric: one likeness for both
            if found is not None:
                alike[i].append(found)
                alike[j].append(found)
    for m, known in zip(firsts, alike, strict=True):
        m.upright = sum(known) / len(known) if known else 0.0


def _signals(a: _Merit, b: _Merit) -> Verdict:
    """Which of two copies, neither made from the other (source_of said nothing), a person
    would keep, and why: the signals after the first; None: nothing tells them apart."""
    x, y = a.look, b.look
    if x is None or y is None:
        if x is None and y is None:
            return None
        return (1, "the other copy cannot be read") if y is None else (-1, "")
    for verdict in (
        _shared(a.tone, b.tone),
        differ(float(y.margin - x.margin), 1.5, "no added dark border, corners or band"),
        differ(
            float(x.colour and grey(y)) - float(y.colour and grey(x)), 0.5, "colour vs grayscale"
        ),
        ratio(_real(x), _real(y), 1.2, "{:.1f}x the pixels"),
        storage(x, y),
        differ(a.central - b.central, 0.005, "the other copies resemble it most"),
        ratio(x.sharpness, y.sharpness, SHARPER, "sharper"),
        _clipping(x.clipped, y.clipped),
        differ(float(x.camera) - float(y.camera), 0.5, "camera EXIF"),
    ):
        if verdict is not None:
            return verdict
    if x.taken and y.taken and x.taken != y.taken:
        return (1, "taken earlier") if x.taken < y.taken else (-1, "")
    return None


def _relation(a: _Merit, b: _Merit, edge: Edge | None) -> Verdict:
    check = edge.check if edge is not None else None
    if edge is None or check is None or not check.verified or a.look is None or b.look is None:
        return None
    forward = edge.a == a.record.id
    cov_a, cov_b = (
        (check.coverage_a, check.coverage_b) if forward else (check.coverage_b, check.coverage_a)
    )
    seam_a, seam_b = (check.seam_a, check.seam_b) if forward else (check.seam_b, check.seam_a)
    detail_a, detail_b = cov_a * _real(a.look), cov_b * _real(b.look)
    if detail_a >= RICHER * detail_b:
        return 1, f"holds {detail_a / max(detail_b, 1.0):.1f}x the detail of the shared picture"
    if detail_b >= RICHER * detail_a:
        return -1, ""
    sides = ((cov_a, detail_a, seam_a), (cov_b, detail_b, seam_b))
    for (coverage, detail, seam), (other_coverage, other_detail, _), sign in (
        (*sides, 1),
        (*sides[::-1], -1),
    ):
        if coverage <= CONTAINS * other_coverage:  # its frame reaches beyond the shared part
            pasted = seam >= SEAM or other_detail >= SHOWN_SMALLER * detail
            winner = -sign if pasted else sign
            reason = PASTED if pasted else "contains the other (a crop of it)"
            return winner, reason if winner > 0 else ""
    return None


PASTED = "the other shows it pasted on another picture"


def _shared(x: int, y: int) -> Verdict:
    """Tones some other copy shares against tones none shares (an edit of them)."""
    if x and not y:
        return 1, "other copies share its tones, none the other's"
    if y and not x:
        return -1, ""
    return None


def _clipping(x: float, y: float) -> Verdict:
    """Clipped highlights and shadows: a clear difference, not JPEG noise around 0 and 255."""
    if y >= 3 * x + 0.01:
        return 1, "fewer clipped highlights and shadows"
    if x >= 3 * y + 0.01:
        return -1, ""
    return None


def _real(look: Look) -> float:
    return float(look.pixels)


def _upscaled(a: _Merit, b: _Merit) -> Verdict:
    """One copy has many more pixels, and the other's pixels enlarged explain them (up to
    ENLARGED; up to AMBIGUOUS when its top octave is also flat): it is an enlargement
    (search/keeper/enlarged.py). Where the crops cannot tell, the top octave alone."""
    for small, large, sign in ((a, b, 1), (b, a, -1)):
        s, g = small.look, large.look
        assert s is not None and g is not None
        if g.pixels < UPSCALED * s.pixels:
            continue
        flat = g.detail < min(FLATTER * s.detail, FLAT)
        left = residual(s, _size(small), g, _size(large))
        explained = left is not None and (left <= ENLARGED or (flat and left <= AMBIGUOUS))
        if explained or (left is None and flat):
            return sign, ENLARGEMENT
    return None


ENLARGEMENT = "the other is an enlargement (more pixels, no more detail)"


def _size(m: _Merit) -> tuple[int, int]:
    return m.record.width, m.record.height
