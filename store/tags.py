"""Class tags of stored contents: written with each batch, counted, and matched by word.

Tags are keyed by content hash, so they follow a vector that is reused for a copy or a rename,
and they are dropped once no indexed file has that content any more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, Engine, delete, distinct, func, insert, select

from store.records import Embedded
from store.schema import content_cache, images, tags


def write(conn: Connection, embedded: Sequence[Embedded]) -> None:
    """Replace the tags of every content in `embedded` that comes with tags."""
    tagged = {e.file.content_hash: e.tags for e in embedded if e.tags}
    if not tagged:
        return
    conn.execute(delete(tags).where(tags.c.content_hash.in_(list(tagged))))
    rows = [
        {"content_hash": h, "rank": rank, "label": t.label, "score": t.score}
        for h, found in tagged.items()
        for rank, t in enumerate(found)
    ]
    conn.execute(insert(tags), rows)


def prune_contents(conn: Connection, candidates: Iterable[str]) -> None:
    """Drop what is kept by content (tags, the content cache) for the `candidates` contents
    that no indexed file has any more."""
    hashes = list(set(candidates))
    if hashes:
        still = select(images.c.content_hash).where(images.c.content_hash.in_(hashes))
        for table in (tags, content_cache):
            orphan = table.c.content_hash.in_(hashes) & table.c.content_hash.not_in(still)
            conn.execute(delete(table).where(orphan))


def counts(engine: Engine, min_score: float = 0.0) -> list[tuple[str, int]]:
    """(label, number of indexed images carrying it), most frequent first."""
    query = (
        select(tags.c.label, func.count(distinct(images.c.id)).label("n"))
        .join(images, images.c.content_hash == tags.c.content_hash)
        .where(tags.c.score >= min_score)
        .group_by(tags.c.label)
        .order_by(func.count(distinct(images.c.id)).desc(), tags.c.label)
    )
    with engine.connect() as conn:
        return [(label, int(n)) for label, n in conn.execute(query)]


def matching_labels(labels: Iterable[str], word: str) -> set[str]:
    """Labels equal to `word`, or having it as one of their words (case-insensitive):
    "retriever" matches "golden retriever" and "golden_retriever", not "retrievers"."""
    wanted = word.casefold().strip()
    return {
        label
        for label in labels
        if label.casefold() == wanted or wanted in re.split(r"[\W_]+", label.casefold())
    }


def ids_with_tag(engine: Engine, word: str, min_score: float = 0.0) -> set[int]:
    """Ids of the indexed images with a tag that matches `word`."""
    with engine.connect() as conn:
        labels = conn.execute(select(tags.c.label).distinct()).scalars().all()
        wanted = matching_labels(labels, word)
        if not wanted:
            return set()
        query = (
            select(images.c.id)
            .join(tags, images.c.content_hash == tags.c.content_hash)
            .where(tags.c.label.in_(wanted), tags.c.score >= min_score)
        )
        return set(conn.execute(query).scalars())


def of_ids(engine: Engine, ids: Iterable[int]) -> dict[int, list[tuple[str, float]]]:
    """The tags of each image id, best first."""
    wanted = list(ids)
    if not wanted:
        return {}
    query = (
        select(images.c.id, tags.c.label, tags.c.score)
        .join(tags, images.c.content_hash == tags.c.content_hash)
        .where(images.c.id.in_(wanted))
        .order_by(images.c.id, tags.c.rank)
    )
    found: dict[int, list[tuple[str, float]]] = {}
    with engine.connect() as conn:
        for image_id, label, score in conn.execute(query):
            found.setdefault(int(image_id), []).append((label, float(score)))
    return found
