"""A fault campaign against a real home: kills, damaged files, concurrent writers, bad command
lines and hostile server requests. Re-run it after every change.

    python bench/faults.py [--kills 8]
    python bench/faults.py --quick        # one trial of each kind (the test suite's smoke run)

Prints JSON: for each kind of fault, how many trials ran and how many failed (a traceback, an
answer that differs from the catalog's brute-force truth, a catalog and FAISS file that
disagree, a file lost, a status code other than the one expected).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from store import Store
from tests.helpers import TINY_NETWORK, save_tiny_checkpoint, shapes, write_collection
from tests.subprocs import survivors

ROOT = Path(__file__).resolve().parent.parent

CLI = [sys.executable, "-c", "from search.cli import cli; cli()"]
ENV = os.environ | {"PYTHONPATH": str(ROOT)}


def imgsearch(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--home", str(home), *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=ROOT)  # fmt: skip


def photos(folder: Path, count: int) -> Path:
    write_collection(folder)
    for seed in range(100, 100 + count):
        shapes(seed, (64, 48)).save(folder / f"s{seed}.png")
    return folder


def consistent(home: Path) -> bool:
    with Store.writer(home) as store:
        store.index.verify()
        return store.catalog.count() == store.index.count


def truth(home: Path, ids: list[int]) -> list[list[float]]:
    with Store.open(home) as store:
        every = sorted(r.id for r in store.catalog.file_states().values())
        matrix = np.stack([store.catalog.vector(i) for i in every])
    found = []
    for i in ids:
        scores = matrix @ matrix[every.index(i)]
        found.append(sorted((round(float(s), 4) for n, s in enumerate(scores)
                             if every[n] != i), reverse=True)[:5])  # fmt: skip
    return found


def answered(home: Path, ids: list[int]) -> list[list[float]]:
    found = []
    for i in ids:
        done = imgsearch(home, "query", "--id", str(i), "-k", "5", "--json", "--no-verify")
        found.append([round(r["score"], 4) for r in json.loads(done.stdout)["results"]])
    return found


def one_line(done: subprocess.CompletedProcess[str]) -> bool:
    text = done.stderr.strip()
    return "Traceback" not in text and len(text.splitlines()) == 1


def kills(work: Path, weights: Path, trials: int, quick: bool = False) -> tuple[int, int]:
    failures = 0
    folder = photos(work / "kill-photos", 12 if quick else 60)
    model = ["--model", TINY_NETWORK, "--weights", str(weights)]
    whole = imgsearch(work / "kill-whole", "index", str(folder), *model, "--json")
    expected = json.loads(whole.stdout)["added"]
    for trial in range(trials):
        home = work / f"kill-{trial}"
        args = [*CLI, "--home", str(home), "index", str(folder), *model,
                "--batch-size", "2", "--workers", "1"]  # fmt: skip
        process = subprocess.Popen(args, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(random.Random(trial).uniform(1.0, 2.0 if quick else 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        orphans = survivors(home)  # its decoding workers end with it
        resumed = imgsearch(home, "index", str(folder), *model, "--json")
        ok = not orphans and resumed.returncode == 0 and consistent(home)
        with Store.open(home) as store:
            ok = ok and store.catalog.count() == expected
        failures += not ok
    return trials, failures


def writer_during_index(work: Path, weights: Path, quick: bool = False) -> tuple[int, int]:
    folder = photos(work / "race-photos", 20 if quick else 80)
    home = work / "race"
    first = imgsearch(home, "index", str(folder / "sub"), "--model", TINY_NETWORK, "--weights",
                      str(weights))  # fmt: skip
    assert first.returncode == 0, first.stderr
    args = [*CLI, "--home", str(home), "index", str(folder), "--weights", str(weights),
            "--batch-size", "2", "--workers", "1"]  # fmt: skip
    process = subprocess.Popen(args, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(2.0)
    moved = imgsearch(home, "dupes", "--threshold", "0.99", "--move-to", str(work / "moved"),
                      "--yes")  # fmt: skip
    ignore = imgsearch(home, "dupes", "--ignore", "1", "2")
    process.wait(timeout=300)
    ok = moved.returncode == 0 and ignore.returncode == 0 and consistent(home)
    ok = ok and answered(home, [1]) == truth(home, [1])
    return 1, int(not ok)


def faiss_damage(work: Path, weights: Path, quick: bool = False) -> tuple[int, int]:
    import faiss

    folder = photos(work / "damage-photos", 30)
    failures = trials = 0
    for kind in ("flip", "random", "swap", "truncate")[: 1 if quick else 4]:
        home = work / f"damage-{kind}"
        imgsearch(home, "index", str(folder), "--model", TINY_NETWORK, "--weights", str(weights))
        expected = truth(home, [1, 7, 20])
        (path,) = home.glob("vectors.g*.faiss")
        data = bytearray(path.read_bytes())
        if kind == "flip":
            data[len(data) // 2] ^= 0x10
        elif kind == "random":
            data[len(data) // 3 : len(data) // 3 + 32768] = os.urandom(32768)
        elif kind == "truncate":
            data = data[: len(data) // 2]
        if kind == "swap":
            small = faiss.IndexIDMap2(faiss.IndexFlatIP(64))
            small.add_with_ids(np.eye(3, 64, dtype=np.float32), np.arange(1, 4))
            faiss.write_index(small, str(path))
        else:
            path.write_bytes(bytes(data[: len(data)]))
        trials += 1
        failures += answered(home, [1, 7, 20]) != expected
    return trials, failures


def catalog_damage(work: Path, weights: Path, quick: bool = False) -> tuple[int, int]:
    folder = photos(work / "catalog-photos", 10)
    failures = trials = 0
    for kind in ("pages", "blob", "not-a-database")[: 1 if quick else 3]:
        home = work / f"catalog-{kind}"
        imgsearch(home, "index", str(folder), "--model", TINY_NETWORK, "--weights", str(weights))
        catalog = home / "catalog.sqlite"
        if kind == "blob":
            with sqlite3.connect(catalog) as db:
                db.execute("UPDATE images SET vector = x'00000000' WHERE id = 2")
        else:
            for suffix in ("-wal", "-shm"):
                Path(f"{catalog}{suffix}").unlink(missing_ok=True)
            data = bytearray(catalog.read_bytes())
            if kind == "pages":
                data[4096:12288] = os.urandom(8192)
            else:
                data = bytearray(os.urandom(len(data)))
            catalog.write_bytes(bytes(data))
        before = catalog.read_bytes()
        for args in (["query", "--id", "2"], ["info"], ["dupes"], ["check"]):
            trials += 1
            done = imgsearch(home, *args)
            # A damaged file: every command says so in one line. One bad row: the commands
            # that read it (query --id 2, check) do; the others may answer without it.
            must_fail = kind != "blob" or args[0] in ("query", "check")
            failed = done.returncode == 1 and one_line(done)
            failures += not failed if must_fail else "Traceback" in done.stderr
        if kind != "blob":
            failures += catalog.read_bytes() != before  # never written while damaged
    return trials, failures


BAD_LINES = [
    ["dupes", "--keep", "bogus"], ["dupes", "--csv", "/no/such/dir/x.csv"],
    ["dupes", "--html", "/no/such/dir/x.html"], ["query", "--id", "99999999999999999999"],
    ["dupes", "--threshold", "nan"], ["query", "--id", "1", "--min-score", "nan"],
    ["query", "--id", "0"], ["query", "-k", "0", "--id", "1"], ["query"], ["index"],
    ["index", "/no/such/folder"], ["query", "/no/such.jpg"], ["dupes", "--ignore", "1"],
    ["dupes", "--move-to", "x", "--delete"], ["reindex", "--index-type", "bogus"],
    ["reindex", "--max-index-memory", "lots"], ["undo", "/no/such/journal"],
    ["export", "out.csv"], ["apply", "/no/plan.json"], ["serve", "--port", "99999"],
    ["query", "--id", "1", "--device", "gpu0"], ["index", ".", "--precision", "int4"],
    ["index", ".", "--runtime", "onnx", "--precision", "bf16"], ["models", "download", "nope"],
    ["query", "--id", "1", "--tag", "no-such-tag-word"], ["--home", "h" * 5000, "info"],
]  # fmt: skip


def bad_lines(work: Path, weights: Path, quick: bool = False) -> tuple[int, int]:
    home = work / "lines"
    folder = photos(work / "lines-photos", 5)
    imgsearch(home, "index", str(folder), "--model", TINY_NETWORK, "--weights", str(weights))
    failures = 0
    lines = BAD_LINES[:3] if quick else BAD_LINES
    for args in lines:
        done = imgsearch(home, *[str(folder) if a == "." else a for a in args])
        failures += done.returncode not in (1, 2) or not one_line(done)
    return len(lines), failures


def server_probes(work: Path) -> tuple[int, int]:
    from fastapi.testclient import TestClient
    from PIL import Image

    from indexer.options import IndexOptions, ModelOptions
    from indexer.pipeline import index_folders
    from search.server.app import create_app
    from search.server.state import ServerState

    folder = work / "served"
    folder.mkdir()
    for name in ("coffee.jpg", "rocket.jpg"):
        shutil.copy(ROOT / "examples" / name, folder / name)
    home = work / "served-home"
    index_folders(home, [str(folder)], IndexOptions(workers=0))
    client = TestClient(create_app(ServerState(home, ModelOptions(), 1 << 20,
                                               hosts=("testserver",))))  # fmt: skip
    bomb = work / "bomb.png"
    Image.new("L", (15000, 15000)).save(bomb, optimize=True)
    huge = {"content-length": str(300 << 20)}
    probes: list[tuple[Callable[[], Any], int]] = [
        (lambda: client.get("/api/info", headers={"host": "evil.example"}), 400),
        (lambda: client.post("/api/search", content=b"x", headers=huge), 413),
        (lambda: client.post("/api/search", files={"file": ("b.png", bomb.read_bytes())}), 415),
        (lambda: client.get("/api/search", params={"id": "99999999999999999999"}), 404),
        (lambda: client.get("/api/images/..%2F..%2Fetc%2Fpasswd/thumbnail"), 404),
        (lambda: client.get("/api/search", params={"path": "/etc/passwd"}), 404),
        (lambda: client.post("/api/search", files={"file": ("t.jpg", b"text")}), 415),
        (lambda: client.get("/api/dupes", params={"keep": "x"}), 422),
        (lambda: client.post("/api/undo", json={"journal": "../../catalog.sqlite"}), 404),
        (lambda: client.post("/api/dupes/act", json={"keep": 999999}), 404),
        (lambda: client.get("/docs"), 200),
    ]
    failures = 0
    for probe, status in probes:
        try:
            failures += probe().status_code not in (status, 422 if status == 404 else status)
        except Exception:  # a probe that crashes the app is a failure
            failures += 1
    return len(probes), failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="one trial of each kind of fault")
    args = parser.parse_args()
    quick = args.quick
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "weights").mkdir()
        weights = save_tiny_checkpoint(work / "weights")
        campaign: dict[str, Callable[[], tuple[int, int]]] = {
            "kill_9_during_index": lambda: kills(work, weights, 1 if quick else args.kills, quick),
            "dupes_actions_during_index": lambda: writer_during_index(work, weights, quick),
            "damaged_faiss_files": lambda: faiss_damage(work, weights, quick),
            "damaged_catalogs": lambda: catalog_damage(work, weights, quick),
            "bad_command_lines": lambda: bad_lines(work, weights, quick),
            "server_probes": lambda: server_probes(work),
        }
        results: dict[str, tuple[int, int]] = {}
        seconds: dict[str, float] = {}
        for kind, run in campaign.items():
            began = time.perf_counter()
            results[kind] = run()
            seconds[kind] = round(time.perf_counter() - began, 1)
    print(json.dumps({
        "benchmark": "faults",
        "kinds": {k: {"trials": t, "failures": f, "seconds": seconds[k]}
                  for k, (t, f) in results.items()},
        "trials": sum(t for t, _ in results.values()),
        "failures": sum(f for _, f in results.values()),
        "seconds": round(time.perf_counter() - started, 1), "machine": machine(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
