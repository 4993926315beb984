"""Nearest-neighbour queries: by stored id, by indexed path, or by image files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer.errors import InvalidOption, UnreadableImage
from indexer.models import canonical_name
from indexer.options import EmbedOptions, ModelChoice
from store import ImageRecord, ItemNotFound, Store, Vector, Vectors

if TYPE_CHECKING:
    from indexer.embed import Embedder


@dataclass(frozen=True)
class Match:
    record: ImageRecord
    score: float  # cosine similarity to the query


@dataclass(frozen=True)
class QueryResult:
    query: str  # the query image's path, or the id queried
    matches: list[Match]


@dataclass(frozen=True)
class QueryOptions:
    k: int = 10
    min_score: float | None = None
    tag: str | None = None  # only images with a matching tag (models with a named head)


def by_id(store: Store, image_id: int, options: QueryOptions) -> QueryResult:
    """Neighbours of a stored image, itself excluded. Needs neither torch nor the model."""
    vector = store.vector(image_id)
    return _search(store, vector[None, :], [str(image_id)], options, frozenset({image_id}))[0]


def by_path(store: Store, path: str, options: QueryOptions) -> QueryResult:
    """Neighbours of an indexed file, itself excluded."""
    record = store.record_by_path(os.path.abspath(path))
    vector = store.vector(record.id)
    return _search(store, vector[None, :], [path], options, frozenset({record.id}))[0]


def by_vector(store: Store, vector: Vector, label: str, options: QueryOptions) -> QueryResult:
    """Neighbours of a vector made elsewhere (an upload embedded by `imgsearch serve`)."""
    return _search(store, vector[None, :], [label], options)[0]


def by_images(
    store: Store,
    paths: Sequence[str],
    options: QueryOptions,
    embedding: EmbedOptions | None = None,
) -> list[QueryResult]:
    """Neighbours of image files, embedded with the index's own model.

    A file that is indexed and unchanged on disk uses its stored vector, so it costs no model
    load; it then finds itself at rank 1.
    """
    embedding = embedding or EmbedOptions()
    if embedding.model is not None:
        store.check_model(canonical_name(embedding.model))
    for path in paths:
        if not os.path.isfile(path):
            raise UnreadableImage(path, "no such file")
    vectors = [_stored_vector(store, path) for path in paths]
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        fresh = _embed(store, [paths[i] for i in missing], embedding)
        for i, vector in zip(missing, fresh, strict=True):
            vectors[i] = vector
    return _search(store, np.stack([v for v in vectors if v is not None]), paths, options)


def _stored_vector(store: Store, path: str) -> np.ndarray | None:
    try:
        record = store.record_by_path(os.path.abspath(path))
    except ItemNotFound:
        return None
    st = os.stat(path)
    if (record.size, record.mtime_ns) != (st.st_size, st.st_mtime_ns):
        return None
    return store.vector(record.id)


def index_embedder(store: Store, embedding: EmbedOptions) -> Embedder:
    """The index's own model, ready to embed more images. Imports torch: only when needed."""
    from indexer.pipeline import load_embedder

    recorded = Path(store.meta.weights) if store.meta.weights else None
    size = store.meta.input_size
    model = ModelChoice(store.meta.model, embedding.weights or recorded, size)
    return load_embedder(model, embedding.runtime)


def _embed(store: Store, paths: Sequence[str], embedding: EmbedOptions) -> Vectors:
    from indexer.pipeline import embed_images

    return embed_images(paths, index_embedder(store, embedding), embedding.batch_size)


def _search(
    store: Store,
    queries: Vectors,
    labels: Sequence[str],
    options: QueryOptions,
    exclude: frozenset[int] = frozenset(),
) -> list[QueryResult]:
    if options.k < 1:
        raise InvalidOption(f"-k must be >= 1, got {options.k}")
    only = None
    if options.tag is not None:
        only = frozenset(store.ids_with_tag(options.tag))
        if not only:
            raise ItemNotFound(
                f"no indexed image has a tag matching {options.tag!r} (`imgsearch tags` lists them)"
            )
    hits = store.search(queries, options.k, exclude, only)
    records = store.records({hit.id for row in hits for hit in row})
    results = []
    for label, row in zip(labels, hits, strict=True):
        matches = [
            Match(records[hit.id], hit.score)
            for hit in row
            # A record removed by a concurrent index run since the search is left out.
            if hit.id in records and (options.min_score is None or hit.score >= options.min_score)
        ]
        results.append(QueryResult(label, matches))
    return results
