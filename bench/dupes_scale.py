"""Duplicate detection at scale over N stored vectors: the copy candidates (every image's 20
nearest, scored, and the whole-against-view join of its regional views) and the plain mode's
range join (`dupes --threshold`).

    python bench/dupes_scale.py --n 1000000 [--dim 384] [--views 5] [--threshold 0.9]
                                [--ray-cpus 2]

Vectors (clustered, with planted near-duplicates: tests/helpers.py) and `--views` regional
views per image (noisy variants of the image's vector, stored float16 as an index run stores
them; 0: none) go in through the store's own API, like an index run's batches. The candidate
stage reads them back and runs as plain `dupes` does (vectors centred in place, the default
model card's density floor and reject score). The candidates' recall of the near neighbours
(those the reject score must keep), the view pairs' and the range join's pair recall are
measured against exact search for a random sample of vectors. The
candidate stage runs in a process of its own, which reports its own peak memory (the bench's
generated vectors and recall checks do not count). With `--ray-cpus`, the candidate stage
runs again as `dupes --engine ray` runs it (shards of cells in Ray tasks, on a local cluster),
timed next to the local engine, its pairs compared with the local ones. Prints JSON with
seconds, recall and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from indexer.models import copy_thresholds, find_card
from indexer.options import DEFAULT_MODEL
from search.copies.candidates import (
    BETA,
    DENSITY_K,
    NEIGHBOURS,
    VIEW_NEIGHBOURS,
    VIEW_REJECT,
    Descriptors,
    Engine,
    centred,
    find_candidates,
)
from search.copies.cellviews import stored_views
from search.copies.dupes import DupeOptions, find_duplicates
from store import Embedded, ImageFile, NewIndex, Store
from tests.helpers import clustered_with_duplicates

# The stage floors scores as plain `dupes` does with the default model's card (these are
# 384-d vectors like its own): densities at least DENSITY_FLOOR, pairs below SCORE_FLOOR (the
# card's reject score) left out unless a view found them.
_CARD = copy_thresholds(find_card(DEFAULT_MODEL))
DENSITY_FLOOR, SCORE_FLOOR = _CARD.density_floor, min(_CARD.accept, _CARD.reject)


def fill(store: Store, vectors: np.ndarray, views: int, batch: int = 20_000) -> None:
    rng = np.random.RandomState(5)
    for start in range(0, len(vectors), batch):
        stop = min(len(vectors), start + batch)
        regional = _views(vectors[start:stop], views, rng)
        rows = [
            Embedded(
                ImageFile(f"/photos/{i:08}.jpg", 1000 + i, i, f"{i:032x}"),
                640,
                480,
                vectors[i],
                views=None if regional is None else regional[i - start],
            )
            for i in range(start, stop)
        ]
        store.commit_batch(rows, [])
    store.flush()


def _views(vectors: np.ndarray, count: int, rng: np.random.RandomState) -> np.ndarray | None:
    """`count` views per vector at cosine ~0.75 to it (a region resembles its whole)."""
    if count == 0:
        return None
    noise = rng.randn(len(vectors), count, vectors.shape[1]).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=-1, keepdims=True)
    views = vectors[:, None, :] + 0.9 * noise
    return views / np.linalg.norm(views, axis=-1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--views", type=int, default=5, help="regional views per image")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--ray-cpus", type=int, default=0,
                        help="also run the candidate stage as `dupes --engine ray` does, on a "
                        "local Ray cluster of this many CPUs (0: not)")  # fmt: skip
    parser.add_argument("--stage", nargs=2, metavar=("HOME", "PAIRS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # the child: the candidate stage alone
        _stage(Path(args.stage[0]), Path(args.stage[1]), args.views > 0)
        return
    vectors = clustered_with_duplicates(args.n, args.dim)
    with tempfile.TemporaryDirectory() as home:
        with Store.writer(Path(home), new=NewIndex("synthetic", args.dim)) as store:
            started = time.perf_counter()
            fill(store, vectors, args.views)
            insert_seconds = time.perf_counter() - started
        saved = Path(home) / "candidate-pairs.npy"
        run = [sys.executable, __file__, "--views", str(args.views), "--stage", home, str(saved)]
        stage = json.loads(subprocess.run(run, check=True, capture_output=True, text=True).stdout)
        listed_pairs = np.load(saved)
        with Store.open(Path(home)) as store:
            ids, stored = store.index.all_vectors()
            views = store.catalog.views_array(ids.tolist()) if args.views else None
            on_ray = _on_ray(Descriptors(ids, stored, views), listed_pairs, args.ray_cpus)
            del ids, stored
            started = time.perf_counter()
            pairs = store.index.similar_pairs(args.threshold, probes=args.probes)
            pairs_seconds = time.perf_counter() - started
            started = time.perf_counter()
            groups = find_duplicates(store, DupeOptions(threshold=args.threshold)).groups
            dupes_seconds = time.perf_counter() - started
    # Ids are 1..n in insertion order: vector i has id i + 1.
    found = {(a - 1, b - 1) for a, b, _ in pairs}
    sample = np.random.RandomState(7).choice(args.n, min(2000, args.n), replace=False)
    expected = hit = 0
    for i in sample:
        neighbours = np.nonzero(vectors @ vectors[i] >= args.threshold)[0]
        for j in neighbours[neighbours != i]:
            expected += 1
            hit += (min(i, j), max(i, j)) in found
    # Candidates: of each sampled vector's 20 nearest (exact, centred) that must be kept
    # whatever the densities (a centred cosine of SCORE_FLOOR + BETA scores at least
    # SCORE_FLOOR: a density is at most 1), how many are candidates.
    mean = vectors.mean(axis=0)
    unit = centred(vectors, mean)
    listed = {(int(a), int(b)) for a, b in listed_pairs}
    wanted = found_near = 0
    for i in sample[:500]:
        scores = unit @ unit[i]
        scores[i] = -np.inf
        for j in np.argsort(-scores)[:NEIGHBOURS]:
            if scores[j] >= SCORE_FLOOR + BETA:
                wanted += 1
                found_near += (min(i, j), max(i, j)) in listed
    view_recall = None if views is None else _view_recall(unit, mean, views, listed, sample[:200])
    print(json.dumps({
        "benchmark": "dupes_scale", "n": args.n, "dim": args.dim, "threshold": args.threshold,
        "views": args.views, "probes": args.probes, "pairs": len(pairs), "groups": len(groups),
        "insert_seconds": round(insert_seconds, 1),
        "candidate_seconds": stage["seconds"], "candidate_pairs": len(listed_pairs),
        # the candidate stage's own process, reading the store as `dupes` does
        "candidate_peak_rss_mib": stage["peak_rss_mib"],
        "candidate_neighbour_recall_vs_exact": round(found_near / max(1, wanted), 4),
        "candidate_neighbours_checked": wanted,
        "score_floor": SCORE_FLOOR,
        "candidate_recall_audit": stage["recall"],  # what `dupes` itself reports
        "ray": on_ray,
        "view_pair_recall_vs_exact": view_recall,
        "similar_pairs_seconds": round(pairs_seconds, 1),
        "dupes_seconds": round(dupes_seconds, 1),
        "pair_recall_vs_exact": round(hit / max(1, expected), 4), "sampled_pairs": expected,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": machine(),
    }, indent=2))  # fmt: skip


def _stage(home: Path, pairs: Path, views: bool) -> None:
    """The candidate stage as plain `dupes` runs it, in this process: its pairs saved to
    `pairs`; its seconds, audit and this process's peak memory printed as JSON."""
    started = time.perf_counter()
    with Store.open(home) as store:  # as `dupes` reads them: from the catalog, not the index
        ids, stored = store.catalog.vectors([r.id for r in store.catalog.file_states().values()])
        regional = stored_views(store.catalog, ids) if views else None  # read a chunk at a time
        found = find_candidates(  # as dupes runs it
            Descriptors(ids, stored, regional, in_place=True),
            density_floor=DENSITY_FLOOR,
            score_floor=SCORE_FLOOR,
        )
    seconds = time.perf_counter() - started
    np.save(pairs, found.pairs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 1), "recall": round(found.recall, 4),
                      "peak_rss_mib": round(peak)}))  # fmt: skip


