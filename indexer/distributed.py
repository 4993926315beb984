"""`index --engine ray`: the same IndexSession as the local engine; files become vectors in a
Ray Data pipeline instead (decoding in Ray tasks, the backbone in an actor pool, on the runtime
the session resolved), written as shards by the workers and ingested by the driver.

Ray is imported here only, and only for `--engine ray` (the `ray` extra). Decoding tasks and
embedding actors ask for fractional CPUs, so that a 2-core machine runs both stages at once
instead of deadlocking; on a cluster with GPUs each actor takes one GPU. Shards go to
`HOME/shards/`; every shard that was written survives a killed run, and the next run ingests
it before planning, so its files are not embedded again. Contents already indexed are reused,
as locally (the decoding tasks see the known hashes through the object store).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from indexer.dataset import DecodeDataset
from indexer.decode import Preprocess
from indexer.embedder import TOP_TAGS, Embedder
from indexer.options import IndexOptions
from indexer.plan import Plan
from indexer.ray_cluster import connect
from indexer.runtime import load_embedder
from indexer.scan import Skipped
from indexer.session import IndexReport, IndexSession
from indexer.shards import read_outcomes, run_matches, shard_files, write_run
from indexer.spec import ModelSpec
from store import FileStat, IndexSpec, Store, fill_part

DECODE_CPUS = 0.25  # per decoding task (not the actors' 0.5: Ray would fuse the two stages)
EMBED_CPUS = 0.5  # per embedding actor on a CPU-only cluster
# A first load this large builds its IVF index in parallel from the shards (fill_in_parallel).
PARALLEL_FILL_MIN = 200_000
log = logging.getLogger("imgsearch.indexer")


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join one
    actors: int | None = None  # embedding actors (default: one per GPU, else 1)


def shard_folder(home: Path) -> Path:
    return home / "shards"


def read_list(path: Path) -> tuple[list[FileStat], list[Skipped]]:
    """Files named in a .txt (one path per line) or .parquet (a `path` column) list, and those
    that cannot be stat'ed."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = [
            os.fsdecode(p) if isinstance(p, bytes) else str(p)
            for p in pq.read_table(path, columns=["path"])["path"].to_pylist()
        ]
    else:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    stats, skipped = [], []
    for name in names:
        full = os.path.abspath(name)
        try:
            st = os.stat(full)
        except OSError as exc:
            skipped.append(Skipped(full, f"cannot stat the file ({exc.strerror or exc})"))
            continue
        stats.append(FileStat(full, st.st_size, st.st_mtime_ns))
    return stats, skipped


@dataclass(frozen=True)
class Job:
    """One distributed embedding job: what to run, and where the shards go."""

    spec: ModelSpec
    prep: Preprocess  # the backbone's input size and normalisation
    batch_size: int
    max_pixels: int
    ray: RayOptions
    folder: Path


def embed_to_shards(todo: Sequence[FileStat], known: frozenset[str], job: Job) -> None:
    """Run the Ray Data pipeline over `todo`; workers write Parquet shards into the folder."""
    import ray

    connect(job.ray.address)
    quiet_ray_data()
    gpus = int(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]
    rows = [
        {"order": i, "path": os.fsencode(s.path), "size": s.size, "mtime_ns": s.mtime_ns}
        for i, s in enumerate(todo)
    ]
    blocks = max(1, min(len(rows), len(rows) // (4 * job.batch_size) + 1))
    # Sorted fixed-width hashes: shared zero-copy by every decoding task (np.searchsorted).
    hashes = ray.put(np.array(sorted(known), dtype="S32"))
    decoded = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        decode_batch,  # type: ignore[arg-type]
        batch_size=job.batch_size,
        num_cpus=DECODE_CPUS,
        batch_format="numpy",
        fn_kwargs={"prep": job.prep, "known": hashes, "max_pixels": job.max_pixels},
    )
    spec = job.spec
    if not gpus:  # a CPU actor runs the CPU runtime; a GPU actor's auto resolves to torch
        spec = replace(spec, compute=replace(spec.compute, device="cpu"))
    embedded = decoded.map_batches(
        EmbedActor,
        batch_size=job.batch_size,
        compute=ray.data.ActorPoolStrategy(size=job.ray.actors or max(1, gpus)),
        num_gpus=1 if gpus else 0,
        num_cpus=None if gpus else EMBED_CPUS,
        fn_constructor_kwargs={"spec": spec},
        batch_format="numpy",
    )
    embedded.write_parquet(str(job.folder / f"run-{uuid.uuid4().hex[:8]}"))


def quiet_ray_data() -> None:
    """Ray Data reports every operator's progress as INFO lines on stderr (15 lines for 5
    images): our progress is the run's own report; warnings and errors still show."""
    import ray.data

    ray.data.DataContext.get_current().print_on_execution_start = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)


