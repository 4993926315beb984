"""Every FAISS index kind against the brute-force oracle: recall after tuning, deletions and
updates, reopening (memory-mapped IVF, HNSW tombstones), reindexing, and auto's boundaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from store import Embedded, ImageFile, NewIndex, Store, tuning
from tests.helpers import clustered_with_duplicates

DIM = 32
SIZES = {"flat": 3000, "hnsw": 3000, "ivf": 6000, "ivfpq": 12000}  # ivfpq trains 256 centroids


def fill(home: Path, data: np.ndarray) -> Store:
    store = Store.writer(home, new=NewIndex("test-model", DIM))
    for start in range(0, len(data), 1000):
        batch = range(start, min(len(data), start + 1000))
        store.commit_batch([_embedded(i, data[i]) for i in batch], [])
    return store


def _embedded(i: int, vector: np.ndarray, tag: str = "") -> Embedded:
    return Embedded(ImageFile(f"/p/{i}.jpg", 10, 10, f"h{i}{tag}"), 8, 8, vector)


def queries_near(data: np.ndarray, n: int, seed: int = 5) -> np.ndarray:
    rng = np.random.RandomState(seed)
    picked = data[rng.choice(len(data), n, replace=False)]
    noisy = picked + 0.05 * rng.randn(*picked.shape).astype(np.float32)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def oracle(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    scores = queries @ vectors.T
    return [set(ids[np.argsort(-row)[:k]].tolist()) for row in scores]


def recall(store: Store, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> float:
    truth = oracle(ids, vectors, queries, 10)
    hits = store.index.search(queries, 10)
    return sum(len({h.id for h in row} & t) for row, t in zip(hits, truth, strict=True)) / (
        10 * len(queries)
    )


def stored(store: Store) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array(sorted(r.id for r in store.catalog.file_states().values()), dtype=np.int64)
    return ids, np.stack([store.catalog.vector(int(i)) for i in ids])


@pytest.mark.parametrize("kind", list(SIZES))
def test_each_kind_is_tuned_to_the_recall_target_and_survives_changes(
    kind: str, tmp_path: Path
) -> None:
    data = clustered_with_duplicates(SIZES[kind], DIM, seed=11)
    store = fill(tmp_path / "home", data)
    spec = store.index.reindex(kind)
    assert spec.kind == kind and store.meta.index_factory == spec.factory
    assert spec.recall is not None and spec.recall >= 0.95
    ids, vectors = stored(store)
    queries = queries_near(data, 100)
    measured = recall(store, ids, vectors, queries)
    assert measured == 1.0 if kind == "flat" else measured >= 0.9

    # Remove 100, update 100 (same id, new vector), add 100.
    removed = [f"/p/{i}.jpg" for i in range(100)]
    removed_ids = {store.catalog.record_by_path(p).id for p in removed}
    assert store.remove_paths(removed) == 100
    moved = clustered_with_duplicates(100, DIM, seed=99)
    store.commit_batch([_embedded(100 + i, moved[i], "new") for i in range(100)], [])
    extra = clustered_with_duplicates(100, DIM, seed=98)
    base = len(data)
    store.commit_batch([_embedded(base + i, extra[i]) for i in range(100)], [])
    assert store.index.count == store.catalog.count() == len(data)
    for reopened in (False, True):
        if reopened:  # from the saved file: IVF memory-mapped, HNSW tombstones from the sidecar
            store.flush()
            store.close()
            store = Store.open(tmp_path / "home")
            assert store.index.count == store.catalog.count()
        hits = store.index.search(np.concatenate([moved[:20], extra[:20]]), 10)
        assert not removed_ids & {h.id for row in hits for h in row}
        for i, row in enumerate(hits[:20]):
            assert row[0].id == store.catalog.record_by_path(f"/p/{100 + i}.jpg").id
            assert row[0].score == pytest.approx(1.0, abs=0.02 if kind == "ivfpq" else 1e-5)
        for i, row in enumerate(hits[20:]):
            assert row[0].id == store.catalog.record_by_path(f"/p/{base + i}.jpg").id
        ids, vectors = stored(store)
        measured = recall(store, ids, vectors, queries)
        assert measured == 1.0 if kind == "flat" else measured >= 0.9
    store.close()


def test_reindex_between_kinds_keeps_every_id_and_path(tmp_path: Path) -> None:
    data = clustered_with_duplicates(6000, DIM, seed=3)
    store = fill(tmp_path / "home", data)
    before = store.catalog.file_states()
    queries = queries_near(data, 20)
    for kind in ("hnsw", "ivf", "flat", "ivfpq", "auto"):
        spec = store.index.reindex(kind)
        assert store.catalog.file_states() == before
        assert store.index.count == len(before)
        with Store.open(tmp_path / "home") as again:  # what another process sees
            assert again.meta.index_factory == spec.factory
            top = [row[0].id for row in again.index.search(queries, 1)]
            assert top == [row[0].id for row in store.index.search(queries, 1)]
    assert store.meta.index_choice == "auto"
    store.close()


def test_auto_rechooses_when_a_boundary_is_crossed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tuning, "FLAT_LIMIT", 3000)
    data = clustered_with_duplicates(5000, DIM, seed=4)
    store = fill(tmp_path / "home", data[:2500])
    assert store.index.maintain() is None and store.meta.index_factory == "IDMap2,Flat"
    for start in range(2500, 5000, 500):
        store.commit_batch([_embedded(i, data[i]) for i in range(start, start + 500)], [])
    spec = store.index.maintain()
    assert spec is not None and spec.kind == "ivf" and spec.recall and spec.recall >= 0.95
    assert store.index.maintain() is None  # chosen once
    # A tight memory budget makes auto choose IVF-PQ instead (on enough vectors to train it).
    assert tuning.choose("auto", 20000, DIM, max_memory=1000).kind == "ivfpq"
    assert tuning.choose("auto", 20000, DIM).kind == "ivf"
    assert tuning.choose("ivf", 10, DIM).kind == "flat"  # too few to train: flat until then
    store.close()


def test_hnsw_rebuilds_when_tombstones_pile_up(tmp_path: Path) -> None:
    data = clustered_with_duplicates(2000, DIM, seed=6)
    store = fill(tmp_path / "home", data)
    store.index.reindex("hnsw")
    store.remove_paths([f"/p/{i}.jpg" for i in range(300)])
    assert store.index.maintain() is None  # 300 / 1700 below the 20% limit
    store.remove_paths([f"/p/{i}.jpg" for i in range(300, 700)])
    spec = store.index.maintain()
    assert spec is not None and spec.kind == "hnsw"
    assert store.index.count == 1300
    store.close()


def test_cli_index_type_reindex_and_info(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from click.testing import CliRunner

    from search.cli import cli
    from tests.helpers import TINY_NETWORK, write_collection

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), *args],
                                  catch_exceptions=False)  # fmt: skip

    write_collection(tmp_path / "photos")
    model = ("--model", TINY_NETWORK, "--weights", str(tiny_checkpoint), "--workers", "0")
    first = run("index", str(tmp_path / "photos"), *model, "--index-type", "hnsw")
    assert first.exit_code == 0, first.output
    assert "index is now IDMap2,HNSW32,Flat" in first.stderr
    info = json.loads(run("info", "--json").stdout)
    assert (info["index_type"], info["index_choice"]) == ("IDMap2,HNSW32,Flat", "hnsw")
    assert info["index_recall"] >= 0.95
    other = run("index", str(tmp_path / "photos"), *model, "--index-type", "ivf")
    assert other.exit_code == 2 and "--index-type ivf: " in other.stderr
    assert "imgsearch reindex" in other.stderr
    again = json.loads(run("reindex", "--index-type", "flat", "--json").stdout)
    assert (again["index_type"], again["count"]) == ("IDMap2,Flat", 5)
    assert run("reindex", "--max-index-memory", "lots").exit_code == 2
    answer = json.loads(run("query", "--id", "1", "--json").stdout)
    assert len(answer["results"]) == 4
