"""Exact and near duplicates among indexed images, in disjoint groups around the copy to keep.

Two modes. By default, copy detection (search/copies): candidates from the stored vectors with
normalised copy scores and regional views, local-feature verification of the uncertain ones,
thresholds from the model card. With `threshold`, the plain mode: a pair is a duplicate when
the cosine of its stored vectors reaches it (a BLAS range join; no verification). Either way,
exact copies (same bytes) are one node, ignored pairs are left out, and groups are built by
search/copies/groups.py. Results are cached in the catalog for the generation and options that
produced them, so asking again with other outputs is instant.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import numpy as np

from indexer.options import ModelOptions
from indexer.orientation import upright_estimator
from indexer.spec import resolve_model
from search.copies.candidates import Descriptors, Engine, find_candidates
from search.copies.cellviews import stored_views
from search.copies.decide import Decided, Thresholds, decide
from search.copies.explain import cached_in, confirming
from search.copies.groups import build_groups
from search.copies.join import Shelf
from search.copies.verify import FEATURES_VERSION
from search.keeper.look import LOOKS, Look, format_of, look_at
from search.keeper.policy import DEFAULT_KEEP, KeepPolicy, parse_keep
from search.per_content import per_content, per_contents
from search.records import Chooser, DuplicateGroup, Edge, Member, Verification
from search.sets import Sets, preferring_reference
from search.steps import SILENT, Steps
from search.workers import LOCAL, Workers
from store import ImageRecord, Store

__all__ = ["DupeOptions", "DuplicateGroup", "Found", "Member", "find_duplicates"]
log = logging.getLogger("imgsearch.search")
CACHE_VERSION = 11  # of how pairs are found: cached pairs of another version are found again


@dataclass(frozen=True)
class DupeOptions:
    threshold: float | None = None  # plain mode: cosine at least this (None: copy detection)
    copy_threshold: float | None = None  # copy mode: accept at this copy score (None: the card)
    exact_only: bool = False
    keep: KeepPolicy = field(default_factory=lambda: parse_keep(DEFAULT_KEEP))
    rotations: bool = False  # also copies turned by 90/180/270 degrees (runs the model)
    verify: bool = True  # copy mode: verify the uncertain band with local features
    embedding: ModelOptions = field(default_factory=ModelOptions)
    sets: Sets = field(default_factory=Sets)  # reference folders, sets compared across
    workers: Workers = LOCAL  # where copy detection's pieces run (`--engine ray`: a cluster)


@dataclass(frozen=True)
class Found:
    """What `find_duplicates` found, and how."""

    mode: str  # "copies", "cosine" or "exact"
    threshold: float  # copy score (copies) or cosine (cosine) a pair needed; 1.0 for exact
    groups: list[DuplicateGroup]
    calibrated: bool  # the threshold is the model card's calibrated value
    checked: int = 0  # pairs verified with local features
    cached: bool = False  # the pairs came from the catalog's cache
    feature_seconds: float = 0.0  # reading images again and extracting their local features
    verify_seconds: float = 0.0  # matching and RANSAC over the `checked` pairs
    formats: dict[int, str] = field(default_factory=dict)  # each grouped file's format, by id
    sets: Sets = field(default_factory=Sets)  # as the options gave them
    # The candidate join's neighbour recall against exact search on a sample (Candidates.recall)
    candidate_recall: float | None = None

    def format_of(self, record: ImageRecord) -> str:
        return self.formats.get(record.id, "?")


def find_duplicates(
    store: Store, options: DupeOptions | None = None, steps: Steps = SILENT
) -> Found:
    """Groups: exact ones first, then near ones, largest first; every file in one at most.
    `steps`: where to report the long steps (the CLI's progress bars)."""
    options = options or DupeOptions()
    records = list(store.catalog.file_states().values())
    by_hash: dict[str, list[ImageRecord]] = {}
    for record in records:
        by_hash.setdefault(record.content_hash, []).append(record)
    representatives = {h: min(files, key=lambda r: r.id) for h, files in by_hash.items()}
    edges: list[Edge] = []
    mode, threshold, calibrated, checked, cached = "exact", 1.0, True, 0, False
    recall: float | None = None
    seconds = (0.0, 0.0)
    if not options.exact_only:
        one_each = {r.id: r for r in representatives.values()}  # one file per content, by id
        key, generation = _cache_key(store, options), store.catalog.generation()
        stored = _from_cache(store.caches.cached(key))
        if stored is not None:
            mode, threshold, calibrated, decided = stored
            cached = True
        else:
            shelf = Shelf(options.workers.resume_in(store.home), f"{key}@{generation}")
            mode, threshold, calibrated, decided = _pairs(store, one_each, options, steps, shelf)
        edges, checked, recall = decided.edges, decided.checked, decided.candidate_recall
        if not cached:
            seconds = (decided.feature_seconds, decided.verify_seconds)
            store.caches.cache(key, _to_cache(mode, threshold, calibrated, decided))
            shelf.clear()  # the join's finished shards: the result is cached now
    similarity = _similarity(store, representatives) if edges else None
    looks = _looks(store, by_hash, edges, steps) if options.keep.key is None else look_at
    # The rotation model, if its weights are in the cache, tells turned saves apart.
    upright = upright_estimator() if edges and options.keep.key is None else None
    chosen = options.keep.chooser(similarity, looks, upright)
    choose = _respecting(store.catalog.chosen_keepers(), chosen)
    choose = preferring_reference(options.sets, choose)
    confirm = confirming(cached_in(store)) if mode == "copies" else None
    groups = build_groups(records, edges, store.catalog.ignored_pairs(), choose, confirm)
    groups = [g for g in groups if options.sets.covers(g)]
    formats = _formats(groups, looks if options.keep.key is None else None)
    return Found(
        mode,
        threshold,
        groups,
        calibrated,
        checked,
        cached,
        *seconds,
        formats,
        options.sets,
        recall,
    )


def _formats(
    groups: Sequence[DuplicateGroup], looks: Callable[[ImageRecord], Look | None] | None
) -> dict[int, str]:
    """Each grouped file's format: from the keeper's look when it took one, else its header."""
    found = {}
    for record in (r for g in groups for r in g.files):
        look = looks(record) if looks else None
        found[record.id] = look.format if look is not None else format_of(record)
    return found


def _respecting(chosen: set[str], choose: Chooser) -> Chooser:
    """The policy's keeper, unless the user chose one of the files in review."""
    if not chosen:
        return choose

    def chooser(records: Sequence[ImageRecord], edges: Sequence[Edge]) -> tuple[ImageRecord, str]:
        picked = [r for r in records if r.content_hash in chosen]
        if picked:
            return min(picked, key=lambda r: (r.mtime_ns, r.path)), "chosen in review"
        return choose(records, edges)

    return chooser


def _looks(
    store: Store, by_hash: dict[str, list[ImageRecord]], edges: Sequence[Edge], steps: Steps
) -> Callable[[ImageRecord], Look | None]:
    """The keeper's look at every file of a group, made at once (in parallel, once per
    content, cached in the catalog by content) rather than file by file."""
    paired = {i for e in edges for i in (e.a, e.b)}
    wanted = [
        r
        for files in by_hash.values()
        if len(files) > 1 or any(f.id in paired for f in files)
        for r in files
    ]
    found, _ = per_content(store, LOOKS, wanted, steps)
    known = {r.id for r in wanted}

    def look(record: ImageRecord) -> Look | None:
        return found.get(record.id) if record.id in known else look_at(record)

    return look


def _similarity(
    store: Store, representatives: dict[str, ImageRecord]
) -> Callable[[ImageRecord, ImageRecord], float]:
    """The cosine of two files' stored vectors (by content), for the keeper."""
    ids, vectors = store.catalog.vectors([r.id for r in representatives.values()])
    row = {int(i): n for n, i in enumerate(ids)}
    of_hash = {h: row[r.id] for h, r in representatives.items() if r.id in row}

    def cosine(a: ImageRecord, b: ImageRecord) -> float:
        return float(vectors[of_hash[a.content_hash]] @ vectors[of_hash[b.content_hash]])

    return cosine


def _pairs(
    store: Store,
    records: dict[int, ImageRecord],
    options: DupeOptions,
    steps: Steps,
    shelf: Shelf,
) -> tuple[str, float, bool, Decided]:
    """The pairs among `records` (one file per content, by id: the records `dupes` read, not
    read again: a million of them are half a gigabyte)."""
    ids = sorted(records)
    if options.threshold is not None:
        found = store.index.similar_pairs(options.threshold, ids)
        edges = [Edge(a, b, s, s, 0, None) for a, b, s in found]
        return "cosine", options.threshold, False, Decided(edges, 0, [], 0.0, 0.0)
    spec = resolve_model(options.embedding, store.meta)
    card = spec.copy_thresholds
    stored_ids, vectors = store.catalog.vectors(ids)
    accept, reject, calibrated = card.accept_in(len(stored_ids)), card.reject, card.calibrated
    if options.copy_threshold is not None:
        accept, calibrated = options.copy_threshold, False
    elif not calibrated:
        log.warning(
            "%s has no calibrated copy thresholds: using copy score %.2f (see "
            "bench/copydetect.py to calibrate it)",
            spec.name,
            accept,
        )
    views = stored_views(store.catalog, stored_ids)  # read from the catalog a chunk at a time
    descriptors = Descriptors(stored_ids, vectors, views, in_place=True)  # read no more here
    if options.rotations:
        descriptors = _with_rotations(store, descriptors, options, steps)
    engine = Engine(options.workers, shelf, steps)
    # Pairs below both the reject score and the accept score are never kept (decide's band).
    floor = min(accept, reject)
    candidates = find_candidates(descriptors, store.index.gpu, card.density_floor, engine, floor)
    thresholds = Thresholds(accept, reject, options.verify)
    features_for = partial(per_contents, store, steps=steps, workers=options.workers)
    decided = decide(candidates, records, thresholds, features_for, steps, options.workers)
    return "copies", accept, calibrated, decided


def _with_rotations(
    store: Store, found: Descriptors, options: DupeOptions, steps: Steps
) -> Descriptors:
    """The descriptors of every image turned by 90, 180 and 270 degrees (runs the model)."""
    from indexer.embedding import ROTATIONS, embed_rotations
    from indexer.runtime import load_embedder

    spec = resolve_model(options.embedding, store.meta)
    records = store.catalog.records(found.ids.tolist())
    paths = [records[int(i)].path for i in found.ids]
    embedder = load_embedder(spec)
    with steps.step("embedding rotations", len(paths)) as advance:
        rows, vectors = embed_rotations(paths, embedder, spec.batch_size, advance)
    positions = np.asarray(rows, dtype=np.int64)
    angles = np.tile(np.asarray(ROTATIONS, dtype=np.int64), len(positions) // len(ROTATIONS))
    return replace(found, rotated=vectors, rotated_of=positions, rotated_angle=angles)


def _cache_key(store: Store, options: DupeOptions) -> str:
    asked = {
        "v": CACHE_VERSION,
        "features": FEATURES_VERSION,
        "model": store.meta.model,
        "threshold": options.threshold,
        "copy_threshold": options.copy_threshold,
        "rotations": options.rotations,
        "verify": options.verify,
    }
    return "dupes:" + hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:24]


def _to_cache(mode: str, threshold: float, calibrated: bool, decided: Decided) -> bytes:
    edges = [
        [e.a, e.b, e.score, e.cosine, e.angle, asdict(e.check) if e.check else None, e.scored_tilt]
        for e in decided.edges
    ]
    return json.dumps(
        {
            "mode": mode,
            "threshold": threshold,
            "calibrated": calibrated,
            "checked": decided.checked,
            "candidate_recall": decided.candidate_recall,
            "edges": edges,
        }
    ).encode()


def _from_cache(data: bytes | None) -> tuple[str, float, bool, Decided] | None:
    """A cached result, or None when there is none or it does not decode (then it is found
    again and cached over: a damaged cache row never stops `dupes`)."""
    if data is None:
        return None
    try:
        stored = json.loads(data)
        edges = [
            Edge(a, b, s, c, angle, Verification(**check) if check else None, scored)
            for a, b, s, c, angle, check, scored in stored["edges"]
        ]
        recall = stored.get("candidate_recall")
        decided = Decided(edges, stored["checked"], [], 0.0, 0.0, recall)
        return stored["mode"], stored["threshold"], stored["calibrated"], decided
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        log.warning("the cached duplicate pairs are damaged (%s): found again", exc)
        return None
