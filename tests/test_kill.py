"""kill -9 at any moment, then run again: one entry per image, FAISS == SQLite, no re-embedding."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from store import Store
from tests.helpers import shapes
from tests.subprocs import committed, start_index, survivors, wait_for

N_IMAGES = 60


def kill_when(process: subprocess.Popen[str], home: Path, at_least: int) -> None:
    """SIGKILL once the catalog exists and holds at least `at_least` committed images."""
    wait_for(process, home, at_least)
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
        # The decoding workers end with the run that started them: none is left orphaned.
        assert survivors(home) == []
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
        assert store.index.count == store.catalog.count() == N_IMAGES
        # Every id answers a search for its own vector with itself.
        for image_id in list(final.values())[:: N_IMAGES // 6]:
            hit = store.index.search(store.catalog.vector(image_id)[None, :], 1)[0][0]
            assert hit.id == image_id
