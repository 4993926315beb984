"""What the user decided in review, by content hash (so it survives renames and re-runs):
the copy to keep of a group. Pairs marked "not duplicates" are store/ignored.py's."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import Engine, delete, insert, select

from store.schema import bump_decisions, keepers


def chosen(engine: Engine) -> set[str]:
    """Contents the user chose to keep."""
    with engine.connect() as conn:
        return set(conn.execute(select(keepers.c.content_hash)).scalars())


def choose(write: Engine, keep: str, others: Iterable[str]) -> None:
    """Keep `keep` in the group of `others` (their earlier choices are dropped)."""
    dropped = [h for h in set(others) if h != keep]
    with write.begin() as conn:
        if dropped:
            conn.execute(delete(keepers).where(keepers.c.content_hash.in_(dropped)))
        conn.execute(delete(keepers).where(keepers.c.content_hash == keep))
        conn.execute(insert(keepers), {"content_hash": keep, "chosen_at": time.time()})
        bump_decisions(conn)


def forget(write: Engine, contents: Iterable[str]) -> int:
    """Take back the keepers chosen among `contents` (the policy decides again). How many."""
    wanted = list(set(contents))
    with write.begin() as conn:
        gone = conn.execute(delete(keepers).where(keepers.c.content_hash.in_(wanted))).rowcount
        bump_decisions(conn)
    return int(gone)
