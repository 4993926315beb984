"""Cold start of `imgsearch query --id` (a new process each time), against `python -c pass`.

    python bench/query_cold_start.py [--runs 7]

Builds a small index with the bundled backbone, then times whole processes. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from bench.photos import ROOT


def timed(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    cli = [sys.executable, "-c", "from search.cli import cli; cli()"]
    with tempfile.TemporaryDirectory() as home:
        subprocess.run([*cli, "--home", home, "index", str(ROOT / "examples")], check=True,
                       capture_output=True, cwd=ROOT)  # fmt: skip
        query = timed([*cli, "--home", home, "query", "--id", "1", "--json"], args.runs)
        info = timed([*cli, "--home", home, "info", "--json"], args.runs)
    interpreter = timed([sys.executable, "-c", "pass"], args.runs)
    print(json.dumps({
        "benchmark": "query_cold_start",
        "runs": args.runs,
        "query_by_id_seconds_median": round(statistics.median(query), 3),
        "query_by_id_seconds_max": round(max(query), 3),
        "info_seconds_median": round(statistics.median(info), 3),
        "python_startup_seconds_median": round(statistics.median(interpreter), 3),
        "target_seconds": 1.0,
        "machine": machine(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
