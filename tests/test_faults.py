"""Nothing lost, nothing stale: the writer lock on every change, damaged FAISS files and
catalogs, busy databases, temp files of killed runs, silent omissions, torn journals, and bad
command lines as one clear line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from search.cli import cli
from store import Store, exclusive_writer
from tests.helpers import TINY_NETWORK, shapes, write_collection
from tests.subprocs import REPO


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


@pytest.fixture
def indexed(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    folder = tmp_path / "photos"
    write_collection(folder)
    for seed in range(20, 32):
        shapes(seed).save(folder / f"s{seed}.png")
    (folder / "s20-copy.png").write_bytes((folder / "s20.png").read_bytes())
    home = tmp_path / "home"
    result = run(home, "index", str(folder), "--model", TINY_NETWORK, "--weights",
                 str(tiny_checkpoint), "--workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    return home


def answers(home: Path) -> list[list[float]]:
    """The scores of the 5 nearest of three images (ties make ids come in either order)."""
    return [[round(r["score"], 4) for r in json.loads(run(home, "query", "--id", str(i), "-k",
                                                          "5", "--json", "--no-verify").stdout)
             ["results"]] for i in (1, 5, 9)]  # fmt: skip


def oracle(home: Path) -> list[list[float]]:
    """The same, by brute force over the catalog's vectors."""
    with Store.open(home) as store:
        ids = sorted(r.id for r in store.catalog.file_states().values())
        matrix = np.stack([store.catalog.vector(i) for i in ids])
    found = []
    for i in (1, 5, 9):
        scores = matrix @ matrix[ids.index(i)]
        others = [float(scores[n]) for n in np.argsort(-scores, kind="stable") if ids[n] != i]
        found.append([round(s, 4) for s in others[:5]])
    return found


def faiss_file(home: Path) -> Path:
    (path,) = home.glob("vectors.g*.faiss")
    return path


@pytest.mark.parametrize("damage", ["flip", "random", "swap"])
def test_a_damaged_faiss_file_that_still_parses_is_caught_and_rebuilt(
    indexed: Path, tmp_path: Path, damage: str
) -> None:
    truth = oracle(indexed)
    path = faiss_file(indexed)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
    elif damage == "random":
        start = len(data) // 3
        data[start : start + 4096] = np.random.RandomState(0).bytes(4096)
        path.write_bytes(bytes(data))
    else:  # a valid FAISS file of 3 vectors in its place
        import faiss

        small = faiss.IndexIDMap2(faiss.IndexFlatIP(64))
        small.add_with_ids(np.eye(3, 64, dtype=np.float32), np.arange(1, 4))
        faiss.write_index(small, str(path))
    result = run(indexed, "query", "--id", "1", "-k", "5", "--json", "--no-verify")
    assert result.exit_code == 0 and "rebuilt from the catalog" in result.stderr
    assert answers(indexed) == truth
    check = json.loads(run(indexed, "check", "--json").stdout)
    assert check["catalog_ok"] and check["faiss"] == "sound"


def test_index_and_check_repair_a_damaged_file(indexed: Path) -> None:
    path = faiss_file(indexed)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    check = run(indexed, "check")
    assert check.exit_code == 0 and "FAISS file: damaged" in check.stdout
    assert "FAISS file: sound" in run(indexed, "check").stdout


@pytest.mark.parametrize("damage", ["garbage", "blob"])
def test_a_damaged_catalog_is_one_line_that_says_what_to_do(indexed: Path, damage: str) -> None:
    catalog = indexed / "catalog.sqlite"
    if damage == "garbage":
        for suffix in ("-wal", "-shm"):
            Path(str(catalog) + suffix).unlink(missing_ok=True)
        data = bytearray(catalog.read_bytes())
        data[4096:12288] = os.urandom(8192)  # pages of the tables, not the header
        catalog.write_bytes(bytes(data))
    else:
        with sqlite3.connect(catalog) as db:
            db.execute("UPDATE images SET vector = x'00000000' WHERE id = 3")
    result = run(indexed, "query", "--id", "3", "--json")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "imgsearch check" in result.stderr and "Traceback" not in result.output
    check = run(indexed, "check")
    assert check.exit_code == 1 and "catalog: damaged" in check.stdout


def test_a_reader_and_a_short_write_never_fail_because_a_writer_is_busy(indexed: Path) -> None:
    catalog = indexed / "catalog.sqlite"
    holder = sqlite3.connect(catalog, timeout=30, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process writing: the write lock is held
    holder.execute("UPDATE meta SET value = value WHERE key = 'model'")
    release = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        assert run(indexed, "info", "--json").exit_code == 0  # readers do not wait
        started = time.perf_counter()
        ignored = run(indexed, "dupes", "--ignore", "1", "2")  # waits, then writes
        assert ignored.exit_code == 0, ignored.output
        assert time.perf_counter() - started >= 0.8
    finally:
        release.join()
        holder.close()


def test_actions_wait_for_the_writer_lock_with_a_notice(indexed: Path, tmp_path: Path) -> None:
    code = ("import sys, time\nfrom pathlib import Path\nfrom store import exclusive_writer\n"
            f"with exclusive_writer(Path({str(indexed)!r})):\n    print('held', flush=True)\n"
            "    time.sleep(2)\n")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env=os.environ | {"PYTHONPATH": str(REPO)})  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.perf_counter()
    moved = run(indexed, "dupes", "--move-to", str(tmp_path / "moved"), "--yes")
    holder.wait(timeout=30)
    assert moved.exit_code == 0, moved.output
    assert "waiting for another imgsearch command" in moved.stderr
    assert time.perf_counter() - started >= 1.0
    with Store.open(indexed) as store:  # catalog and FAISS agree after the action
        assert store.catalog.count() == store.index.count


