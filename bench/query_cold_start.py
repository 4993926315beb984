"""Cold start of `imgsearch query` (a new process each time), against `python -c pass`.

    python bench/query_cold_start.py [--runs 7]

Builds a small index with the bundled backbone (which also caches its ONNX export), then times
whole processes: `query --id` (targets: <= 1 s) and `query photo.jpg` with a photo that is not
in the index, embedded on the spot (<= 1.5 s; no torch imported). Prints JSON.
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

from PIL import Image

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
        plain = timed(
            [*cli, "--home", home, "query", "--id", "1", "--json", "--no-verify"], args.runs
        )
        photo = Path(home) / "outside.jpg"
        Image.open(ROOT / "examples" / "coffee.jpg").resize((300, 200)).save(photo, quality=80)
        by_image = timed([*cli, "--home", home, "query", str(photo), "--json"], args.runs)
        check = (
            f"import sys\nfrom search.cli import cli\ntry:\n    cli(['--home', {home!r}, 'query', "
            f"{str(photo)!r}, '--json'])\nexcept SystemExit:\n    pass\nprint('TORCH', 'torch' in "
            "sys.modules, file=sys.stderr)"
        )
        done = subprocess.run(
            [sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT
        )
        torch_imported = "TORCH True" in done.stderr
        info = timed([*cli, "--home", home, "info", "--json"], args.runs)
    interpreter = timed([sys.executable, "-c", "pass"], args.runs)
    print(json.dumps({
        "benchmark": "query_cold_start",
        "runs": args.runs,
        "query_by_id_seconds_median": round(statistics.median(query), 3),
        "query_by_id_seconds_max": round(max(query), 3),
        "query_by_id_no_verify_seconds_median": round(statistics.median(plain), 3),
        "query_image_seconds_median": round(statistics.median(by_image), 3),
        "query_image_seconds_max": round(max(by_image), 3),
        "query_image_imports_torch": torch_imported,
        "info_seconds_median": round(statistics.median(info), 3),
        "python_startup_seconds_median": round(statistics.median(interpreter), 3),
        "targets_seconds": {"query_by_id": 1.0, "query_image": 1.5},
        "machine": machine(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
