"""Index kinds at scale: build time, bytes per vector, single-query latency, recall, cold query.

    python bench/scale.py --n 1000000 --dim 384 [--kinds flat,hnsw,ivf,ivfpq] [--queries 1000]
                          [--views 0]

Synthetic clustered unit vectors with planted near-duplicates (tests/helpers.py) go in through
the store's API, like an index run's batches. For each kind, `Store.reindex` builds and tunes
the index (recall@10 >= 0.95 on a sample of stored vectors); then, in a fresh reader (IVF
memory-mapped), single queries are timed one at a time (noisy copies of stored vectors) and
their recall@10 is measured against exact search; then `imgsearch query --id` is timed in new
processes, with their peak memory. For the kind `auto` picks, a real `imgsearch serve` is then
asked by id (`/api/search?id=`, p50 of many) and for pages of `/api/browse` (the first, the
middle, the last, and one folder's). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dupes_scale import fill
from bench.machine import machine
from store import NewIndex, Store, tuning
from tests.helpers import clustered_with_duplicates
from tests.subprocs import serving

REPO = Path(__file__).resolve().parent.parent


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row positions of each query's 10 nearest vectors, by blocks of the collection."""
    best_scores = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best = np.zeros((len(queries), 10), dtype=np.int64)
    for start in range(0, len(vectors), 100_000):
        scores = queries @ vectors[start : start + 100_000].T
        cols = np.arange(start, start + scores.shape[1])
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_cols = np.concatenate([best, np.broadcast_to(cols, scores.shape)], axis=1)
        top = np.argpartition(-all_scores, 9, axis=1)[:, :10]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best = np.take_along_axis(all_cols, top, axis=1)
    return best


# Runs a command and prints its wall seconds and peak memory (KiB): from a small process of its
# own, since a child forked from this one (gigabytes of vectors) would count this one's pages.
_TIMED = """
import resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - started
if done.returncode:
    sys.exit(done.stderr.decode()[-2000:])
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def cold_query(home: str, image_id: int, runs: int = 3) -> tuple[float, float]:
    """Median wall time (s) and peak memory (MiB) of `imgsearch query --id` in a new process
    (page cache as it is)."""
    times, peaks = [], []
    for _ in range(runs):
        found = subprocess.run(
            [sys.executable, "-c", _TIMED, str(Path(sys.executable).parent / "imgsearch"),
             "--home", home, "query", "--id", str(image_id), "--json"],
            cwd=REPO, check=True, capture_output=True, text=True,
            env=os.environ | {"PYTHONPATH": str(REPO)},
        )  # fmt: skip
        seconds, peak = found.stdout.split()
        times.append(float(seconds))
        peaks.append(int(peak) / 1024)  # KiB on Linux
    return float(np.median(times)), float(np.max(peaks))


def served(home: str, n: int, asks: int) -> dict[str, Any]:
    """A real server's latency (ms): queries by id (p50, p99 of `asks` random ids, after a
    first one that loads the index) and pages of /api/browse (best of 3 each)."""

    def get(port: int, path: str) -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as answer:
            answer.read()
        return (time.perf_counter() - started) * 1000

    rng = np.random.RandomState(11)
    with serving(Path(home)) as port:
        first = get(port, "/api/search?id=1&k=10")
        by_id = [get(port, f"/api/search?id={i}&k=10") for i in rng.randint(1, n + 1, asks)]
        get(port, "/api/browse?limit=60")  # the folder list, once per catalog generation
        pages = {
            "first": "/api/browse?offset=0&limit=60",
            "middle": f"/api/browse?offset={n // 2}&limit=60",
            "last": f"/api/browse?offset={max(0, n - 60)}&limit=60",
            "folder_first": "/api/browse?folder=/photos&offset=0&limit=60",
            "folder_last": f"/api/browse?folder=/photos&offset={max(0, n - 60)}&limit=60",
        }
        browse = {name: min(get(port, path) for _ in range(3)) for name, path in pages.items()}
    return {
        "first_query_by_id_ms": round(first, 1),
        "query_by_id_p50_ms": round(float(np.percentile(by_id, 50)), 2),
        "query_by_id_p99_ms": round(float(np.percentile(by_id, 99)), 2),
        "browse_page_ms": {k: round(v, 2) for k, v in browse.items()},
    }


def measure(home: str, kind: str, vectors: np.ndarray, queries: np.ndarray,
            truth: np.ndarray, cold_runs: int) -> dict[str, Any]:  # fmt: skip
    with Store.writer(Path(home)) as store:
        started = time.perf_counter()
        spec = store.index.reindex(kind)
        build = time.perf_counter() - started
        files = [p for p in Path(home).glob("vectors.g*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
    with Store.open(Path(home)) as reader:  # a fresh reader: IVF memory-mapped
        ids_of_rows = np.arange(1, len(vectors) + 1)  # ids are assigned in insertion order
        reader.index.search(queries[:1], 10)  # load
        latencies, found = [], 0
        for q, expected in zip(queries, truth, strict=True):
            started = time.perf_counter()
            hits = reader.index.search(q[None, :], 10)[0]
            latencies.append((time.perf_counter() - started) * 1000)
            found += len({h.id for h in hits} & set(ids_of_rows[expected].tolist()))
    seconds, peak = cold_query(home, len(vectors) // 2, cold_runs)
    return {
        "kind": kind,
        "index_type": spec.factory,
        "params": {"nprobe": spec.nprobe, "ef_search": spec.ef_search, "rerank": spec.rerank},
        "tuned_recall_at_10": spec.recall,
        "build_seconds": round(build, 1),
        "index_bytes_per_vector": round(size / len(vectors), 1),
        "query_p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "query_p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "recall_at_10": round(found / (10 * len(queries)), 4),
        "cold_query_id_seconds": round(seconds, 2),
        "cold_query_id_peak_mib": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--kinds", default="flat,hnsw,ivf,ivfpq")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--views", type=int, default=0, help="regional views stored per image")
    parser.add_argument("--cold-runs", type=int, default=3, help="new processes per cold query")
    parser.add_argument(
        "--served",
        type=int,
        default=200,
        help="queries by id asked of a real server on the auto kind (0: none)",
    )
    args = parser.parse_args()
    vectors = clustered_with_duplicates(args.n, args.dim)
    rng = np.random.RandomState(7)
    picked = vectors[rng.choice(args.n, args.queries, replace=False)]
    noisy = picked + 0.5 * rng.randn(*picked.shape).astype(np.float32) / np.sqrt(args.dim)
    queries = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    truth = exact_top10(vectors, queries)
    auto = tuning.choose("auto", args.n, args.dim).kind
    rows = []
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        with Store.writer(Path(home), new=NewIndex("synthetic", args.dim)) as store:
            fill(store, vectors, args.views)
        insert = time.perf_counter() - started
        for kind in args.kinds.split(","):
            row = measure(home, kind, vectors, queries, truth, args.cold_runs)
            row["auto_picks_this"] = kind == auto
            if kind == auto and args.served:
                row["server"] = served(home, args.n, args.served)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"n": args.n, "dim": args.dim, "views": args.views, "queries": args.queries,
                      "insert_seconds": round(insert, 1), "auto": auto, "rows": rows,
                      "machine": machine()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
