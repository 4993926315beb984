"""`index`: scan -> plan -> decode (workers) -> embed -> commit per batch -> prune -> report."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from indexer.backbones import load_backbone
from indexer.dataset import Batch, DecodeDataset, Item, Sample, collate
from indexer.decode import decode_file, open_rgb, read_file, to_pixels
from indexer.embed import (
    TOP_TAGS,
    Embedder,
    auto_batch_size,
    precision_name,
    resolve_device,
    resolve_dtype,
)
from indexer.errors import InvalidOption, UnreadableImage
from indexer.models import canonical_name
from indexer.options import IndexOptions, ModelChoice, Runtime
from indexer.plan import Plan, make_plan
from indexer.scan import check_folders, scan
from store import (
    Embedded,
    Failure,
    IndexMeta,
    IndexNotFound,
    IndexSpec,
    Store,
    Vectors,
    exclusive_writer,
)


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, done: int) -> None: ...


@dataclass(frozen=True)
class IndexReport:
    added: int
    updated: int
    unchanged: int
    removed: int
    failed: tuple[Failure, ...]  # tried in this run and failed
    not_retried: tuple[Failure, ...]  # failed in an earlier run and unchanged since
    embedded: int  # images that went through the backbone
    reused: int  # images whose stored vector was reused (same content elsewhere or touched)
    model: str
    device: str
    precision: str
    seconds: float
    index_change: IndexSpec | None = None  # the FAISS index was rebuilt as this at the end

    @property
    def images_per_second(self) -> float:
        return (self.embedded + self.reused) / self.seconds if self.seconds > 0 else 0.0


def load_embedder(model: ModelChoice, runtime: Runtime) -> Embedder:
    device = resolve_device(runtime.device)
    dtype = resolve_dtype(runtime.precision, device)
    return Embedder(load_backbone(model, device), device, dtype)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def index_folders(
    home: Path, roots: Sequence[str], options: IndexOptions, progress: Progress | None = None
) -> IndexReport:
    """Bring the index in `home` up to date with the image files under `roots`."""
    if options.batch_size is not None and options.batch_size < 1:
        raise InvalidOption(f"--batch-size must be >= 1, got {options.batch_size}")
    started = time.perf_counter()
    folders = check_folders(roots)
    with exclusive_writer(home):
        report = _index(home, folders, options, progress)
    return dataclasses.replace(report, seconds=time.perf_counter() - started)


def _index(
    home: Path, folders: list[str], options: IndexOptions, progress: Progress | None
) -> IndexReport:
    device = resolve_device(options.runtime.device)
    dtype = resolve_dtype(options.runtime.precision, device)
    plan, recorded = _plan(home, folders, canonical_name(options.model.name))
    check_index_type(options, recorded)
    model = with_recorded_size(options.model, recorded)
    embedder: Embedder | None = None
    if plan.todo or recorded is None:  # nothing to embed: the model is not even loaded
        embedder = Embedder(load_backbone(model, device, labels=True), device, dtype)
        backbone = embedder.backbone
        settings = new_index_settings(model, options)
        store = Store.open_for_model(home, backbone.name, backbone.dim, settings)
        store.record_setting("precision", precision_name(dtype))
    else:
        store = Store.open(home)
    run = _Run(store, plan, options.max_pixels)
    with store:
        try:
            if progress:
                progress.start(len(plan.todo))
            if embedder is not None:
                for batch in _batches(plan, embedder, options):
                    run.commit(batch, embedder)
                    if progress:
                        progress.advance(len(batch.items))
            removed = store.remove_paths(plan.vanished) if options.prune else 0
            change = store.maintain()  # a size boundary crossed, or HNSW tombstones piled up
        finally:
            # Also on Ctrl-C: the in-memory FAISS index always matches what SQLite committed,
            # so saving it spares the next run a rebuild.
            store.flush()
    return IndexReport(
        added=run.added,
        updated=run.updated,
        unchanged=plan.unchanged + run.touched,
        removed=removed,
        failed=tuple(run.failed),
        not_retried=tuple(plan.known_failures),
        embedded=run.embedded,
        reused=run.reused,
        model=store.meta.model,
        device=str(device),
        precision=precision_name(dtype),
        seconds=0.0,  # set by index_folders, which times the whole run
        index_change=change,
    )


def recorded_meta(home: Path, model: str) -> IndexMeta | None:
    """What an existing index says of itself (None: no index yet); refuses another model."""
    try:
        store = Store.open(home)
    except IndexNotFound:
        return None
    with store:
        store.check_model(model)
        return store.meta


def _plan(home: Path, folders: list[str], model: str) -> tuple[Plan, IndexMeta | None]:
    """What to do, and what the existing index says of itself (None: no index yet)."""
    try:
        store = Store.open(home)
    except IndexNotFound:  # no index yet, or one whose creation was interrupted
        return make_plan(scan(folders), {}, {}, folders), None
    with store:
        store.check_model(model)  # refuse before loading a model or reading a file
        plan = make_plan(scan(folders), store.file_states(), store.failures(), folders)
        return plan, store.meta


def with_recorded_size(model: ModelChoice, recorded: IndexMeta | None) -> ModelChoice:
    """An index keeps the input size it was made with; another one is refused."""
    if recorded is None:
        return model
    if model.size is None:
        return dataclasses.replace(model, size=recorded.input_size)
    if model.size != recorded.input_size:
        made = recorded.input_size or "its model's own size"
        raise InvalidOption(f"--size {model.size}: this index was made at {made}")
    return model


def check_index_type(options: IndexOptions, recorded: IndexMeta | None) -> None:
    """The index type is chosen when an index is created; `reindex` changes it."""
    asked = options.index_type
    if recorded is not None and asked is not None and asked != recorded.index_choice:
        raise InvalidOption(
            f"--index-type {asked}: this index was made with {recorded.index_choice} "
            f"(now {recorded.index_type}); change it with `imgsearch reindex --index-type {asked}`"
        )


def new_index_settings(model: ModelChoice, options: IndexOptions) -> dict[str, str]:
    """What a new index records besides its model's name and dimension."""
    settings = {"index_choice": options.index_type or "auto"}
    if options.max_index_memory:
        settings["max_index_memory"] = str(options.max_index_memory)
    if model.weights:
        settings["weights"] = str(model.weights.absolute())
    if model.size:
        settings["input_size"] = str(model.size)
    return settings


