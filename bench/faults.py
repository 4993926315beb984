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
    for kind in ("pages", "blob", "not-a-database", "meta", "table")[: 1 if quick else 5]:
        home = work / f"catalog-{kind}"
        imgsearch(home, "index", str(folder), "--model", TINY_NETWORK, "--weights", str(weights))
        catalog = home / "catalog.sqlite"
        if kind in ("blob", "meta", "table"):
            with sqlite3.connect(catalog) as db:
                db.execute({
                    "blob": "UPDATE images SET vector = x'00000000' WHERE id = 2",
                    "meta": "UPDATE meta SET value = 'x' WHERE key = 'generation'",
                    "table": "DROP TABLE failures",
                }[kind])  # fmt: skip
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
        if kind not in ("blob", "meta", "table"):
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
    ["query", "--id", "1", "-k", "99999999999999999999"], ["dupes", "--threshold", "-1"],
    ["tags", "--min-score", "nan"], ["dupes", "--exact-only", "--move-to", "", "--yes"],
    ["dupes", "--exact-only", "--move-to", "/proc/x", "--yes"],
    ["query", "--id", "1", "--model", "pe-core-s16"], ["index", "./s100.png"],
]  # fmt: skip


def bad_lines(work: Path, weights: Path, quick: bool = False) -> tuple[int, int]:
    home = work / "lines"
    folder = photos(work / "lines-photos", 5)
    imgsearch(home, "index", str(folder), "--model", TINY_NETWORK, "--weights", str(weights))
    failures = 0
    lines = BAD_LINES[:3] if quick else BAD_LINES
    for args in lines:
        done = imgsearch(home, *[a.replace(".", str(folder), 1) if a.startswith(".") else a
                                 for a in args])  # fmt: skip
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
    v6 = TestClient(create_app(ServerState(home, ModelOptions(), hosts=("::1",))))
    coffee = (folder / "coffee.jpg").read_bytes()
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
        (lambda: client.post("/api/dupes/act", json={"keep": 999999, "members": [999999]}), 409),
        (lambda: client.post("/api/undo", json={"journal": "j" * 5000}), 404),
        (lambda: client.post("/api/search", files={"file": ("c.jpg", coffee)},
                             headers={"origin": "https://evil.example"}), 403),
        (lambda: v6.get("/api/info", headers={"host": "[::1]:8000"}), 200),
        (lambda: client.get("/docs"), 200),
    ]  # fmt: skip
    failures = 0
    for probe, status in probes:
        try:
            failures += probe().status_code not in (status, 422 if status == 404 else status)
        except Exception:  # a probe that crashes the app is a failure
            failures += 1
    return len(probes), failures


def distinct(folder: Path) -> set[bytes]:
    """The contents reachable under `folder` (through links too)."""
    return {p.read_bytes() for p in folder.rglob("*.png") if p.exists()}


def action_safety(work: Path, weights: Path, quick: bool = False) -> tuple[int, int]:
    """The ways `dupes --yes` could remove the last copy of a picture (issue 24): a folder
    indexed again through a link, a link to an indexed file, a kept file gone before the
    action, and destinations that lose or recycle files. A failure: a picture lost."""
    index = ["--model", TINY_NETWORK, "--weights", str(weights)]
    trials = failures = 0
    cases = ("linked-folder", "linked-file", "keeper-gone", "move-inside")
    for case in cases[: 2 if quick else 4]:
        root = work / f"safety-{case}"
        real = photos(root / "data" / "Photos", 3)
        for name in ("s100.png", "s101.png"):
            shutil.copy(real / name, real / f"copy-{name}")
        home = root / "home"
        imgsearch(home, "index", str(real), *index)
        if case == "linked-folder":
            (root / "Photos").symlink_to(real)
            imgsearch(home, "index", str(root / "Photos"), *index)
        elif case == "linked-file":
            (root / "favourites").mkdir()
            (root / "favourites" / "s102.png").symlink_to(real / "s102.png")
            imgsearch(home, "index", str(root / "favourites"), *index)
        elif case == "keeper-gone":
            for name in ("s100.png", "copy-s100.png"):  # whichever was kept: gone now
                (real / name).rename(root / name)
            shutil.copy(root / "copy-s100.png", real / "copy-s100.png")
        before = distinct(root)
        act = ["--move-to", str(real / "dupes")] if case == "move-inside" else ["--delete"]
        done = imgsearch(home, "dupes", "--exact-only", *act, "--yes")
        trials += 1
        failures += distinct(root) != before or "Traceback" in done.stderr
    return trials, failures


def kills_mid_action(work: Path, weights: Path, quick: bool = False) -> tuple[int, int]:
    """`dupes --move-to --yes` killed right before and right after a file moves, and `undo`
    killed while it restores: the next `undo` must bring every file and row back."""
    from tests.subprocs import cli_code, killed_at

    index = ["--model", TINY_NETWORK, "--weights", str(weights)]
    points = [("search.actions.plan._do", "before", 2), ("search.actions.plan._do", "after", 2),
              ("search.actions.plan._move_no_overwrite", "after", 2)]  # fmt: skip
    trials = failures = 0
    for n, (target, when, count) in enumerate(points[: 1 if quick else 3]):
        root = work / f"mid-action-{n}"
        folder = photos(root / "photos", 6)
        for name in ("s100.png", "s101.png", "s102.png"):
            shutil.copy(folder / name, folder / f"copy-{name}")
        home = root / "home"
        imgsearch(home, "index", str(folder), *index)
        with Store.open(home) as store:
            indexed = store.catalog.count()
        before = {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        act = ["--home", str(home), "dupes", "--exact-only", "--move-to", str(root / "out")]
        if target.endswith("_do"):
            status = killed_at(target, when, count, cli_code(*act, "--yes"))
        else:
            imgsearch(home, *act[2:], "--yes")
            journal = next((home / "journals").glob("*.jsonl"))
            status = killed_at(target, when, count, cli_code("undo", str(journal)))
        journal = next((home / "journals").glob("*.jsonl"))
        undone = imgsearch(home, "undo", str(journal))
        after = {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        with Store.open(home) as store:
            rows = store.catalog.count()
        trials += 1
        failures += (status != 9 or after != before or rows != indexed
                     or undone.returncode != 0 or "not restored" in undone.stderr)  # fmt: skip
    return trials, failures


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
            "action_safety": lambda: action_safety(work, weights, quick),
            "kills_mid_action": lambda: kills_mid_action(work, weights, quick),
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
