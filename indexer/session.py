"""One index run, whatever the engine: lock, store, model spec, plan, commits, prune, report.

`IndexSession` is the one place that turns options and the index's own record into a model spec,
opens the store (creating it when the home has none), checks the index type, plans against the
catalog, counts what each committed file was (added, updated, touched, reused), prunes,
maintains and verifies the FAISS index, records the precision and runtime, and reports. The
engines (indexer/pipeline.py locally, indexer/distributed.py on Ray) only turn planned files
into `Outcome`s and hand them to `commit`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from indexer.decode import decode_file
from indexer.embedder import TOP_TAGS, Embedder
from indexer.errors import UnreadableImage
from indexer.options import IndexOptions
from indexer.plan import Plan, make_plan
from indexer.runtime import load_embedder, resolve_runtime
from indexer.scan import Skipped
from indexer.spec import ModelSpec, resolve_model
from store import (
    Embedded,
    Failure,
    FileStat,
    ImageFile,
    IndexNotFound,
    IndexSpec,
    InvalidOption,
    NewIndex,
    Store,
    Writer,
)

log = logging.getLogger("imgsearch.indexer")


@dataclass(frozen=True)
class Reused:
    """A file whose content is already indexed: its stored vector is used."""

    file: ImageFile
    stat: FileStat


Outcome = Embedded | Failure | Reused


NOT_FINITE = "the model gave a vector that is not finite (are its weights damaged?)"


@dataclass(frozen=True)
class IndexReport:
    added: int
    updated: int
    unchanged: int
    removed: int
    failed: tuple[Failure, ...]  # tried in this run and failed (or could not even be listed)
    not_retried: tuple[Failure, ...]  # failed in an earlier run and unchanged since
    embedded: int  # images that went through the backbone
    reused: int  # images whose stored vector was reused (same content elsewhere or touched)
    model: str
    device: str
    precision: str
    runtime: str
    seconds: float
    index_change: IndexSpec | None = None  # the FAISS index was rebuilt as this at the end
    repaired: str | None = None  # the FAISS file was found damaged and rebuilt: why

    @property
    def images_per_second(self) -> float:
        return (self.embedded + self.reused) / self.seconds if self.seconds > 0 else 0.0


class IndexSession:
    """Use as a context manager: `with IndexSession(home, options) as session: ...`.

    Entering takes the writer lock and opens the catalog, or creates it on a new home (the model
    is loaded then: the catalog records its dimension); the model spec is resolved once, against
    what the catalog records. Otherwise the model is loaded when something is to be embedded.
    """

    store: Store
    spec: ModelSpec

    def __init__(self, home: str | os.PathLike[str], options: IndexOptions) -> None:
        if options.model.batch_size is not None and options.model.batch_size < 1:
            raise InvalidOption(f"must be >= 1, got {options.model.batch_size}", field="batch_size")
        if options.max_pixels < 1:
            raise InvalidOption(f"must be >= 1, got {options.max_pixels}", field="max_pixels")
        resolve_runtime(options.model.compute)  # refuse a bad device or runtime before any work
        self.home = Path(home)
        self.options = options
        self.started = time.perf_counter()
        self._embedder: Embedder | None = None
        self._writer = Writer(self.home)
        self.added = self.updated = self.touched = self.embedded = self.reused = 0
        self.failed: list[Failure] = []
        self.refused: set[str] = set()  # paths the scan found but refused: not vanished
        self.previous_hashes: dict[str, str] = {}

    def __enter__(self) -> IndexSession:
        self._writer.__enter__()
        try:
            self.store = self._open_or_create()
        except BaseException:
            self._writer.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            # Also on Ctrl-C: the in-memory FAISS index always matches what SQLite
            # committed, so saving it spares the next run a rebuild.
            self.store.flush()
            self.store.close()
        finally:
            self._writer.__exit__(kind, exc, tb)

    def _open_or_create(self) -> Store:
        try:
            store = self._writer.open()
        except IndexNotFound:
            self.spec = resolve_model(self.options.model, None)
            embedder = load_embedder(self.spec, labels=True)
            settings = {"index_choice": self.options.index_type or "auto", **self.spec.settings()}
            if self.options.max_index_memory:
                settings["max_index_memory"] = str(self.options.max_index_memory)
            store = self._writer.create(NewIndex(embedder.name, embedder.dim, settings))
            self._use(embedder, store)
            return store
        try:
            recorded = store.meta
            self.spec = resolve_model(self.options.model, recorded)
            asked = self.options.index_type
            if asked is not None and asked != recorded.index_choice:
                raise InvalidOption(
                    f"{asked}: this index was made with {recorded.index_choice} (now "
                    f"{recorded.index_factory}); change it with `imgsearch reindex`",
                    field="index_type",
                )
        except BaseException:
            store.close()
            raise
        return store

    # -- planning --------------------------------------------------------------------------

    def plan(self, files_found: Iterable[FileStat], folders: Sequence[str]) -> Plan:
        """What to do: against the catalog (nothing is read from the files yet). The folders
        are remembered, so that actions never move copies to where `index` looks."""
        known = self.store.meta.indexed_folders
        if not set(folders) <= set(known):
            together = sorted(set(known) | set(folders))
            self.store.catalog.record_setting("folders", json.dumps(together))
        indexed = self.store.catalog.file_states()
        failures = self.store.catalog.failures()
        plan = make_plan(files_found, indexed, failures, folders)
        self.previous_hashes = plan.previous_hashes
        return plan

    def skipped(self, skipped: Sequence[Skipped]) -> None:
        """Files the scan refused or could not even stat, and folders it could not list:
        reported and recorded as failed, with the reason."""
        refused = [Failure(s.path, -1, -1, s.reason) for s in skipped]
        self.failed += refused
        self.refused |= {f.path for f in refused}
        self.store.commit_batch([], refused)

    # -- the model -------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The backbone, loaded on first use (a run with nothing to embed never loads it)."""
        if self._embedder is None:
            self._use(load_embedder(self.spec, labels=True), self.store)
        assert self._embedder is not None
        return self._embedder

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size or self.embedder.default_batch

    def _use(self, embedder: Embedder, store: Store) -> None:
        if embedder.dim != store.meta.dim:
            raise InvalidOption(
                f"{embedder.name} gives {embedder.dim}-d vectors, the index "
                f"holds {store.meta.dim}-d ones",
                field="model",
            )
        store.catalog.record_setting("precision", embedder.precision)
        store.catalog.record_setting("runtime", embedder.runtime)
        self._embedder = embedder

    # -- committing ------------------------------------------------------------------------

    def commit(
        self, outcomes: Sequence[Outcome], update_index: bool = True, leftover: bool = False
    ) -> None:
        """Write one batch: embedded files, reused contents, failures; count each. `leftover`:
        outcomes a killed run produced (its shards), not embedded by this one."""
        store = self.store
        reuse = [o for o in outcomes if isinstance(o, Reused)]
        stored = store.catalog.stored_vectors(o.file.content_hash for o in reuse)
        done: list[Embedded] = []
        failed: list[Failure] = []
        for outcome in outcomes:
            if isinstance(outcome, Failure):
                failed.append(outcome)
            elif isinstance(outcome, Embedded) and not np.isfinite(outcome.vector).all():
                file = outcome.file  # damaged weights: never stored as an answer
                failed.append(Failure(file.path, file.size, file.mtime_ns, NOT_FINITE))
            elif isinstance(outcome, Embedded):
                done.append(outcome)
            elif (hit := stored.get(outcome.file.content_hash)) is not None:
                self.reused += 1
                done.append(
                    Embedded(outcome.file, hit.width, hit.height, hit.vector, views=hit.views)
                )
            else:  # the stored copy changed earlier in this run: embed it after all
                try:
                    done.append(self.embed_now(outcome.file))
                except UnreadableImage as exc:
                    stat = outcome.stat
                    failed.append(Failure(stat.path, stat.size, stat.mtime_ns, exc.reason))
        if not leftover:
            self.embedded += sum(1 for o in outcomes if isinstance(o, Embedded))
        for e in done:
            previous = self.previous_hashes.get(e.file.path)
            if previous is None:
                self.added += 1
            elif previous == e.file.content_hash:
                self.touched += 1
            else:
                self.updated += 1
        if not leftover:  # a killed run's failures show as not retried, once planned
            self.failed.extend(failed)
        store.commit_batch(done, failed, update_index)

    def embed_now(self, file: ImageFile) -> Embedded:
        """One file decoded and embedded here and now. Raises UnreadableImage."""
        embedder = self.embedder
        decoded = decode_file(file.path, embedder.prep, self.options.max_pixels)
        self.embedded += 1
        views = None if decoded.views is None else decoded.views[None]
        found = embedder.run(decoded.pixels[None], TOP_TAGS if embedder.labels else 0, views)
        described = None if found.views is None else found.views[0]
        return Embedded(
            file, decoded.width, decoded.height, found.vectors[0], found.tags[0], described
        )

    # -- finishing -------------------------------------------------------------------------

    def finish(self, plan: Plan, change: IndexSpec | None = None) -> IndexReport:
        """Prune what vanished, rebuild the FAISS index if its kind must change, check its file
        thoroughly, and report."""
        store = self.store
        vanished = [path for path in plan.vanished if path not in self.refused]
        removed = store.remove_paths(vanished) if self.options.prune else 0
        change = store.index.maintain() or change  # a size boundary, or HNSW tombstones
        repaired = store.index.verify()
        embedder = self._embedder
        recorded = store.meta
        return IndexReport(
            added=self.added,
            updated=self.updated,
            unchanged=plan.unchanged + self.touched,
            removed=removed,
            failed=tuple(self.failed),
            not_retried=tuple(plan.known_failures),
            embedded=self.embedded,
            reused=self.reused,
            model=recorded.model,
            device=embedder.device if embedder else "-",
            precision=embedder.precision if embedder else recorded.precision or "-",
            runtime=embedder.runtime if embedder else recorded.runtime or "-",
            seconds=time.perf_counter() - self.started,
            index_change=change,
            repaired=repaired,
        )
