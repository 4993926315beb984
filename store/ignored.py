"""Pairs of contents the user said are not duplicates (`dupes --ignore`), by content hash."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, and_, delete, func, or_, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from store.schema import bump_decisions, ignored_pairs


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
        bump_decisions(conn)
    return int(after - before)


def forget(engine: Engine, hashes: Sequence[str]) -> int:
    """Take "not duplicates" back for every pair among `hashes`. Returns how many were."""
    unique = sorted(set(hashes))
    wanted = [(a, b) for i, a in enumerate(unique) for b in unique[i + 1 :]]
    if not wanted:
        return 0
    with engine.begin() as conn:
        gone = conn.execute(
            delete(ignored_pairs).where(
                or_(*(and_(ignored_pairs.c.hash_a == a, ignored_pairs.c.hash_b == b)
                      for a, b in wanted))
            )
        ).rowcount  # fmt: skip
        bump_decisions(conn)
    return int(gone)
