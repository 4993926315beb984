"""Pairs of contents the user said are not duplicates (`dupes --ignore`), by content hash."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from store.schema import ignored_pairs


def pairs(engine: Engine) -> set[tuple[str, str]]:
    """Content-hash pairs (a < b) marked as not duplicates."""
    with engine.connect() as conn:
        rows = conn.execute(select(ignored_pairs.c.hash_a, ignored_pairs.c.hash_b))
        return {(a, b) for a, b in rows}


def remember(engine: Engine, hashes: Sequence[str]) -> int:
    """Remember every pair among `hashes`. Returns how many were new."""
    unique = sorted(set(hashes))
    rows = [{"hash_a": a, "hash_b": b} for i, a in enumerate(unique) for b in unique[i + 1 :]]
    if not rows:
        return 0
    with engine.begin() as conn:
        before = conn.execute(select(func.count()).select_from(ignored_pairs)).scalar_one()
        conn.execute(sqlite_insert(ignored_pairs).on_conflict_do_nothing(), rows)
        after = conn.execute(select(func.count()).select_from(ignored_pairs)).scalar_one()
    return int(after - before)
