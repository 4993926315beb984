"""Index Pillow's own test images (~1,000 files, ~200 deliberately broken) and count outcomes.

    python bench/robustness_pillow.py [--src DIR]

Fetches Pillow's source distribution from PyPI with pip (cached under bench/out/) unless --src
points at an unpacked `Tests/images`. The run must end normally with FAISS == SQLite; the JSON
it prints counts indexed and failed files, failures grouped by reason.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from bench.photos import ROOT
from indexer.options import IndexOptions
from indexer.pipeline import index_folders
from indexer.scan import check_folders, scan
from store import Store

OUT = ROOT / "bench" / "out"


def pillow_test_images() -> Path:
    target = OUT / "pillow-tests"
    if (target / "images").is_dir():
        return target / "images"
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--dest", str(OUT), "pillow"],
        check=True,
    )  # fmt: skip
    (sdist,) = sorted(OUT.glob("pillow-*.tar.gz"))[-1:]
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/Tests/images/" in m.name and m.isfile()]
        for member in members:
            member.name = member.name.split("/Tests/images/", 1)[1]
            archive.extract(member, target / "images", filter="data")
    return target / "images"


def reason_group(error: str) -> str:
    """Collapse file-specific details so that failures group by kind."""
    return re.sub(r"\d+", "N", error)[:90]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, help="an unpacked Tests/images folder")
    args = parser.parse_args()
    images = args.src or pillow_test_images()
    scanned = sum(1 for _ in scan(check_folders([str(images)])))
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        report = index_folders(Path(home), [str(images)], IndexOptions())
        seconds = time.perf_counter() - started
        with Store.open(Path(home)) as store:
            consistent = store.index.count == store.catalog.count() == report.added
    reasons = collections.Counter(reason_group(f.error) for f in report.failed)
    print(json.dumps({
        "benchmark": "robustness_pillow",
        "source": str(images),
        "image_files_scanned": scanned,
        "indexed": report.added,
        "failed": len(report.failed),
        "faiss_equals_sqlite": consistent,
        "seconds": round(seconds, 1),
        "failures_by_reason": dict(reasons.most_common()),
        "machine": machine(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
