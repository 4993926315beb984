"""The review page on a home with many duplicate groups: how fast `imgsearch serve` answers
a page of groups, and how soon the page is interactive in a browser.

    python bench/review_scale.py --groups 10000 [--browser auto|yes|no]

Builds `--groups` groups of real files (a small JPEG and a byte copy of it, so every group is
found by content and every thumbnail can be served), stores them through the store's API as
an index run does (random vectors: the groups do not depend on them), starts `imgsearch
serve` in its own process and times over HTTP:

- on a first start, how long until the groups are found (`serve` finds them in the
  background from start; local features and the keeper's looks are made for the first time);
- on the next start (those in the catalog's caches): the first GET /api/dupes, then the first
  page again (p50 of 20), a page deep in the list, a filtered page and a sorted one;
- with Chromium (Debian's, driven by Playwright): from opening the page and its Duplicates tab
  to the counter and the first group's pictures shown, and each of 5 presses of `j`.

Prints JSON with the figures and the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from indexer.scan import hash_file
from store import Embedded, ImageFile, NewIndex, Store
from tests.subprocs import serving

ROOT = Path(__file__).resolve().parent.parent


def build(home: Path, photos: Path, groups: int, dim: int) -> None:
    """`groups` pairs of identical small JPEGs, in folders of 500 pairs."""
    from PIL import Image

    rng = np.random.RandomState(3)
    rows = []
    for g in range(groups):
        folder = photos / f"set{g // 500:03}"
        folder.mkdir(parents=True, exist_ok=True)
        original = folder / f"g{g:05}.jpg"
        pixels = rng.randint(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((64, 48)).save(original, quality=80 + g % 15)
        copy = folder / f"g{g:05}-copy.jpg"
        shutil.copyfile(original, copy)
        vector = rng.randn(dim).astype(np.float32)
        vector /= np.linalg.norm(vector)
        for path in (original, copy):
            st = path.stat()
            file = ImageFile(str(path), st.st_size, st.st_mtime_ns, hash_file(str(path)))
            rows.append(Embedded(file, 64, 48, vector))
    with Store.writer(home, new=NewIndex("synthetic", dim)) as store:
        for start in range(0, len(rows), 20_000):
            store.commit_batch(rows[start : start + 20_000], [])
        store.flush()


def seconds_of(url: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        body = json.loads(response.read())
    return time.perf_counter() - started, body


def browser_figures(base: str, groups: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        started = time.perf_counter()
        page.goto(base.removesuffix("api/dupes"))
        page.click("#tab-dupes")
        page.wait_for_selector(f"#counter:has-text('1 / {groups}')")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#group img')].every(i => i.naturalWidth > 0)"
        )
        interactive = time.perf_counter() - started
        steps = []
        for n in range(2, 7):
            began = time.perf_counter()
            page.locator("body").press("j")
            page.wait_for_selector(f"#counter:has-text('{n} / {groups}')")
            steps.append(time.perf_counter() - began)
        browser.close()
    return {
        "page_interactive_seconds": round(interactive, 3),
        "next_group_ms_max": round(max(steps) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--browser", choices=("auto", "yes", "no"), default="auto")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    use_browser = args.browser == "yes" or (args.browser == "auto" and chromium is not None)
    with tempfile.TemporaryDirectory() as tmp:
        home, photos = Path(tmp) / "home", Path(tmp) / "photos"
        started = time.perf_counter()
        build(home, photos, args.groups, args.dim)
        build_seconds = time.perf_counter() - started
        # First start: the groups are found in the background from scratch (local features
        # and the keeper's looks made for the first time); the first request waits for them.
        with serving(home) as port:
            base = f"http://127.0.0.1:{port}/api/dupes"
            cold, body = seconds_of(base)
            assert body["total"] == args.groups, body["total"]
        # Next start: what the first one made is in the catalog's caches.
        with serving(home) as port:
            base = f"http://127.0.0.1:{port}/api/dupes"
            first = seconds_of(base)[0]
            warm = [seconds_of(base)[0] for _ in range(20)]
            deep = seconds_of(f"{base}?offset={max(0, args.groups - 100)}")[0]
            folder = str(photos / "set000")
            filtered = seconds_of(f"{base}?kind=exact&folder={folder}")[0]
            by_space = seconds_of(f"{base}?sort=space")[0]
            shown = browser_figures(base, args.groups) if use_browser else {}
    print(json.dumps({
        "benchmark": "review_scale", "groups": args.groups, "files": 2 * args.groups,
        "build_seconds": round(build_seconds, 1),
        "first_start_groups_found_seconds": round(cold, 1),
        "next_start_first_page_seconds": round(first, 3),
        "first_page_p50_ms": round(statistics.median(warm) * 1000, 1),
        "deep_page_ms": round(deep * 1000, 1), "filtered_page_ms": round(filtered * 1000, 1),
        "sorted_by_space_ms": round(by_space * 1000, 1),
        **shown, "browser": use_browser, "machine": machine(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
