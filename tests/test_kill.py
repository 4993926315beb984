"""kill -9 at any moment, then run again: one entry per image, FAISS == SQLite, no re-embedding."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store import Store
from tests.helpers import shapes

N_IMAGES = 60
REPO = Path(__file__).resolve().parent.parent


def start_index(home: Path, folder: Path, weights: Path) -> subprocess.Popen[str]:
    from tests.helpers import TINY_NETWORK

    args = ["--home", str(home), "index", str(folder), "--model", TINY_NETWORK,
            "--weights", str(weights), "--batch-size", "2", "--workers", "1", "--json"]  # fmt: skip
    code = f"from search.cli import cli; cli({args!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=os.environ | {"PYTHONPATH": str(REPO)},
    )  # fmt: skip


def committed(home: Path) -> dict[str, int]:
    """{path: id} as committed in SQLite right now (read like any other reader would)."""
    path = home / "catalog.sqlite"
    if not path.is_file():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        try:
            return dict(db.execute("SELECT path, id FROM images").fetchall())
        except sqlite3.OperationalError:  # tables not created yet
            return {}


def kill_when(process: subprocess.Popen[str], home: Path, at_least: int) -> None:
    """SIGKILL once the catalog exists and holds at least `at_least` committed images."""
    deadline = time.monotonic() + 120
    catalog = home / "catalog.sqlite"
    while (not catalog.is_file() or len(committed(home)) < at_least) and process.poll() is None:
        assert time.monotonic() < deadline, "the index run made no progress"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_kill_9_at_several_points_then_resume(tmp_path: Path, tiny_checkpoint: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(N_IMAGES):
        shapes(i).save(folder / f"{i:03}.png")
    home = tmp_path / "home"

    # Once the catalog exists (before or at the first batch), after a few batches, and well in.
    kept: dict[str, int] = {}
    for at_least in (0, 7, 31):
        process = start_index(home, folder, tiny_checkpoint)
        kill_when(process, home, at_least)
        assert process.returncode == -signal.SIGKILL, (
            process.stderr.read() if process.stderr else ""
        )
        now = committed(home)
        # Rows committed before a kill survive it with their ids: nothing is lost or redone.
        assert kept.items() <= now.items()
        kept = now
        print(f"killed with {len(now)} of {N_IMAGES} committed")

    process = start_index(home, folder, tiny_checkpoint)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["embedded"] == N_IMAGES - len(kept)  # committed images are not embedded again
    assert report["added"] == N_IMAGES - len(kept) and report["unchanged"] == len(kept)

    final = committed(home)
    assert len(final) == N_IMAGES and set(final) == {str(p) for p in folder.iterdir()}
    assert kept.items() <= final.items()
    with Store.open(home) as store:
        assert store.faiss_count() == store.count() == N_IMAGES
        # Every id answers a search for its own vector with itself.
        for image_id in list(final.values())[:: N_IMAGES // 6]:
            hit = store.search(store.vector(image_id)[None, :], 1)[0][0]
            assert hit.id == image_id
