"""Which copy of a group is tilted: turned by a few degrees against the others (rotated by
hand and saved, with its corners filled or cropped). Verification measures each pair's turn
(search/records.Verification.tilt: how far it is off a right angle, so copies turned by 90
degrees are no tilt); the copy whose pairs find it tilted where the other copies' pairs among
themselves do not is the derivative. A group of two or three copies cannot say which is
straight (three: one tilted copy, or an original and two copies tilted alike).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from search.keeper.verdict import Verdict
from search.records import Edge

# A pair turned this far off a right angle is tilted. On bench/copyset.py's third development
# draw (--edit-seed 11), 2,977 verified pairs of untilted copies measured at most 1.0 degrees
# (99 % under 0.33), the 296 pairs with a copy tilted by 5 degrees 4.7-5.3.
TILT = 2.0
# A copy is the tilted one when a share of its pairs larger by more than this finds it tilted
# than of the other's: with four copies and one tilted, 1.0 against 1/3. Three copies (1.0
# against 0.5) cannot tell one tilted copy from an original with two copies tilted alike.
TILTED = 0.5


def tilted_shares(content_of: Mapping[int, int], count: int, edges: Sequence[Edge]) -> list[float]:
    """For each of `count` contents (`content_of`: image id -> content), the share of its
    pairs with a measured tilt that are tilted by TILT or more (0.0 when none is measured)."""
    tilt: dict[tuple[int, int], float] = {}
    for edge in edges:
        x, y = content_of.get(edge.a), content_of.get(edge.b)
        if x is None or y is None or x == y or edge.tilt is None:
            continue
        tilt[(min(x, y), max(x, y))] = abs(edge.tilt)
    measured, tilted = [0] * count, [0] * count
    for (x, y), degrees in tilt.items():
        for side in (x, y):
            measured[side] += 1
            tilted[side] += degrees >= TILT
    return [t / m if m else 0.0 for t, m in zip(tilted, measured, strict=True)]


def straighter(share_a: float, share_b: float, edge: Edge | None) -> Verdict:
    """+1 when a is the straight copy of a tilted pair (its share of tilted pairs clearly the
    smaller), -1 when b is; None when the pair is not tilted or the group cannot tell."""
    if edge is None or edge.tilt is None or abs(edge.tilt) < TILT:
        return None
    if share_b - share_a > TILTED:
        turned = f"{abs(edge.tilt):.0f}"
        return 1, f"straight, as the other copies are (the other is turned {turned} degrees)"
    if share_a - share_b > TILTED:
        return -1, ""
    return None