def _on_ray(found: Descriptors, local: np.ndarray, cpus: int) -> dict[str, Any] | None:
    """The candidate stage on a local Ray cluster of `cpus` (search/ray_workers.py: shards of
    cells in Ray tasks): its seconds (Ray's own start timed apart) and whether it found the
    very pairs the local engine found."""
    if not cpus:
        return None
    import ray

    from search.ray_workers import RayWorkers

    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    workers = RayWorkers()
    shards = workers.shards(10**9)
    start_seconds = time.perf_counter() - started
    try:
        started = time.perf_counter()
        engine = Engine(workers)
        found = find_candidates(found, None, DENSITY_FLOOR, engine, SCORE_FLOOR)
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    ours = {tuple(p) for p in found.pairs.tolist()}
    theirs = {tuple(p) for p in local.tolist()}
    # A Ray task multiplies on one BLAS thread, this process on all: the last bits of a cosine
    # can differ, and so can a near tie at an image's 20th neighbour (a few pairs a million).
    return {"cpus": cpus, "shards": shards, "start_seconds": round(start_seconds, 1),
            "candidate_seconds": round(seconds, 1), "same_pairs_as_local": ours == theirs,
            "pairs_only_local": len(theirs - ours), "pairs_only_ray": len(ours - theirs),
            "candidate_recall_audit": round(found.recall, 4)}  # fmt: skip


def _view_recall(unit: np.ndarray, mean: np.ndarray, views: np.ndarray,
                 listed: set[tuple[int, int]], sample: np.ndarray) -> float:  # fmt: skip
    """Of the pairs that exact search finds through each sampled image's whole against the
    others' views (its VIEW_NEIGHBOURS nearest other images, scoring at least VIEW_REJECT),
    the share among the candidates."""
    n, regions, _ = views.shape
    flat = centred(views.reshape(n * regions, -1), mean)

    def density(i: int) -> float:
        scores = unit @ unit[i]
        scores[i] = -np.inf
        return max(DENSITY_FLOOR, float(np.partition(-scores, DENSITY_K - 1)[DENSITY_K - 1] * -1))

    wanted = hit = 0
    for i in sample:
        scores = flat @ unit[i]
        scores[i * regions : (i + 1) * regions] = -np.inf
        owners: list[int] = []
        for row in np.argsort(-scores)[: (VIEW_NEIGHBOURS + 1) * regions]:
            if row // regions not in owners:
                owners.append(int(row // regions))
            if len(owners) == VIEW_NEIGHBOURS:
                break
        own = density(int(i))
        for j in owners:
            best = scores[j * regions : (j + 1) * regions].max()
            if best - BETA * (own + density(j)) / 2 >= VIEW_REJECT:
                wanted += 1
                hit += (min(int(i), j), max(int(i), j)) in listed
    return round(hit / max(1, wanted), 4)


if __name__ == "__main__":
    main()
