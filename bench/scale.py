"""Index kinds at scale: build time, bytes per vector, single-query latency, recall, cold query.

    python bench/scale.py --n 1000000 --dim 384 [--kinds flat,hnsw,ivf,ivfpq] [--queries 1000]
                          [--views 0]

Synthetic clustered unit vectors with planted near-duplicates (tests/helpers.py) go in through
the store's API, like an index run's batches. For each kind, `Store.reindex` builds and tunes
the index (recall@10 >= 0.95 on a sample of stored vectors); then, in a fresh reader (IVF
memory-mapped), single queries are timed one at a time (noisy copies of stored vectors) and
their recall@10 is measured against exact search; then `imgsearch query --id` is timed in new
processes. The row of the kind `auto` picks for this size is marked. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dupes_scale import fill
from bench.machine import machine
from store import NewIndex, Store, tuning
from tests.helpers import clustered_with_duplicates

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


def cold_query_seconds(home: str, image_id: int, runs: int = 3) -> float:
    """Median wall time of `imgsearch query --id` in a new process (page cache as it is)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).parent / "imgsearch"), "--home", home, "query", "--id",
             str(image_id), "--json"],
            cwd=REPO, check=True, capture_output=True, env=os.environ | {"PYTHONPATH": str(REPO)},
        )  # fmt: skip
        times.append(time.perf_counter() - started)
    return float(np.median(times))


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
        "cold_query_id_seconds": round(cold_query_seconds(home, len(vectors) // 2, cold_runs), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--kinds", default="flat,hnsw,ivf,ivfpq")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--views", type=int, default=0, help="regional views stored per image")
    parser.add_argument("--cold-runs", type=int, default=3, help="new processes per cold query")
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
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"n": args.n, "dim": args.dim, "views": args.views, "queries": args.queries,
                      "insert_seconds": round(insert, 1), "auto": auto, "rows": rows,
                      "machine": machine()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