def decode_batch(
    batch: dict[str, np.ndarray], prep: Preprocess, known: Any, max_pixels: int
) -> dict[str, Any]:
    """Read, hash and decode each file of the batch (a Ray task). Failures become rows too."""
    import ray

    hashes = ray.get(known) if isinstance(known, ray.ObjectRef) else known
    columns = zip(batch["path"], batch["size"], batch["mtime_ns"], strict=True)
    stats = [FileStat(os.fsdecode(bytes(p)), int(s), int(m)) for p, s, m in columns]
    dataset = DecodeDataset(stats, prep, _SortedHashes(hashes), max_pixels)
    height, width = prep.size
    pixels = np.zeros((len(stats), 3, height, width), dtype=np.float32)
    views = None
    if prep.view_size is not None:
        from indexer.decode import VIEW_BOXES

        views = np.zeros((len(stats), len(VIEW_BOXES), 3, *prep.view_size), dtype=np.float32)
    out: dict[str, list[Any]] = {
        k: [] for k in ("content_hash", "width", "height", "error", "reuse")
    }
    for i in range(len(stats)):
        item, array = dataset[i]
        out["content_hash"].append(item.file.content_hash if item.file else "")
        out["width"].append(item.width)
        out["height"].append(item.height)
        # "" for no error: a column of only None would reach the next stage as NaN floats.
        out["error"].append(item.error or ("" if array is not None or item.reuse else "?"))
        out["reuse"].append(item.reuse)
        if array is not None:
            pixels[i] = array.pixels
            if views is not None and array.views is not None:
                views[i] = array.views
    extra = {"pixels": pixels} if views is None else {"pixels": pixels, "views": views}
    return {
        "order": batch["order"],
        "path": batch["path"],
        "size": batch["size"],
        "mtime_ns": batch["mtime_ns"],
        **{k: np.array(v, dtype=object) for k, v in out.items()},
        **extra,
    }


class _SortedHashes:
    """Membership in a sorted array of hex hashes (bytes), as the decoding stage asks it."""

    def __init__(self, hashes: np.ndarray) -> None:
        self.hashes = hashes

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str) or not len(self.hashes):
            return False
        key = value.encode()
        at = int(np.searchsorted(self.hashes, key))
        return at < len(self.hashes) and bytes(self.hashes[at]) == key


class EmbedActor:
    """The backbone, loaded once per actor; a batch of decoded rows in, shard rows out."""

    def __init__(self, spec: ModelSpec) -> None:
        self.embedder: Embedder = load_embedder(spec, labels=True)
        if self.embedder.runtime == "torch" and self.embedder.device == "cpu":
            import torch  # Ray sets OMP_NUM_THREADS=1 for a fractional-CPU actor

            torch.set_num_threads(os.cpu_count() or 1)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        """A pyarrow table with explicit types, so that the shards are plain Parquet (a list of
        float32 per vector, not a Ray tensor extension) that any reader understands."""
        import pyarrow as pa

        ok = np.array(
            [e == "" and not r for e, r in zip(batch["error"], batch["reuse"], strict=True)],
            dtype=bool,
        )
        top = TOP_TAGS if self.embedder.labels else 0
        views = batch["views"][ok] if "views" in batch else None
        found = self.embedder.run(batch["pixels"][ok], top, views)
        vectors: list[Any] = [None] * len(ok)
        described: list[Any] = [None] * len(ok)
        tags: list[str] = ["[]"] * len(ok)
        for n, row in enumerate(np.nonzero(ok)[0]):
            vectors[row] = found.vectors[n].astype(np.float32).tolist()
            tags[row] = json.dumps([[t.label, t.score] for t in found.tags[n]])
            if found.views is not None:
                described[row] = found.views[n].astype(np.float32).ravel().tolist()
        return pa.table(
            {
                "order": pa.array(batch["order"].astype(np.int64)),
                "path": pa.array([bytes(p) for p in batch["path"]], pa.binary()),
                "size": pa.array(batch["size"].astype(np.int64)),
                "mtime_ns": pa.array(batch["mtime_ns"].astype(np.int64)),
                "content_hash": pa.array([str(h) for h in batch["content_hash"]], pa.string()),
                "width": pa.array([int(w) for w in batch["width"]], pa.int32()),
                "height": pa.array([int(h) for h in batch["height"]], pa.int32()),
                "vector": pa.array(vectors, pa.list_(pa.float32())),
                "views": pa.array(described, pa.list_(pa.float32())),
                "tags": pa.array(tags, pa.string()),
                "reuse": pa.array([bool(r) for r in batch["reuse"]], pa.bool_()),
                "error": pa.array([str(e) or None for e in batch["error"]], pa.string()),
            }
        )