def test_temp_files_of_killed_runs_are_removed(indexed: Path, tmp_path: Path,
                                                tiny_checkpoint: Path) -> None:  # fmt: skip
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = indexed / f".vectors.g7.faiss.imgsearch-{dead}.tmp"
    stale.write_bytes(b"x" * 1000)
    beside = tmp_path / "photos" / f".red.png.imgsearch-{dead}.tmp"
    beside.write_bytes(b"half a fixed photo")
    mine = indexed / f".vectors.g8.faiss.imgsearch-{os.getpid()}.tmp"  # a live process's: kept
    mine.write_bytes(b"x")
    result = run(indexed, "index", str(tmp_path / "photos"), "--weights", str(tiny_checkpoint))
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not beside.exists() and mine.exists()


def test_unreadable_folders_and_too_long_paths_are_listed_as_failed(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    write_collection(folder)
    # A path longer than the system allows, made one folder at a time (relative to a dir fd).
    fd = os.open(folder, os.O_RDONLY)
    depth = 0
    while depth * 200 < 4200:
        os.mkdir("d" * 200, dir_fd=fd)
        inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, depth = inner, depth + 1
    with os.fdopen(os.open("deep.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as handle:
        shapes(1).save(handle, "PNG")
    os.close(fd)
    locked = folder / "locked"
    locked.mkdir()
    shapes(2).save(locked / "hidden.png")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:  # root reads anything: refuse as a user would
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    result = run(tmp_path / "home", "index", str(folder), "--model", TINY_NETWORK, "--weights",
                 str(tiny_checkpoint), "--workers", "0", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    failed = {f["path"]: f["error"] for f in json.loads(result.stdout)["failed"]}
    assert failed[str(locked)].startswith("folder not read (Permission denied")
    assert any("longer than the system allows" in why for why in failed.values()), failed


def test_undo_restores_every_complete_entry_of_a_torn_journal(indexed: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    moved = run(indexed, "dupes", "--threshold", "0.5", "--keep", "largest", "--move-to",
                str(tmp_path / "moved"), "--yes")  # fmt: skip
    assert moved.exit_code == 0, moved.output
    journal = Path(moved.stderr.split("journal: ")[1].split(" ")[0])
    done = [
        line
        for line in journal.read_text().splitlines()[1:]
        if '"move"' in line and '"intent"' not in line  # outcome lines only
    ]
    assert done
    with open(journal, "a") as handle:
        handle.write('{"kind": "move", "source": "/tor')  # killed mid-append
    result = CliRunner().invoke(cli, ["undo", str(journal)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("restored ") == len(done)
    assert "1 journal line(s) were cut short" in result.stderr
    again = CliRunner().invoke(cli, ["undo", str(journal)])
    assert again.exit_code == 0 and "undone already: nothing to restore" in again.stdout


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["dupes", "--keep", "bogus"], 2, "is not one of"),
        # Refused before the search (and its notices), not after it.
        (["dupes", "--csv", "/no/such/folder/d.csv"], 1, "no folder /no/such/folder"),
        (["dupes", "--html", "/no/such/folder/d.html"], 1, "no folder /no/such/folder"),
        # Refused even where no model is loaded.
        (["query", "--id", "1", "--device", "gpu0"], 2, "gpu0: not a device"),
        (["query", "--id", "99999999999999999999"], 2, "--id"),
        (["dupes", "--threshold", "nan"], 2, "is not a number from"),
        (["query", "--id", "1", "--min-score", "nan"], 2, "is not a number from"),
        (
            ["--home", "NEW", "index", ".", "--weights", "WEIGHTS"],
            1,
            "not EfficientNet-Lite0 weights",
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], code: int,
                                     words: str) -> None:  # fmt: skip
    home = tmp_path / "home"
    write_collection(tmp_path / "photos")
    assert run(home, "index", str(tmp_path / "photos"), "--workers", "0").exit_code == 0
    text = tmp_path / "weights.txt"
    text.write_text("not weights\n")
    places = {"WEIGHTS": str(text), ".": str(tmp_path / "photos"), "NEW": str(tmp_path / "new")}
    args = [places.get(a, a) for a in args]
    result = run(home, *args)
    assert result.exit_code == code, result.output
    assert words in result.output and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_very_long_home_and_a_read_only_home(
    tmp_path: Path, indexed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = run(tmp_path / ("h" * 5000), "info")
    assert long.exit_code == 1 and len(long.stderr.strip().splitlines()) == 1, long.output
    import store.store as catalog

    real = os.access
    monkeypatch.setattr(
        catalog.os,
        "access",  # a read-only mount (root ignores file modes)
        lambda p, mode: False if mode == os.W_OK else real(p, mode),
    )
    query = run(indexed, "query", "--id", "1", "--json", "--no-verify")
    assert query.exit_code == 0, query.output  # read-only: the catalog is opened immutable
    with exclusive_writer(indexed):  # the lock file itself can still be written here
        pass
    index = run(indexed, "index", str(tmp_path / "photos"))
    assert index.exit_code == 1 and "read-only" in index.stderr, index.output
