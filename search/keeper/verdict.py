"""What one signal of the `best` keeper says of two copies (search/keeper/best.py)."""

from __future__ import annotations

Verdict = tuple[int, str] | None  # +1: the first is the better copy, -1: the second; reason


def differ(delta: float, margin: float, reason: str) -> Verdict:
    if delta > margin:
        return 1, reason
    if delta < -margin:
        return -1, ""
    return None


def ratio(x: float, y: float, factor: float, reason: str) -> Verdict:
    if x > factor * max(y, 1e-9):
        return 1, reason.format(x / max(y, 1e-9))
    if y > factor * max(x, 1e-9):
        return -1, ""
    return None
