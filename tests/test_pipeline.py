"""`index_folders` end to end with a tiny random-weight Birder net, and every re-index case."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer.errors import FolderNotFound, InvalidOption
from indexer.options import IndexOptions, ModelOptions
from indexer.pipeline import index_folders
from indexer.session import IndexReport
from store import ModelMismatch, Store
from tests.helpers import TINY_NETWORK, gradient, shapes, write_collection


def run(home: Path, folder: Path | list[Path], options: IndexOptions) -> IndexReport:
    roots = [str(f) for f in (folder if isinstance(folder, list) else [folder])]
    return index_folders(home, roots, options)


def counts(report: IndexReport) -> dict[str, int]:
    keys = ("added", "updated", "unchanged", "removed", "embedded", "reused")
    return {key: getattr(report, key) for key in keys} | {"failed": len(report.failed)}


def snapshot(home: Path) -> dict[str, tuple[int, bytes]]:
    """{path: (id, vector bytes)}, and a check that FAISS and SQLite agree."""
    with Store.open(home) as store:
        states = store.catalog.file_states()
        assert store.index.count == store.catalog.count() == len(states)
        return {p: (r.id, store.catalog.vector(r.id).tobytes()) for p, r in states.items()}


def test_first_run_indexes_images_and_reports_failures(
    tmp_path: Path, home: Path, tiny_options: IndexOptions
) -> None:
    files = write_collection(tmp_path / "photos")
    report = run(home, tmp_path / "photos", tiny_options)
    assert counts(report) == {"added": 5, "updated": 0, "unchanged": 0, "removed": 0,
                              "embedded": 5, "reused": 0, "failed": 2}  # fmt: skip
    failed = {f.path: f.error for f in report.failed}
    assert set(failed) == {str(files["corrupt"]), str(files["text"])}
    assert all(error.startswith("not a readable image") for error in failed.values())
    state = snapshot(home)
    assert set(state) == {str(files[k]) for k in ("red", "blue", "gradient", "shapes1", "shapes2")}
    with Store.open(home) as store:
        record = store.catalog.record_by_path(str(files["gradient"]))
        assert (record.width, record.height) == (96, 64)
        assert set(store.catalog.failures()) == set(failed)


def test_rerun_does_only_what_changed(
    tmp_path: Path, home: Path, tiny_options: IndexOptions
) -> None:
    folder = tmp_path / "photos"
    files = write_collection(folder)
    run(home, folder, tiny_options)
    before = snapshot(home)

    unchanged = run(home, folder, tiny_options)
    assert counts(unchanged) == {"added": 0, "updated": 0, "unchanged": 5,
        "removed": 0, "embedded": 0, "reused": 0, "failed": 0}  # fmt: skip
    assert len(unchanged.not_retried) == 2  # still reported, not retried
    assert snapshot(home) == before

    # Renamed: the vector is reused, not recomputed; the old path leaves.
    renamed = folder / "sub" / "renamed.png"
    files["shapes1"].rename(renamed)
    report = run(home, folder, tiny_options)
    assert (report.added, report.removed, report.embedded, report.reused) == (1, 1, 0, 1)
    after = snapshot(home)
    assert after[str(renamed)][1] == before[str(files["shapes1"])][1]
    assert str(files["shapes1"]) not in after

    # A byte copy: reused too.
    shutil.copy(files["gradient"], folder / "copy.png")
    report = run(home, folder, tiny_options)
    assert (report.added, report.embedded, report.reused) == (1, 0, 1)

    # Modified in place: same id, new vector, embedded once.
    old_id, old_vector = snapshot(home)[str(files["red"])]
    gradient(axis=1).save(files["red"])
    report = run(home, folder, tiny_options)
    assert (report.updated, report.embedded, report.added) == (1, 1, 0)
    new_id, new_vector = snapshot(home)[str(files["red"])]
    assert new_id == old_id and new_vector != old_vector

    # Touched (same bytes, new mtime): not embedded again.
    stat = files["blue"].stat()
    os.utime(files["blue"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    report = run(home, folder, tiny_options)
    assert (report.unchanged, report.embedded, report.updated) == (6, 0, 0)

    # Deleted: removed from SQLite and FAISS.
    files["blue"].unlink()
    report = run(home, folder, tiny_options)
    assert report.removed == 1
    assert str(files["blue"]) not in snapshot(home)

    # A failed file is retried only once it changes, and then indexed.
    shapes(9).save(files["corrupt"], "JPEG")
    report = run(home, folder, tiny_options)
    assert (report.added, len(report.failed), len(report.not_retried)) == (1, 0, 1)
    with Store.open(home) as store:
        assert set(store.catalog.failures()) == {str(files["text"])}


def test_a_file_that_becomes_unreadable_leaves_the_index(
    tmp_path: Path, home: Path, tiny_options: IndexOptions
) -> None:
    folder = tmp_path / "photos"
    files = write_collection(folder)
    run(home, folder, tiny_options)
    files["shapes2"].write_bytes(b"garbage now")
    report = run(home, folder, tiny_options)
    assert [f.path for f in report.failed if f.path == str(files["shapes2"])]
    assert str(files["shapes2"]) not in snapshot(home)


def test_prune_only_under_the_scanned_folders(
    tmp_path: Path, home: Path, tiny_options: IndexOptions
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shapes(1).save(a / "1.png")
    shapes(2).save(b / "2.png")
    shapes(3).save(a / "3.png")
    run(home, [a, b], tiny_options)
    (b / "2.png").unlink()
    report = run(home, a, tiny_options)  # b is not scanned: its entries stay
    assert report.removed == 0 and len(snapshot(home)) == 3
    (a / "3.png").unlink()
    report = run(home, a, dataclasses.replace(tiny_options, prune=False))
    assert report.removed == 0 and len(snapshot(home)) == 3
    report = run(home, [a, b], tiny_options)
    assert report.removed == 2 and set(snapshot(home)) == {str(a / "1.png")}


def test_parallel_decoding_gives_the_same_vectors(
    tmp_path: Path, tiny_options: IndexOptions
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(11):
        shapes(i).save(folder / f"{i:02}.png")
    inline = tmp_path / "inline"
    parallel = tmp_path / "parallel"
    run(inline, folder, tiny_options)
    report = run(
        parallel,
        folder,
        dataclasses.replace(
            tiny_options, workers=2, model=dataclasses.replace(tiny_options.model, batch_size=4)
        ),
    )
    assert report.added == 11
    a, b = snapshot(inline), snapshot(parallel)
    assert set(a) == set(b)
    for path in a:
        va = np.frombuffer(a[path][1], dtype=np.float32)
        vb = np.frombuffer(b[path][1], dtype=np.float32)
        assert np.allclose(va, vb, atol=1e-6)


def test_another_model_is_refused_and_nothing_changes(
    tmp_path: Path, home: Path, tiny_options: IndexOptions
) -> None:
    folder = tmp_path / "photos"
    write_collection(folder)
    run(home, folder, tiny_options)
    before = snapshot(home)
    shapes(10).save(folder / "new.png")
    with pytest.raises(ModelMismatch, match="rope_i_vit_s16_pn_aps_c1"):
        run(home, folder, dataclasses.replace(tiny_options, model=ModelOptions("effnet-lite0")))
    assert snapshot(home) == before
    # Without --model, an existing index uses its own (and its recorded weights).
    own = run(home, folder, dataclasses.replace(tiny_options, model=ModelOptions()))
    assert (own.model, own.added) == (TINY_NETWORK, 1)


def test_missing_folder_and_bad_batch_size(home: Path, tiny_options: IndexOptions) -> None:
    with pytest.raises(FolderNotFound, match="no such folder"):
        index_folders(home, ["/no/such/folder"], tiny_options)
    bad = dataclasses.replace(tiny_options.model, batch_size=0)
    with pytest.raises(InvalidOption, match="must be >= 1") as raised:
        index_folders(home, ["."], dataclasses.replace(tiny_options, model=bad))
    assert raised.value.field == "batch_size"
    assert not home.exists()


def test_a_rerun_with_nothing_to_embed_does_not_load_the_model(
    tmp_path: Path, home: Path, tiny_options: IndexOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    files = write_collection(folder)
    run(home, folder, tiny_options)

    def no_model(*_args: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("indexer.session.load_embedder", no_model)
    files["red"].unlink()
    report = run(home, folder, tiny_options)
    assert (report.removed, report.unchanged, report.model) == (1, 4, TINY_NETWORK)
    assert str(files["red"]) not in snapshot(home)


class _InterruptAfterFirstBatch:
    def start(self, total: int) -> None:
        pass

    def advance(self, done: int) -> None:
        raise KeyboardInterrupt


def test_an_interrupted_run_keeps_its_batches_and_a_current_faiss_file(
    tmp_path: Path,
    home: Path,
    tiny_options: IndexOptions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "photos"
    write_collection(folder)
    with pytest.raises(KeyboardInterrupt):
        index_folders(home, [str(folder)], tiny_options, _InterruptAfterFirstBatch())
    with caplog.at_level(logging.WARNING, logger="imgsearch.store"):
        state = snapshot(home)
    assert 0 < len(state) < 5
    assert "rebuilt" not in caplog.text  # the FAISS file was saved on the way out
    report = run(home, folder, tiny_options)
    assert report.embedded == 5 - len(state)


def test_overlapping_folders_index_each_file_once(
    tmp_path: Path, home: Path, tiny_options: IndexOptions
) -> None:
    folder = tmp_path / "photos"
    write_collection(folder)
    report = run(home, [folder, folder / "sub", folder], tiny_options)
    assert (report.added, report.embedded) == (5, 5)
