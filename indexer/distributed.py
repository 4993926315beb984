"""`index --engine ray`: scanning and planning on the driver, decoding in Ray tasks, the backbone
in a Ray actor pool, embedding shards written by the workers, ingested by the driver.

Ray is imported here only, and only for `--engine ray` (the `ray` extra). Decoding tasks and
embedding actors ask for fractional CPUs, so that a 2-core machine runs both stages at once
instead of deadlocking; on a cluster with GPUs each actor takes one GPU. Shards go to
`HOME/shards/`; every shard that was written survives a killed run, and the next run ingests
it before planning, so its files are not embedded again. Files whose content is already
indexed elsewhere (renames, copies) are embedded again here; the local engine reuses them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexer.backbones import load_backbone
from indexer.dataset import DecodeDataset
from indexer.decode import Preprocess
from indexer.embed import TOP_TAGS, Embedder, resolve_device, resolve_dtype
from indexer.models import canonical_name
from indexer.options import IndexOptions, ModelChoice, Runtime
from indexer.pipeline import (
    IndexReport,
    check_index_type,
    new_index_settings,
    recorded_meta,
    with_recorded_size,
)
from indexer.plan import make_plan
from indexer.shards import read_rows, shard_files, write_run
from store import Embedded, Failure, FileStat, IndexSpec, Store, exclusive_writer
from store.ann import AnnIndex

DECODE_CPUS = 0.25  # per decoding task (not the actors' 0.5: Ray would fuse the two stages)
EMBED_CPUS = 0.5  # per embedding actor on a CPU-only cluster
INGEST_CHUNK = 1000
# A first load this large builds its IVF index in parallel from the shards (fill_in_parallel).
PARALLEL_FILL_MIN = 200_000


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join one
    actors: int | None = None  # embedding actors (default: one per GPU, else 1)
    batch_size: int = 16


def shard_folder(home: Path) -> Path:
    return home / "shards"


def read_list(path: Path) -> list[FileStat]:
    """Files named in a .txt (one path per line) or .parquet (a `path` column) list."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = [os.fsdecode(p) if isinstance(p, bytes) else str(p)
                 for p in pq.read_table(path, columns=["path"])["path"].to_pylist()]  # fmt: skip
    else:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    stats = []
    for name in names:
        full = os.path.abspath(name)
        try:
            st = os.stat(full)
        except OSError:
            stats.append(FileStat(full, -1, -1))  # reported as failed when decoded
            continue
        stats.append(FileStat(full, st.st_size, st.st_mtime_ns))
    return stats


@dataclass(frozen=True)
class Job:
    """One distributed embedding job: what to run, and where the shards go."""

    model: ModelChoice
    runtime: Runtime
    prep: Preprocess  # the backbone's input size and normalisation
    ray: RayOptions
    folder: Path


