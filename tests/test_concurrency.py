"""A query while `index` runs gets a consistent answer; a second `index` on the home is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer.options import IndexOptions
from indexer.pipeline import index_folders
from search.query import QueryOptions, by_id
from store import IndexBusy, Store
from tests.helpers import shapes
from tests.subprocs import committed, start_index, wait_for

N_IMAGES = 60


@pytest.mark.slow
def test_queries_and_a_second_writer_during_an_index_run(
    tmp_path: Path, tiny_checkpoint: Path, tiny_options: IndexOptions
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(N_IMAGES):
        shapes(i).save(folder / f"{i:03}.png")
    home = tmp_path / "home"
    process = start_index(home, folder, tiny_checkpoint)
    wait_for(process, home, at_least=4)
    assert process.poll() is None, "the run ended too early to test anything"

    with pytest.raises(IndexBusy, match="another imgsearch command is writing"):
        index_folders(home, [str(folder)], tiny_options)

    answered = 0
    while process.poll() is None:
        first = min(committed(home).values())
        with Store.open(home) as store:
            result = by_id(store, first, QueryOptions(k=5, verify=False))  # the index alone
            query = store.catalog.vector(first)
            scores = [m.score for m in result.matches]
            assert scores == sorted(scores, reverse=True)
            assert first not in [m.record.id for m in result.matches]
            for match in result.matches:  # scores are those of the stored vectors
                assert match.score == pytest.approx(
                    float(query @ store.catalog.vector(match.record.id)), abs=1e-5
                )
        answered += 1
    assert answered >= 3
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["added"] == N_IMAGES
    with Store.open(home) as store:
        assert store.index.count == store.catalog.count() == N_IMAGES
        vectors = np.stack([store.catalog.vector(i) for i in committed(home).values()])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
