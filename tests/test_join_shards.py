"""The candidate join cut into shards of cells (search/copies/join.py) finds exactly what one
join finds, and a killed run picks up the shards it finished (without Ray: the same code runs
the shards in this process; tests/test_dupes_ray.py runs them as Ray tasks)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.copies import cellviews
from search.copies.candidates import Candidates, Descriptors, Engine, find_candidates
from search.copies.join import Shelf
from search.workers import LocalWorkers
from tests.helpers import RecordedSteps, clustered_with_duplicates

N, DIM, REGIONS = 12_000, 16, 2  # above the exact join's size with 2 views: k-means cells


def descriptors() -> Descriptors:
    vectors = clustered_with_duplicates(N, DIM)
    rng = np.random.RandomState(3)
    noise = rng.randn(N, REGIONS, DIM).astype(np.float32)
    views = vectors[:, None, :] + 0.9 * noise / np.linalg.norm(noise, axis=-1, keepdims=True)
    views /= np.linalg.norm(views, axis=-1, keepdims=True)
    return Descriptors(np.arange(1, N + 1, dtype=np.int64), vectors, views.astype(np.float16))


class Sharded(LocalWorkers):
    """This process, cut into `count` shards; records what it was given; stops (as a kill
    would) after `stop_after` shards when set."""

    def __init__(self, count: int, stop_after: int | None = None) -> None:
        self.count, self.stop_after = count, stop_after
        self.given: list[Any] = []

    def shards(self, cells: int) -> int:
        return self.count

    def map_with(
        self, fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any], spread: bool
    ) -> Iterator[tuple[int, Any]]:
        for n, item in enumerate(items):
            if self.stop_after is not None and len(self.given) >= self.stop_after:
                raise KeyboardInterrupt("killed")
            view = isinstance(item[0], tuple)  # (span, density): the view join's
            self.given.append(("views", item[0]) if view else ("nearest", item))
            yield n, fn(shared, item)


def as_rows(found: Candidates) -> dict[tuple[int, int], tuple[float, ...]]:
    ids = found.ids
    return {
        (int(ids[a]), int(ids[b])): (
            round(float(found.score[m]), 5),
            round(float(found.view_score[m]), 5),
            int(found.found_by[m]),
            int(found.region[m]),
        )
        for m, (a, b) in enumerate(found.pairs)
    }


@pytest.fixture(scope="module")
def whole() -> tuple[Descriptors, dict[tuple[int, int], tuple[float, ...]]]:
    found = descriptors()
    return found, as_rows(find_candidates(found))


def test_shards_of_cells_find_exactly_what_one_join_finds(
    whole: tuple[Descriptors, dict[tuple[int, int], tuple[float, ...]]],
) -> None:
    found, expected = whole
    workers, steps = Sharded(7), RecordedSteps()
    sharded = as_rows(find_candidates(found, engine=Engine(workers, steps=steps)))
    assert len(set(workers.given)) == 14  # seven spans of cells, each joined once per join
    assert steps.seen["finding candidate pairs"] == [14, 14]  # reported shard by shard
    assert len(expected) > N  # wholes and views: many pairs to compare
    assert sharded == expected
    views = sum(1 for row in expected.values() if int(row[2]) & 2)
    assert views > 0  # the view join took part


def test_views_placed_in_files_and_joined_a_piece_at_a_time_find_the_same(
    whole: tuple[Descriptors, dict[tuple[int, int], tuple[float, ...]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Views too many for memory are placed in their cells a chunk of images at a time,
    written as runs sorted by cell, and read back a few cells at a time: the very pairs."""
    found, expected = whole
    monkeypatch.setattr(cellviews, "IN_MEMORY_UP_TO", 0)  # every collection's views: files
    monkeypatch.setattr(cellviews, "VIEW_CHUNK", 1_000)  # 12 runs
    budget = 2_000 * REGIONS * DIM * 2  # about 2,000 images' views a piece
    monkeypatch.setattr(cellviews, "PIECE_BYTES", budget)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    read: list[tuple[int, int, int]] = []
    files: list[int] = []
    take = cellviews.CellViews.take

    def recorded(self: cellviews.CellViews, span: tuple[int, int]) -> Any:
        taken = take(self, span)
        read.append((*span, taken[2].nbytes))
        files.append(len(list(tmp_path.rglob("run-*"))))
        return taken

    monkeypatch.setattr(cellviews.CellViews, "take", recorded)
    workers = Sharded(2)
    assert as_rows(find_candidates(found, engine=Engine(workers))) == expected
    assert len(read) > 2  # the two shards' cells cut into more pieces
    assert all(size <= budget or last - first == 1 for first, last, size in read)
    assert sum(size for *_, size in read) == N * REGIONS * DIM * 2  # every view read once
    assert set(files) == {24}  # 12 runs of positions and views, on disk while joined
    assert not list(tmp_path.iterdir())  # and taken away after


