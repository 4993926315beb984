"""Nearest-neighbour queries: by stored id, by indexed path, by vector, or by image files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.embedder import Embedder
from indexer.errors import UnreadableImage
from indexer.options import ModelOptions
from indexer.spec import resolve_model
from search.copies.rerank import CANDIDATES, Query, rerank
from store import Hit, ImageRecord, InvalidOption, ItemNotFound, Store, Vector

VIEW_HITS = 5  # images each regional view of a query adds as candidates


@dataclass(frozen=True)
class Match:
    record: ImageRecord
    score: float  # cosine similarity to the query
    verified: int | None = None  # local features matched geometrically (None: not checked)


@dataclass(frozen=True)
class QueryResult:
    query: str  # what was asked: an image's path, an id, or a label
    matches: list[Match]
    record: ImageRecord | None = None  # the queried image, when it is an indexed one


MAX_K = 10_000  # neighbours one query may ask for


@dataclass(frozen=True)
class QueryOptions:
    k: int = 10
    min_score: float | None = None
    tag: str | None = None  # only images with a matching tag (models with a named head)
    verify: bool = True  # query images: check the top candidates with local features
    embedding: ModelOptions = field(default_factory=ModelOptions)


def by_id(store: Store, image_id: int, options: QueryOptions = QueryOptions()) -> QueryResult:
    """Neighbours of a stored image, itself excluded. Needs neither torch nor the model."""
    vector = store.catalog.vector(image_id)
    record = store.catalog.records([image_id])[image_id]
    return QueryResult(str(image_id), _indexed(store, record, vector, options), record)


def by_path(store: Store, path: str, options: QueryOptions = QueryOptions()) -> QueryResult:
    """Neighbours of an indexed file, itself excluded."""
    record = _record_at(store, path)
    vector = store.catalog.vector(record.id)
    return QueryResult(path, _indexed(store, record, vector, options), record)


def _record_at(store: Store, path: str) -> ImageRecord:
    """The indexed file at `path`: by its real path (how files are indexed), else as written
    (a catalog made before links were resolved)."""
    try:
        return store.catalog.record_by_path(os.path.realpath(path))
    except ItemNotFound:
        return store.catalog.record_by_path(os.path.abspath(path))


def _indexed(
    store: Store, record: ImageRecord, vector: Vector, options: QueryOptions
) -> list[Match]:
    resolve_model(options.embedding, store.meta)  # another model asked for: refused
    views = store.catalog.views([record.id]).get(record.id)
    query = Query(vector, views, record.path if options.verify else None)
    return _search(store, [query], options, frozenset({record.id}))[0]


def by_vector(
    store: Store, vector: Vector, label: str = "vector", options: QueryOptions = QueryOptions()
) -> QueryResult:
    """Neighbours of a vector made elsewhere (an upload, or a script's own embedding). It is
    L2-normalised here, so scores are cosines; a zero or non-finite vector is refused."""
    row = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(row)) if np.all(np.isfinite(row)) else 0.0
    if row.shape != (store.meta.dim,) or norm == 0.0:
        raise InvalidOption(
            f"must be a finite, non-zero vector of {store.meta.dim} values", field="vector"
        )
    return QueryResult(label, _search(store, [Query(row / norm, None, None)], options)[0])


def by_images(
    store: Store,
    paths: Sequence[str],
    options: QueryOptions = QueryOptions(),
    embedder: Embedder | None = None,
) -> list[QueryResult]:
    """Neighbours of image files, embedded with the index's own model (`embedder`: one already
    loaded, as the server keeps it), their regional views searched and their candidates
    verified as copies, verified copies first. `imgsearch query IMAGE` and the server's upload
    search both run this.

    A file that is indexed and unchanged on disk uses its stored vector (and finds itself at
    rank 1), so it costs no model load.
    """
    spec = resolve_model(options.embedding, store.meta)  # refuses another model, once
    for path in paths:
        if not os.path.isfile(path):
            why = "a folder, not an image file" if os.path.isdir(path) else "no such file"
            raise UnreadableImage(path, why)
    queries: list[Query | None] = [_stored_query(store, path, options) for path in paths]
    missing = [i for i, q in enumerate(queries) if q is None]
    if missing:
        from indexer.embedding import embed_files
        from indexer.runtime import load_embedder

        embedder = embedder or load_embedder(spec)
        fresh = embed_files([paths[i] for i in missing], embedder, spec.batch_size)
        for n, i in enumerate(missing):
            views = fresh.views[n] if fresh.views is not None else None
            queries[i] = Query(fresh.vectors[n], views, paths[i] if options.verify else None)
    found = _search(store, [q for q in queries if q is not None], options)
    return [QueryResult(path, matches) for path, matches in zip(paths, found, strict=True)]


def _stored_query(store: Store, path: str, options: QueryOptions) -> Query | None:
    """An indexed, unchanged file's stored vector (no model needed), or None."""
    try:
        record = _record_at(store, path)
    except ItemNotFound:
        return None
    st = os.stat(path)
    if (record.size, record.mtime_ns) != (st.st_size, st.st_mtime_ns):
        return None
    views = store.catalog.views([record.id]).get(record.id)
    return Query(store.catalog.vector(record.id), views, path if options.verify else None)


def _search(
    store: Store,
    queries: Sequence[Query],
    options: QueryOptions,
    exclude: frozenset[int] = frozenset(),
) -> list[list[Match]]:
    """Each query's k nearest by cosine; with its file known (verify), its candidates and the
    images its views find are checked for copies, verified ones first (search/copies)."""
    if options.k < 1:
        raise InvalidOption(f"must be >= 1, got {options.k}", field="k")
    only = None
    if options.tag is not None:
        only = frozenset(store.catalog.ids_with_tag(options.tag))
        if not only:
            raise ItemNotFound(
                f"no indexed image has a tag matching {options.tag!r} (`imgsearch tags` lists them)"
            )
    verify = any(q.path is not None for q in queries)
    want = max(options.k, CANDIDATES) if verify else options.k
    vectors = np.stack([q.vector for q in queries])
    hits = store.index.search(vectors, want, exclude, only)
    if verify:
        hits = [
            _with_views(store, q, row, exclude, only) for q, row in zip(queries, hits, strict=True)
        ]
    records = store.catalog.records({hit.id for row in hits for hit in row})
    found = []
    for query, row in zip(queries, hits, strict=True):
        checked = rerank(store, query, row, records)
        matches = [
            Match(records[c.hit.id], c.hit.score, c.inliers)
            for c in checked
            # A record removed by a concurrent index run since the search is left out.
            if c.hit.id in records
            and (options.min_score is None or c.hit.score >= options.min_score or c.inliers)
        ]
        found.append(matches[: options.k])
    return found


def _with_views(
    store: Store, query: Query, row: list[Hit], exclude: frozenset[int], only: frozenset[int] | None
) -> list[Hit]:
    """The global hits, then those found by the query's views (scored by the global cosine)."""
    if query.views is None:
        return row
    seen = {h.id for h in row}
    extra = {
        h.id
        for view_row in store.index.search(query.views, VIEW_HITS, exclude, only)
        for h in view_row
    } - seen
    if not extra:
        return row
    ids = np.array(sorted(extra), dtype=np.int64)
    stored, vectors = store.catalog.vectors(ids.tolist())
    scores = vectors @ query.vector
    return row + [Hit(int(i), float(c)) for i, c in zip(stored, scores, strict=True)]
