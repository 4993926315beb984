"""The similarity self-join against exact brute force."""

from __future__ import annotations

import numpy as np

from store import pairs
from tests.helpers import clustered_with_duplicates, self_nearest


def brute_force(vectors: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    """Every pair above threshold, one block of 2,000 rows against all rows at a time."""
    found = {}
    for start in range(0, len(vectors), 2000):
        scores = vectors[start : start + 2000] @ vectors.T
        for r, c in zip(*np.nonzero(scores >= threshold), strict=True):
            if c > start + r:
                found[(int(start + r), int(c))] = float(scores[r, c])
    return found


def test_exact_join_matches_brute_force() -> None:
    vectors = clustered_with_duplicates(3000, dim=64)
    ids = np.arange(3000, dtype=np.int64) * 7 + 5  # ids are not positions
    expected = brute_force(vectors, 0.9)
    found = pairs.similar_pairs(ids, vectors, 0.9)
    assert len(expected) > 500
    assert {((a - 5) // 7, (b - 5) // 7): s for a, b, s in found}.keys() == expected.keys()
    assert all(a < b for a, b, _ in found)


def test_celled_join_recall_and_exact_scores() -> None:
    n = pairs.EXACT_LIMIT + 10_000  # large enough for the k-means cells
    vectors = clustered_with_duplicates(n, dim=96)
    ids = np.arange(n, dtype=np.int64)
    expected = brute_force(vectors, 0.9)
    found = {(a, b): s for a, b, s in pairs.similar_pairs(ids, vectors, 0.9)}
    assert len(found) == len(pairs.similar_pairs(ids, vectors, 0.9))  # each pair once
    assert found.keys() <= expected.keys()  # precision 1: only true pairs
    recall = len(found) / len(expected)
    assert recall >= 0.99, recall
    for key, score in list(found.items())[:1000]:
        assert abs(score - expected[key]) < 1e-5


def test_nearest_pads_rows_with_fewer_others_than_asked() -> None:
    """k above the set's size: each row's others, best first, then -1 ids at -inf scores."""
    rng = np.random.RandomState(3)
    vectors = rng.randn(6, 16).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    near, scores = self_nearest(vectors, 8)
    expected = vectors @ vectors.T
    np.fill_diagonal(expected, -np.inf)
    order = np.argsort(-expected, axis=1)[:, :5]
    assert (near[:, :5] == order).all()
    assert np.allclose(scores[:, :5], np.take_along_axis(expected, order, axis=1))
    assert (near[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()


def test_probing_finds_exactly_the_nearest_in_the_probed_cells() -> None:
    """Each cell's finds are merged into the running best: probing every cell is exact search,
    and probing a few gives the exact nearest among the rows of those cells, best first."""
    vectors = clustered_with_duplicates(3000, dim=32)
    cells = pairs.cells_of(vectors, exact_up_to=100)
    assert cells.count > 20
    exact = vectors @ vectors.T
    np.fill_diagonal(exact, -np.inf)
    for probes in (3, cells.count):
        probed = cells.nearest(vectors, probes)
        near, scores = pairs.nearest_in(vectors, vectors, 10, cells, probed, same=True)
        reachable = (probed[:, :, None] == cells.home[None, None, :]).any(axis=1)
        expected = np.where(reachable, exact, -np.inf)
        order = np.argsort(-expected, axis=1, kind="stable")[:, :10]
        best = np.take_along_axis(expected, order, axis=1)
        assert np.allclose(scores, best, atol=1e-5)
        # the rows found are the expected ones up to ties in score
        assert np.allclose(np.take_along_axis(exact, near, axis=1), best, atol=1e-5)