def ingest(
    session: IndexSession, folder: Path, update_index: bool = True, leftover: bool = False
) -> None:
    """Commit every shard row through the session (into the catalog only, without
    `update_index`). Idempotent: a shard ingested twice (a run killed mid-ingest) rewrites the
    same rows under the same ids. `leftover`: shards of a killed run."""
    for outcomes in read_outcomes(shard_files(folder)):
        session.commit(outcomes, update_index, leftover)


def remove_shards(folder: Path) -> None:
    """Once ingested (and indexed): the shards, their run folders and run.json go."""
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def fill_in_parallel(store: Store, folder: Path) -> IndexSpec | None:
    """A large first load: the store's trained IVF index filled in Ray tasks, one per shard
    (store.index.fill_in_parts); None when the catalog's index kind is not an IVF one."""
    import ray

    def fill(trained: bytes, spec_json: str) -> Iterator[list[bytes]]:
        shared = ray.put(trained)
        task = ray.remote(num_cpus=DECODE_CPUS)(fill_shard)
        pending = [
            task.remote(shared, spec_json, str(f), str(store.home)) for f in shard_files(folder)
        ]
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            if ready:
                yield [ray.get(r) for r in ready]

    return store.index.fill_in_parts(fill)


def fill_shard(trained: bytes, spec_json: str, shard: str, home: str) -> bytes:
    """One shard's vectors added to a copy of the trained index (a Ray task)."""
    import pyarrow.parquet as pq

    rows = [
        r
        for r in pq.read_table(shard, columns=["path", "vector", "error"]).to_pylist()
        if r["error"] is None and r["vector"] is not None
    ]
    paths = [os.fsdecode(r["path"]) for r in rows]
    with Store.open(Path(home)) as store:
        ids = store.catalog.ids_of(paths)
    known = [(ids[p], r["vector"]) for p, r in zip(paths, rows, strict=True) if p in ids]
    return fill_part(
        trained,
        spec_json,
        np.array([i for i, _ in known], dtype=np.int64),
        np.array([v for _, v in known], dtype=np.float32).reshape(len(known), -1),
    )


def index_with_ray(
    home: Path,
    files: Sequence[FileStat],
    folders: Sequence[str],
    options: IndexOptions,
    ray_options: RayOptions,
    skipped: Sequence[Skipped] = (),
) -> IndexReport:
    """Bring the index in `home` up to date with `files` (found under `folders`, or listed)."""
    with IndexSession(home, options) as session:
        folder = shard_folder(home)
        embedder = session.embedder  # the shards record its name and dimension
        if shard_files(folder):  # a killed run's shards: their files are done
            if run_matches(folder, embedder.name, embedder.dim):
                ingest(session, folder, leftover=True)
            else:
                log.warning("%s holds shards of another model or run: not ingested", folder)
            remove_shards(folder)
        plan = session.plan(files, folders)
        session.skipped(list(skipped))
        change = _embed(session, plan, ray_options) if plan.todo else None
        return session.finish(plan, change)


def _embed(session: IndexSession, plan: Plan, ray_options: RayOptions) -> IndexSpec | None:
    store, embedder = session.store, session.embedder
    folder = shard_folder(session.home)
    first_load = store.catalog.count() == 0 and len(plan.todo) >= PARALLEL_FILL_MIN
    write_run(folder, embedder.name, embedder.dim)
    job = Job(
        session.spec,
        embedder.prep,
        session.batch_size,
        session.options.max_pixels,
        ray_options,
        folder,
    )
    embed_to_shards(plan.todo, plan.known_hashes, job)
    ingest(session, folder, update_index=not first_load)
    change = None
    if first_load:  # the catalog is filled: now its index, at once
        change = fill_in_parallel(store, folder) or store.index.reindex()
    remove_shards(folder)
    return change
