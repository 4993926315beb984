"""Peak memory of `index` on folders of many small images: it must not grow with the pixels.

    python bench/memory_many_files.py [--counts 20000 100000]

Each count runs in a fresh process (peak RSS is per process) with the tiny random-weight Birder
net, so the run is dominated by the pipeline, not the model. Prints JSON: peak RSS of the main
process and of the decode workers, and the bytes per file between the two counts.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from bench.photos import ROOT


def make_files(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    for i in range(count):
        sub = folder / f"{i // 1000:03}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.randint(0, 255, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i:06}.png", compress_level=1)


def one_run(count: int) -> dict[str, float]:
    """Runs in a child process: make files, index them, report peak RSS in MiB."""
    import logging

    from indexer.options import IndexOptions, ModelOptions
    from indexer.pipeline import index_folders
    from tests.helpers import TINY_NETWORK, save_tiny_checkpoint

    logging.getLogger("birder").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_files(folder, count)
        weights = save_tiny_checkpoint(Path(tmp))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        options = IndexOptions(model=ModelOptions(TINY_NETWORK, weights, batch_size=64))
        started = time.perf_counter()
        report = index_folders(Path(tmp) / "home", [str(folder)], options)
        seconds = time.perf_counter() - started
    assert report.added == count, report
    return {
        "files": count,
        "seconds": round(seconds, 1),
        "peak_rss_main_mib_before_index": round(before, 1),
        "peak_rss_main_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_largest_worker_mib": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.child)))
        return
    runs = []
    for count in args.counts:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(count)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    growth = None
    if len(runs) >= 2:
        first, last = runs[0], runs[-1]
        extra_files = last["files"] - first["files"]
        extra_mib = last["peak_rss_main_mib"] - first["peak_rss_main_mib"]
        growth = round(extra_mib * 1024 * 1024 / extra_files)
    result = {"benchmark": "memory_many_files", "runs": runs,
              "main_bytes_per_extra_file": growth, "machine": machine()}  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
