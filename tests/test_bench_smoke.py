"""Every script in bench/ runs end to end at a tiny size and prints the JSON it promises, so
no benchmark can rot unnoticed (bench/scale.py once crashed for a whole round).

The figures are not checked: tiny sizes measure nothing. What is checked is that each script
runs through its real code path and reports what bench/RESULTS.md quotes from it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.helpers import shapes

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("*.py") if p.name != "__init__.py")
HELPERS = {"machine.py", "photos.py"}  # imported by the scripts, not run on their own
pytestmark = pytest.mark.slow


def bench(script: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    """Run bench/SCRIPT with ARGS; its JSON (the last JSON object it prints on stdout)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, capture_output=True,
        text=True, timeout=timeout, env=os.environ | {"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, f"{script}: {done.stderr[-3000:]}"
    start = done.stdout.index("{")
    found: dict[str, Any] = json.loads(done.stdout[start:])
    assert found["machine"]["cpu"], "every benchmark says which CPU it ran on"
    return found


def test_every_bench_script_has_a_smoke_run() -> None:
    runs = [name for name in globals() if name.startswith("test_") and name.endswith("_runs")]
    tested = {name.removeprefix("test_").removesuffix("_runs") + ".py" for name in runs}
    assert set(SCRIPTS) - HELPERS - {"copyset.py"} == tested, "a bench script with no smoke run"


def test_scale_runs() -> None:
    found = bench("scale.py", "--n", "3000", "--dim", "16", "--queries", "20", "--views", "2",
                  "--kinds", "flat,hnsw,ivf", "--cold-runs", "1", "--served", "20")  # fmt: skip
    assert [r["kind"] for r in found["rows"]] == ["flat", "hnsw", "ivf"]
    assert found["rows"][0]["recall_at_10"] == 1.0  # flat is exact
    assert all(r["cold_query_id_seconds"] > 0 for r in found["rows"])
    assert all(r["cold_query_id_peak_mib"] > 10 for r in found["rows"])
    (served,) = [r["server"] for r in found["rows"] if r["auto_picks_this"]]
    assert served["query_by_id_p50_ms"] > 0
    assert set(served["browse_page_ms"]) == {"first", "middle", "last", "folder_first",
                                             "folder_last"}  # fmt: skip


def test_dupes_scale_runs() -> None:
    found = bench("dupes_scale.py", "--n", "2000", "--dim", "16", "--views", "2")
    assert found["pairs"] > 0 and found["groups"] > 0
    # the near neighbours that must survive the score floor are checked, and found
    assert found["candidate_neighbours_checked"] > 0
    assert found["candidate_neighbour_recall_vs_exact"] >= 0.99
    assert found["ray"] is None
    # The candidate stage's own process: less than the whole bench, which holds more.
    assert 0 < found["candidate_peak_rss_mib"] <= found["peak_rss_mib"] + 200


def test_dupes_scale_runs_the_ray_engine_beside_the_local_one() -> None:
    pytest.importorskip("ray", reason="the `ray` extra is not installed")
    found = bench("dupes_scale.py", "--n", "12000", "--dim", "16", "--views", "2",
                  "--ray-cpus", "1")  # fmt: skip
    ray = found["ray"]
    # One BLAS thread a task against all of them here: a near tie may fall the other way.
    assert ray["pairs_only_local"] + ray["pairs_only_ray"] <= 1e-3 * found["candidate_pairs"]
    assert ray["candidate_seconds"] > 0 and ray["shards"] == 4
    assert 0 <= found["candidate_recall_audit"] <= 1


def test_faults_runs() -> None:
    found = bench("faults.py", "--quick", timeout=400)
    assert len(found["kinds"]) >= 6 and found["failures"] == 0, found["kinds"]
    assert all(kind["trials"] >= 1 for kind in found["kinds"].values())


def test_memory_many_files_runs() -> None:
    found = bench("memory_many_files.py", "--counts", "12", "24")
    assert [r["files"] for r in found["runs"]] == [12, 24]


def test_query_cold_start_runs() -> None:
    found = bench("query_cold_start.py", "--runs", "1")
    assert not found["query_image_imports_torch"]


def test_index_throughput_runs() -> None:
    found = bench("index_throughput.py", "--count", "4", "--runtimes", "auto")
    assert found["runs"]


def test_distributed_runs() -> None:
    found = bench("distributed.py", "--count", "4", "--cpus", "1", timeout=300)
    assert found["images"] == 4 and found["ray_images_per_second"] > 0


def test_robustness_pillow_runs(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(4):
        shapes(seed).save(images / f"good{seed}.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    found = bench("robustness_pillow.py", "--src", str(images))
    assert (found["indexed"], found["failed"], found["faiss_equals_sqlite"]) == (4, 1, True)


def _tiny_corpus(folder: Path) -> None:
    """A stand-in for ../shared/data/devphotos: the manifest and files copyset.py reads."""
    rng = np.random.RandomState(3)
    rows = []
    for n, (domain, side) in enumerate([("photos", 240)] * 3 + [("astro", 280)] * 3
                                       + [("photos", 90)] * 8):  # fmt: skip
        pixels = rng.randint(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((side, side * 3 // 4), Image.Resampling.BICUBIC)
        relpath = f"{domain}/p{n}.jpg"
        (folder / domain).mkdir(parents=True, exist_ok=True)
        image.save(folder / relpath, quality=90)
        rows.append({"relpath": relpath, "domain": domain, "group": "", "width": image.width,
                     "height": image.height})  # fmt: skip
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_copydetect_runs(tmp_path: Path) -> None:
    """bench/copyset.py builds the set, bench/copydetect.py scores dupes and queries on it."""
    _tiny_corpus(tmp_path / "photos")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "copyset.py"), "--photos", str(tmp_path / "photos"),
         "--out", str(tmp_path / "set"), "--astro-originals", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    split = "dev" if len(list((tmp_path / "set" / "dev").glob("*-original.*"))) else "heldout"
    found = bench("copydetect.py", "--set", str(tmp_path / "set"), "--split", split,
                  "--subsets", "0", "--no-outside", timeout=400)  # fmt: skip
    assert found["images"] > 8 and found["index_report"]["failed"] == 0, found["index_report"]
    assert 0 <= found["dupes"]["recall"] <= 1 and "query_path" in found
    assert set(found["dupes"]["keeper_by_format"]) <= {".jpg", ".png", ".webp", ".avif"}
    mixed = found["dupes"]["groups_of_two_originals"]  # noise photos may well look alike
    assert len(found["dupes"]["two_originals_examples"]) == min(3, mixed)
    sub = found["dupes"]["keeper_subgroups"]  # the keeper on random parts of each group
    assert sub["original_or_equivalent_kept"] + sum(sub["kept_instead"].values()) == sub["trials"]


def test_review_scale_runs() -> None:
    found = bench("review_scale.py", "--groups", "30", "--browser", "no")
    assert found["groups"] == 30 and found["first_page_p50_ms"] > 0
    assert found["first_start_groups_found_seconds"] > 0
