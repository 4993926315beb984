"""Nearest-neighbour queries: by stored id, by indexed path, by vector, or by image files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.errors import UnreadableImage
from indexer.options import ModelOptions
from indexer.runtime import Embedder
from indexer.spec import resolve_model
from store import ImageRecord, InvalidOption, ItemNotFound, Store, Vector, Vectors


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


@dataclass(frozen=True)
class QueryOptions:
    k: int = 10
    min_score: float | None = None
    tag: str | None = None  # only images with a matching tag (models with a named head)
    verify: bool = True  # query images: check the top candidates with local features
    embedding: ModelOptions = field(default_factory=ModelOptions)


def by_id(store: Store, image_id: int, options: QueryOptions) -> QueryResult:
    """Neighbours of a stored image, itself excluded. Needs neither torch nor the model."""
    vector = store.vector(image_id)
    record = store.records([image_id])[image_id]
    found = _search(store, vector[None, :], options, frozenset({image_id}))[0]
    return QueryResult(str(image_id), found, record)


def by_path(store: Store, path: str, options: QueryOptions) -> QueryResult:
    """Neighbours of an indexed file, itself excluded."""
    record = store.record_by_path(os.path.abspath(path))
    vector = store.vector(record.id)
    found = _search(store, vector[None, :], options, frozenset({record.id}))[0]
    return QueryResult(path, found, record)


def by_vector(store: Store, vector: Vector, label: str, options: QueryOptions) -> QueryResult:
    """Neighbours of a vector made elsewhere (an upload, or a script's own embedding). It is
    L2-normalised here, so scores are cosines; a zero or non-finite vector is refused."""
    row = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(row)) if np.all(np.isfinite(row)) else 0.0
    if row.shape != (store.meta.dim,) or norm == 0.0:
        raise InvalidOption(
            f"must be a finite, non-zero vector of {store.meta.dim} values", field="vector"
        )
    return QueryResult(label, _search(store, (row / norm)[None, :], options)[0])


def by_images(store: Store, paths: Sequence[str], options: QueryOptions) -> list[QueryResult]:
    """Neighbours of image files, embedded with the index's own model.

    A file that is indexed and unchanged on disk uses its stored vector (and finds itself at
    rank 1), so it costs no model load.
    """
    spec = resolve_model(options.embedding, store.meta)  # refuses another model, once
    for path in paths:
        if not os.path.isfile(path):
            raise UnreadableImage(path, "no such file")
    vectors = [_stored_vector(store, path) for path in paths]
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        from indexer.embedding import embed_files
        from indexer.runtime import load_embedder

        embedder: Embedder = load_embedder(spec)
        fresh = embed_files([paths[i] for i in missing], embedder, spec.batch_size)
        for i, vector in zip(missing, fresh, strict=True):
            vectors[i] = vector
    found = _search(store, np.stack([v for v in vectors if v is not None]), options)
    return [QueryResult(path, matches) for path, matches in zip(paths, found, strict=True)]


def _stored_vector(store: Store, path: str) -> Vector | None:
    try:
        record = store.record_by_path(os.path.abspath(path))
    except ItemNotFound:
        return None
    st = os.stat(path)
    if (record.size, record.mtime_ns) != (st.st_size, st.st_mtime_ns):
        return None
    return store.vector(record.id)


def _search(
    store: Store, queries: Vectors, options: QueryOptions, exclude: frozenset[int] = frozenset()
) -> list[list[Match]]:
    if options.k < 1:
        raise InvalidOption(f"must be >= 1, got {options.k}", field="k")
    only = None
    if options.tag is not None:
        only = frozenset(store.ids_with_tag(options.tag))
        if not only:
            raise ItemNotFound(
                f"no indexed image has a tag matching {options.tag!r} (`imgsearch tags` lists them)"
            )
    hits = store.search(queries, options.k, exclude, only)
    records = store.records({hit.id for row in hits for hit in row})
    return [
        [
            Match(records[hit.id], hit.score)
            for hit in row
            # A record removed by a concurrent index run since the search is left out.
            if hit.id in records and (options.min_score is None or hit.score >= options.min_score)
        ]
        for row in hits
    ]