def embed_to_shards(todo: Sequence[FileStat], job: Job) -> None:
    """Run the Ray Data pipeline over `todo`; workers write Parquet shards into the folder."""
    import ray

    ray_options, prep = job.ray, job.prep
    if not ray.is_initialized():
        ray.init(address=ray_options.address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)  # fmt: skip
    gpus = int(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]
    rows = [{"order": i, "path": os.fsencode(s.path), "size": s.size, "mtime_ns": s.mtime_ns}
            for i, s in enumerate(todo)]  # fmt: skip
    blocks = max(1, min(len(rows), len(rows) // (4 * ray_options.batch_size) + 1))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    decoded = dataset.map_batches(
        decode_batch,  # type: ignore[arg-type]
        batch_size=ray_options.batch_size, num_cpus=DECODE_CPUS,
        fn_kwargs={"prep": prep}, batch_format="numpy",
    )  # fmt: skip
    actors = ray_options.actors or max(1, gpus)
    embedded = decoded.map_batches(
        EmbedActor, batch_size=ray_options.batch_size, concurrency=actors,
        num_gpus=1 if gpus else 0, num_cpus=None if gpus else EMBED_CPUS,
        fn_constructor_kwargs={"model": job.model, "runtime": job.runtime}, batch_format="numpy",
    )  # fmt: skip
    embedded.write_parquet(str(job.folder / f"run-{uuid.uuid4().hex[:8]}"))


def decode_batch(batch: dict[str, np.ndarray], prep: Preprocess) -> dict[str, Any]:
    """Read, hash and decode each file of the batch (a Ray task). Failures become rows too."""
    columns = zip(batch["path"], batch["size"], batch["mtime_ns"], strict=True)
    stats = [FileStat(os.fsdecode(bytes(p)), int(s), int(m)) for p, s, m in columns]
    dataset = DecodeDataset(stats, prep, frozenset(), max_pixels=250_000_000)
    height, width = prep.size
    pixels = np.zeros((len(stats), 3, height, width), dtype=np.float32)
    out: dict[str, list[Any]] = {k: [] for k in ("content_hash", "width", "height", "error")}
    for i in range(len(stats)):
        item, tensor = dataset[i]
        out["content_hash"].append(item.file.content_hash if item.file else "")
        out["width"].append(item.width)
        out["height"].append(item.height)
        # "" for no error: a column of only None would reach the next stage as NaN floats.
        out["error"].append(item.error or ("" if tensor is not None else "unreadable"))
        if tensor is not None:
            pixels[i] = tensor.numpy()
    return {"order": batch["order"], "path": batch["path"], "size": batch["size"],
            "mtime_ns": batch["mtime_ns"], **{k: np.array(v, dtype=object) for k, v in out.items()},
            "pixels": pixels}  # fmt: skip


class EmbedActor:
    """The backbone, loaded once per actor; a batch of decoded rows in, shard rows out."""

    def __init__(self, model: ModelChoice, runtime: Runtime) -> None:
        device = resolve_device(runtime.device)
        if device.type == "cpu":  # Ray sets OMP_NUM_THREADS=1 for a fractional-CPU actor
            torch.set_num_threads(os.cpu_count() or 1)
        backbone = load_backbone(model, device, labels=True)
        self.embedder = Embedder(backbone, device, resolve_dtype(runtime.precision, device))

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        """A pyarrow table with explicit types, so that the shards are plain Parquet (a list of
        float32 per vector, not a Ray tensor extension) that any reader understands."""
        import pyarrow as pa

        ok = np.array([e == "" for e in batch["error"]], dtype=bool)
        top = TOP_TAGS if self.embedder.tags else 0
        vectors, found = self.embedder.run(torch.from_numpy(batch["pixels"][ok]), top)
        out_vectors: list[Any] = [None] * len(ok)
        out_tags: list[str] = ["[]"] * len(ok)
        for row, vector, tags in zip(np.nonzero(ok)[0], vectors, found, strict=True):
            out_vectors[row] = vector.astype(np.float32).tolist()
            out_tags[row] = json.dumps([[t.label, t.score] for t in tags])
        columns = {
            "order": pa.array(batch["order"].astype(np.int64)),
            "path": pa.array([bytes(p) for p in batch["path"]], pa.binary()),
            "size": pa.array(batch["size"].astype(np.int64)),
            "mtime_ns": pa.array(batch["mtime_ns"].astype(np.int64)),
            "content_hash": pa.array([str(h) for h in batch["content_hash"]], pa.string()),
            "width": pa.array([int(w) for w in batch["width"]], pa.int32()),
            "height": pa.array([int(h) for h in batch["height"]], pa.int32()),
            "vector": pa.array(out_vectors, pa.list_(pa.float32())),
            "tags": pa.array(out_tags, pa.string()),
            "error": pa.array([str(e) or None for e in batch["error"]], pa.string()),
        }
        return pa.table(columns)


def ingest(
    store: Store, folder: Path, update_index: bool = True
) -> tuple[list[Embedded], list[Failure]]:
    """Commit every shard row in plan order (into the catalog only, without `update_index`).
    Idempotent: a shard ingested twice (a run killed mid-ingest) rewrites the same rows
    under the same ids."""
    files = shard_files(folder)
    done: list[Embedded] = []
    failed: list[Failure] = []
    chunk_ok: list[Embedded] = []
    chunk_failed: list[Failure] = []
    for row in read_rows(files):
        if isinstance(row.item, Embedded):
            chunk_ok.append(row.item)
        else:
            chunk_failed.append(row.item)
        if len(chunk_ok) + len(chunk_failed) >= INGEST_CHUNK:
            store.commit_batch(chunk_ok, chunk_failed, update_index)
            done += chunk_ok
            failed += chunk_failed
            chunk_ok, chunk_failed = [], []
    store.commit_batch(chunk_ok, chunk_failed, update_index)
    done += chunk_ok
    failed += chunk_failed
    return done, failed


def remove_shards(folder: Path) -> None:
    """Once ingested (and indexed): the shards and their run folders go."""
    files = shard_files(folder)
    for sub in sorted({f.parent for f in files}, reverse=True):
        if sub != folder:
            shutil.rmtree(sub, ignore_errors=True)
    for file in files:
        file.unlink(missing_ok=True)


def fill_in_parallel(store: Store, folder: Path, choice: str | None = None) -> IndexSpec | None:
    """A large first load: an IVF index trained on a sample of the catalog, cloned into Ray
    tasks that each fill it from one shard, merged here, then installed (tuned, saved). No
    process holds every vector but the final index itself (IVF-PQ: codes only). None when
    the catalog's index kind is not an IVF one (the store then builds as usual)."""
    import ray

    empty = store.trained_index(choice)
    if empty.spec.kind not in ("ivf", "ivfpq"):
        return None
    trained = ray.put(empty.to_bytes())
    fill = ray.remote(num_cpus=DECODE_CPUS)(fill_part)
    pending = [fill.remote(trained, empty.spec.to_json(), str(f), str(store.home))
               for f in shard_files(folder)]  # fmt: skip
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        if ready:  # each merge rebuilds the id hashtable: merge what is done, not nothing
            empty.merge([AnnIndex.from_bytes(empty.spec, ray.get(r)) for r in ready])
    return store.install(empty, choice)


def fill_part(trained: bytes, spec_json: str, shard: str, home: str) -> bytes:
    """One shard's vectors added to a copy of the trained index (a Ray task)."""
    import pyarrow.parquet as pq

    spec = IndexSpec.from_json(spec_json)
    part = AnnIndex.from_bytes(spec, trained)
    rows = [r for r in pq.read_table(shard, columns=["path", "vector", "error"]).to_pylist()
            if r["error"] is None and r["vector"] is not None]  # fmt: skip
    paths = [os.fsdecode(r["path"]) for r in rows]
    with Store.open(Path(home)) as store:
        ids = store.ids_of(paths)
    known = [(ids[p], r["vector"]) for p, r in zip(paths, rows, strict=True) if p in ids]
    if known:
        part.add(np.array([i for i, _ in known], dtype=np.int64),
                 np.array([v for _, v in known], dtype=np.float32))  # fmt: skip
    return part.to_bytes()


def index_with_ray(home: Path, files: Sequence[FileStat], folders: Sequence[str],
                   options: IndexOptions, ray_options: RayOptions) -> IndexReport:  # fmt: skip
    """Bring the index in `home` up to date with `files` (found under `folders`, or listed)."""
    started = time.perf_counter()
    with exclusive_writer(home):
        recorded = recorded_meta(home, canonical_name(options.model.name))
        check_index_type(options, recorded)
        model = with_recorded_size(options.model, recorded)
        backbone = load_backbone(model, torch.device("cpu"))  # name, dimension, input size
        settings = new_index_settings(model, options)
        store = Store.open_for_model(home, backbone.name, backbone.dim, settings)
        folder = shard_folder(home)
        with store:
            try:
                ingest(store, folder)  # shards a killed run left: their files are done
                remove_shards(folder)
                plan = make_plan(files, store.file_states(), store.failures(), folders)
                first_load = store.count() == 0 and len(plan.todo) >= PARALLEL_FILL_MIN
                done: list[Embedded] = []
                failed: list[Failure] = []
                change = None
                if plan.todo:
                    write_run(folder, backbone.name, settings)
                    job = Job(model, options.runtime, backbone.prep, ray_options, folder)
                    embed_to_shards(plan.todo, job)
                    done, failed = ingest(store, folder, update_index=not first_load)
                    if first_load:  # the catalog is filled: now its index, at once
                        change = fill_in_parallel(store, folder) or store.reindex()
                    remove_shards(folder)
                removed = store.remove_paths(plan.vanished) if options.prune else 0
                change = store.maintain() or change
            finally:
                store.flush()
    added = sum(1 for e in done if e.file.path not in plan.previous_hashes)
    touched = sum(1 for e in done if plan.previous_hashes.get(e.file.path) == e.file.content_hash)
    return IndexReport(
        added=added, updated=len(done) - added - touched, unchanged=plan.unchanged + touched,
        removed=removed, failed=tuple(failed), not_retried=tuple(plan.known_failures),
        embedded=len(done), reused=0, model=store.meta.model, device="ray",
        precision=options.runtime.precision, seconds=time.perf_counter() - started,
        index_change=change,
    )  # fmt: skip