def _batches(plan: Plan, embedder: Embedder, options: IndexOptions) -> DataLoader[Sample]:
    prep = embedder.backbone.prep
    dataset = DecodeDataset(plan.todo, prep, plan.known_hashes, options.max_pixels)
    workers = options.workers if options.workers is not None else default_workers()
    return DataLoader(
        dataset,
        batch_size=options.batch_size or auto_batch_size(embedder),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=embedder.device.type == "cuda",  # page-locked buffers for non_blocking copies
        prefetch_factor=4 if workers else None,
    )


class _Run:
    """Counts and commits batch by batch; one SQLite transaction per batch."""

    def __init__(self, store: Store, plan: Plan, max_pixels: int) -> None:
        self.store = store
        self.max_pixels = max_pixels
        self.previous_hashes = plan.previous_hashes
        self.added = self.updated = self.touched = self.embedded = self.reused = 0
        self.failed: list[Failure] = []

    def commit(self, batch: Batch, embedder: Embedder) -> None:
        top = TOP_TAGS if embedder.tags else 0
        unit, found = embedder.run(batch.pixels, top)
        vectors, tagged = iter(unit), iter(found)
        self.embedded += len(batch.pixels)
        stored = self.store.stored_vectors(
            i.file.content_hash for i in batch.items if i.reuse and i.file
        )
        done: list[Embedded] = []
        failed: list[Failure] = []
        for item in batch.items:
            if item.error is not None or item.file is None:
                failed.append(_failure(item, item.error or "unreadable"))
                continue
            if not item.reuse:
                vector, tags = next(vectors), next(tagged)
                done.append(Embedded(item.file, item.width, item.height, vector, tags))
            elif (hit := stored.get(item.file.content_hash)) is not None:
                self.reused += 1
                done.append(Embedded(item.file, hit.width, hit.height, hit.vector))
            else:  # the stored copy changed earlier in this run: embed it after all
                try:
                    done.append(self._embed_now(item, embedder))
                except UnreadableImage as exc:
                    failed.append(_failure(item, exc.reason))
        for e in done:
            previous = self.previous_hashes.get(e.file.path)
            if previous is None:
                self.added += 1
            elif previous == e.file.content_hash:
                self.touched += 1
            else:
                self.updated += 1
        self.failed.extend(failed)
        self.store.commit_batch(done, failed)

    def _embed_now(self, item: Item, embedder: Embedder) -> Embedded:
        assert item.file is not None
        decoded = decode_file(item.file.path, embedder.backbone.prep, self.max_pixels)
        self.embedded += 1
        unit, found = embedder.run(decoded.pixels.unsqueeze(0), TOP_TAGS if embedder.tags else 0)
        return Embedded(item.file, decoded.width, decoded.height, unit[0], found[0])


def _failure(item: Item, error: str) -> Failure:
    return Failure(item.stat.path, item.stat.size, item.stat.mtime_ns, error)


def embed_images(
    paths: Sequence[str], embedder: Embedder, batch_size: int | None = None
) -> Vectors:
    """Embed a few images in this process (for queries), (n, d). Raises UnreadableImage."""
    prep = embedder.backbone.prep
    batch_size = batch_size or max(1, min(len(paths), auto_batch_size(embedder)))
    chunks = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        pixels = [decode_file(path, prep).pixels for path in chunk]
        chunks.append(embedder(torch.stack(pixels)))
    return np.concatenate(chunks)


ROTATIONS = (90, 180, 270)  # degrees, counter-clockwise


def embed_rotations(
    paths: Sequence[str], embedder: Embedder, batch_size: int | None = None
) -> tuple[list[int], Vectors]:
    """Embeddings of each file turned by 90, 180 and 270 degrees: (3 per readable file, d).

    Returns the position in `paths` of each row, so that unreadable files can be skipped.
    """
    prep = embedder.backbone.prep
    batch_size = batch_size or auto_batch_size(embedder)
    rows: list[int] = []
    chunks: list[Vectors] = []
    pending: list[torch.Tensor] = []
    for position, path in enumerate(paths):
        try:
            image, _, _ = open_rgb(read_file(path).data, path, prep.size)
        except UnreadableImage:
            continue
        for angle in ROTATIONS:
            pending.append(to_pixels(image.rotate(angle, expand=True), prep))
            rows.append(position)
        if len(pending) >= batch_size:
            chunks.append(embedder(torch.stack(pending)))
            pending = []
    if pending:
        chunks.append(embedder(torch.stack(pending)))
    dim = embedder.backbone.dim
    return rows, np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