def test_a_killed_join_resumes_with_the_shards_it_had_not_finished(
    whole: tuple[Descriptors, dict[tuple[int, int], tuple[float, ...]]], tmp_path: Path
) -> None:
    found, expected = whole
    killed = Sharded(6, stop_after=4)  # 4 of the 6 nearest-neighbour shards, then a kill
    with pytest.raises(KeyboardInterrupt):
        find_candidates(found, engine=Engine(killed, Shelf(tmp_path / "work", "run")))
    assert len(list((tmp_path / "work").rglob("nearest-*.npz"))) == 4
    resumed = Sharded(6)
    again = find_candidates(found, engine=Engine(resumed, Shelf(tmp_path / "work", "run")))
    nearest = [g for g in resumed.given if g[0] == "nearest"]
    assert len(nearest) == 2 and not set(nearest) & set(killed.given)  # only the two left
    assert as_rows(again) == expected
    # Another run's shelf (other vectors or options) is never read, and takes the stale one away.
    Shelf(tmp_path / "work", "another run")
    assert not list((tmp_path / "work").rglob("nearest-*.npz"))


def test_a_damaged_shard_on_the_shelf_is_joined_again(
    whole: tuple[Descriptors, dict[tuple[int, int], tuple[float, ...]]], tmp_path: Path
) -> None:
    found, expected = whole
    shelf = Shelf(tmp_path / "work", "run")
    find_candidates(found, engine=Engine(Sharded(3), shelf))
    for kept in (tmp_path / "work").rglob("*.npz"):
        kept.write_bytes(kept.read_bytes()[:100])  # torn
    again = Sharded(3)
    assert as_rows(find_candidates(found, engine=Engine(again, shelf))) == expected
    assert len(again.given) == 6  # every shard, nearest and views, joined again


_made: list[str] = []


def _size_of(path: str) -> int | None:
    """A recipe's maker for the test below: the file's size; a kill at the fifth file."""
    if len(_made) == 4:
        raise KeyboardInterrupt("killed")
    _made.append(path)
    return Path(path).stat().st_size


def test_what_a_killed_run_made_per_content_is_kept_a_part_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local features of a million files take hours: they are saved in the catalog a part at
    a time, so a killed `dupes` (either engine) makes only what it had not saved."""
    import search.per_content as per_content
    from store import Embedded, ImageFile, NewIndex, Store

    recipe = per_content.Recipe(
        "test-size", "sizing", 1, _size_of, lambda v: str(v).encode(), lambda b: int(b)
    )
    monkeypatch.setattr(per_content, "SAVE_EVERY", 2)
    files = []
    for n in range(7):
        (tmp_path / f"{n}.bin").write_bytes(b"x" * (n + 1))
        files.append(ImageFile(str(tmp_path / f"{n}.bin"), n + 1, 0, f"{n:032x}"))
    with Store.writer(tmp_path / "home", new=NewIndex("test-model", 4)) as store:
        store.commit_batch([Embedded(f, 8, 8, np.eye(4, dtype=np.float32)[0]) for f in files], [])
        records = list(store.catalog.file_states().values())
        _made.clear()
        with pytest.raises(KeyboardInterrupt):
            per_content.per_content(store, recipe, records)
        assert len(_made) == 4  # two parts of two, then the kill
        _made.clear()
        found, lost = per_content.per_content(store, recipe, records)
    assert not lost and sorted(found.values()) == [1, 2, 3, 4, 5, 6, 7]
    assert len(_made) == 3  # only the files whose part was not saved


def test_the_rows_reduced_in_parts_give_the_pairs_of_one_reduction(
    whole: tuple[Descriptors, dict[tuple[int, int], tuple[float, ...]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The candidate rows are reduced to one per pair a part at a time (memory): the very
    arrays, in the very order, that one reduction of every row gives."""
    from search.copies import candidates

    found, _ = whole
    assert candidates.REDUCE_PARTS > 1
    in_parts = find_candidates(found)
    monkeypatch.setattr(candidates, "REDUCE_PARTS", 1)
    at_once = find_candidates(found)
    assert len(at_once.pairs) > N
    for name in ("pairs", "cosine", "score", "view_score", "found_by", "region"):
        assert np.array_equal(getattr(in_parts, name), getattr(at_once, name)), name


def test_probes_grow_with_the_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past PROBES_GROW_FROM vectors each query probes more cells (store.probes_for), and the
    join's own recall audit shows what that buys."""
    from store import pairs

    assert [pairs.probes_for(n) for n in (1_000, 1_000_000, 3_000_000, 10_000_000)] == [4, 4, 8, 16]
    found = descriptors()
    few = find_candidates(found)
    monkeypatch.setattr(pairs, "PROBES_GROW_FROM", N // 4)  # N is now four times that: 8 probes
    more = find_candidates(found)
    assert few.recall < more.recall <= 1.0
