"""The store alone: search against a numpy oracle, consistency of SQLite and FAISS."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from store import (
    CatalogDamaged,
    Embedded,
    Failure,
    ImageFile,
    IndexNotFound,
    InvalidOption,
    ItemNotFound,
    ModelMismatch,
    NewIndex,
    Store,
    Vectors,
)

DIM = 16


def unit(rng: np.random.RandomState, n: int, dim: int = DIM) -> Vectors:
    v = rng.randn(n, dim).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def embedded(i: int, vector: np.ndarray, content: str | None = None) -> Embedded:
    file = ImageFile(f"/photos/{i}.jpg", 100 + i, 1_000 + i, content or f"hash{i}")
    return Embedded(file, 640, 480, vector)


def filled(home: Path, n: int, seed: int = 1338) -> tuple[Store, dict[int, np.ndarray]]:
    """A store with n random vectors, committed in batches of 7; returns it and {id: vector}."""
    rng = np.random.RandomState(seed)
    data = unit(rng, n)
    store = Store.writer(home, new=NewIndex("test-model", DIM))
    for start in range(0, n, 7):
        store.commit_batch([embedded(i, data[i]) for i in range(start, min(n, start + 7))], [])
    by_id = {store.catalog.record_by_path(f"/photos/{i}.jpg").id: data[i] for i in range(n)}
    return store, by_id


def oracle(by_id: dict[int, np.ndarray], queries: Vectors, k: int) -> list[list[int]]:
    ids = np.array(sorted(by_id))
    matrix = np.stack([by_id[i] for i in ids])
    scores = queries @ matrix.T
    return [list(ids[np.argsort(-row, kind="stable")[:k]]) for row in scores]


def test_search_matches_numpy_bruteforce(home: Path) -> None:
    store, by_id = filled(home, 200)
    queries = unit(np.random.RandomState(7), 25)
    hits = store.index.search(queries, 10)
    assert [[h.id for h in row] for row in hits] == oracle(by_id, queries, 10)
    ids = np.array(sorted(by_id))
    expected = queries @ np.stack([by_id[i] for i in ids]).T
    for q, row in enumerate(hits):
        for hit in row:
            column = int(np.searchsorted(ids, hit.id))
            assert hit.score == pytest.approx(float(expected[q, column]), abs=1e-5)
        assert [h.score for h in row] == sorted((h.score for h in row), reverse=True)


def test_exclude_and_k_larger_than_index(home: Path) -> None:
    store, by_id = filled(home, 12)
    first = min(by_id)
    rows = store.index.search(by_id[first][None, :], 50, exclude=frozenset({first}))
    assert len(rows[0]) == 11
    assert first not in {h.id for h in rows[0]}
    assert [h.id for h in rows[0]] == [i for i in oracle(by_id, by_id[first][None, :], 12)[0]
                                       if i != first]  # fmt: skip


def test_reopen_uses_the_saved_file_and_finds_the_same(home: Path) -> None:
    store, _ = filled(home, 40)
    queries = unit(np.random.RandomState(3), 5)
    before = store.index.search(queries, 5)
    store.flush()
    store.close()
    files = list(home.glob("vectors.g*.faiss"))
    assert len(files) == 1
    with Store.open(home) as reopened:
        assert reopened.index.search(queries, 5) == before


@pytest.mark.parametrize("damage", ["missing", "truncated", "stale", "garbage"])
def test_damaged_faiss_file_is_rebuilt_with_a_notice(
    home: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store, by_id = filled(home, 30)
    store.flush()
    queries = unit(np.random.RandomState(5), 4)
    expected = oracle(by_id, queries, 5)
    (path,) = home.glob("vectors.g*.faiss")
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 100)
    else:  # a later commit that never reached the file, as after kill -9
        rng = np.random.RandomState(11)
        extra = unit(rng, 1)[0]
        store.commit_batch([embedded(99, extra)], [])
        by_id[store.catalog.record_by_path("/photos/99.jpg").id] = extra
        expected = oracle(by_id, queries, 5)
    store.close()
    with caplog.at_level(logging.WARNING, logger="imgsearch.store"), Store.open(home) as s:
        assert [[h.id for h in row] for row in s.index.search(queries, 5)] == expected
        assert s.index.count == s.catalog.count() == len(by_id)
    assert "rebuilt from the catalog" in caplog.text
    # The rebuilt file was saved: the next open needs no rebuild.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imgsearch.store"), Store.open(home) as s:
        assert s.index.count == len(by_id)
    assert caplog.text == ""


def test_update_keeps_id_and_replaces_vector(home: Path) -> None:
    store, by_id = filled(home, 10)
    record = store.catalog.record_by_path("/photos/3.jpg")
    new_vector = -by_id[record.id]
    store.commit_batch([embedded(3, new_vector, content="changed")], [])
    again = store.catalog.record_by_path("/photos/3.jpg")
    assert again.id == record.id and again.content_hash == "changed"
    assert np.allclose(store.catalog.vector(record.id), new_vector)
    top = store.index.search(new_vector[None, :], 1)[0][0]
    assert top.id == record.id and top.score == pytest.approx(1.0, abs=1e-5)
    assert store.index.count == store.catalog.count() == 10


def test_failure_of_an_indexed_file_removes_it_and_ids_are_never_reused(home: Path) -> None:
    store, by_id = filled(home, 5)
    highest = max(by_id)
    store.commit_batch([], [Failure(f"/photos/{4}.jpg", 1, 2, "truncated")])
    assert store.catalog.count() == store.index.count == 4
    assert set(store.catalog.failures()) == {"/photos/4.jpg"}
    with pytest.raises(ItemNotFound):
        store.catalog.vector(highest)
    store.commit_batch([embedded(50, by_id[highest])], [])
    assert store.catalog.record_by_path("/photos/50.jpg").id > highest  # AUTOINCREMENT
    # A file that succeeds later leaves the failures table.
    store.commit_batch([embedded(4, by_id[highest], content="fixed")], [])
    assert store.catalog.failures() == {}


def test_remove_paths(home: Path) -> None:
    store, _ = filled(home, 6)
    assert store.remove_paths(["/photos/1.jpg", "/photos/2.jpg", "/photos/none.jpg"]) == 2
    assert store.catalog.count() == store.index.count == 4
    assert "/photos/1.jpg" not in store.catalog.file_states()


def test_the_content_cache_leaves_with_the_last_file_of_its_content(home: Path) -> None:
    store, by_id = filled(home, 4)
    store.commit_batch([embedded(9, by_id[min(by_id)], content="hash0")], [])  # a byte copy
    made = {f"hash{i}": bytes([i]) for i in range(4)}
    assert store.caches.save_content_cache("look", made, version=1)
    store.remove_paths(["/photos/0.jpg", "/photos/1.jpg"])
    kept = store.caches.content_cached("look", sorted(made), version=1)
    assert kept == {"hash0": b"\x00", "hash2": b"\x02", "hash3": b"\x03"}  # hash0: 9.jpg
    # Changed in place: the old content's results go with it.
    store.commit_batch([embedded(2, by_id[min(by_id)], content="edited")], [])
    assert set(store.caches.content_cached("look", sorted(made), version=1)) == {"hash0", "hash3"}
    assert store.caches.content_cached("look", ["hash3"], version=2) == {}  # made by other code


def test_stored_vectors_by_content_hash(home: Path) -> None:
    store, by_id = filled(home, 4)
    record = store.catalog.record_by_path("/photos/2.jpg")
    found = store.catalog.stored_vectors(["hash2", "unknown"])
    assert set(found) == {"hash2"}
    assert np.allclose(found["hash2"].vector, by_id[record.id])
    assert (found["hash2"].width, found["hash2"].height) == (640, 480)


def test_views_come_back_as_stored_in_the_order_asked(home: Path) -> None:
    rng = np.random.RandomState(3)
    views = unit(rng, 5 * 3).reshape(5, 3, DIM)  # 3 views of each of 5 images
    store = Store.writer(home, new=NewIndex("test-model", DIM))
    rows = [Embedded(embedded(i, unit(rng, 1)[0]).file, 640, 480, unit(rng, 1)[0],
                     views=views[i]) for i in range(5)]  # fmt: skip
    store.commit_batch([*rows, embedded(9, unit(rng, 1)[0])], [])
    ids = [store.catalog.record_by_path(f"/photos/{i}.jpg").id for i in (4, 0, 2)]
    array = store.catalog.views_array(ids)
    assert array is not None and array.dtype == np.float16 and array.shape == (3, 3, DIM)
    one_by_one = store.catalog.views(ids)
    for position, image_id in enumerate(ids):
        assert np.array_equal(array[position].astype(np.float32), one_by_one[image_id])
        assert np.allclose(one_by_one[image_id], views[[4, 0, 2][position]], atol=1e-3)
    # One image without views: no array (the view join needs every image's).
    without = store.catalog.record_by_path("/photos/9.jpg").id
    assert store.catalog.views_array([*ids, without]) is None
    assert store.catalog.views_array([]) is None
    assert store.catalog.views_shape([*ids, without]) is None
    # Read a chunk at a time (the candidate stage never holds them all): the same rows.
    shape = store.catalog.views_shape(ids)
    assert shape == (3, DIM)
    chunks = list(store.catalog.views_chunks(ids, shape, size=2))
    assert [len(c) for c in chunks] == [2, 1]
    assert np.array_equal(np.concatenate(chunks), array)
    with pytest.raises(CatalogDamaged, match=str(without)):  # it has no views to give
        list(store.catalog.views_chunks([*ids, without], shape, size=2))
    store.close()


def test_open_without_index_and_model_mismatch(home: Path) -> None:
    with pytest.raises(IndexNotFound):
        Store.open(home)
    Store.writer(home, new=NewIndex("model-a", DIM)).close()
    with pytest.raises(ModelMismatch, match="model-a"):
        Store.writer(home, new=NewIndex("model-b", DIM))
    with pytest.raises(ModelMismatch):
        Store.writer(home, new=NewIndex("model-a", DIM * 2))
    with Store.open(home) as store:
        assert store.meta.index_factory == "IDMap2,Flat"
        assert store.meta.metric == "cosine"


def test_search_rejects_wrong_dimension(home: Path) -> None:
    store, _ = filled(home, 3)
    with pytest.raises(InvalidOption, match="must be"):
        store.index.search(np.zeros((1, DIM + 1), dtype=np.float32), 1)


def test_a_catalog_whose_creation_was_interrupted(home: Path) -> None:
    home.mkdir()
    (home / "catalog.sqlite").write_bytes(b"")  # killed right after the file appeared
    with pytest.raises(IndexNotFound, match="not an imgsearch index"):
        Store.open(home)
    with Store.writer(home, new=NewIndex("m", DIM)) as store:  # the next index run completes it
        assert store.catalog.count() == 0 and store.meta.model == "m"
