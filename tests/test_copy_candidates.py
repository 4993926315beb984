"""Copy detection's first stage: normalised scores against a brute-force oracle, the views
that matched, candidates through cells, and how a collection's size sets what a score alone
accepts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from indexer.models import (
    FALLBACK_ACCEPT,
    LARGE_COLLECTION,
    SMALL_COLLECTION,
    copy_thresholds,
    find_card,
)
from indexer.options import DEFAULT_MODEL
from search.copies.candidates import BETA, Descriptors, find_candidates


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def at_cosine(base: np.ndarray, cosine: float, rng: np.random.RandomState) -> np.ndarray:
    other = rng.randn(len(base)).astype(np.float32)
    orthogonal = unit(other - (other @ base) * base)
    return unit(cosine * base + np.sqrt(1 - cosine**2) * orthogonal)


def test_a_pair_in_a_crowd_scores_lower_than_a_closer_pair_alone() -> None:
    """Score normalisation: among look-alikes two images must be much closer to count."""
    rng = np.random.RandomState(0)
    dim = 48
    centre = unit(rng.randn(dim))
    crowd = np.stack([at_cosine(centre, 0.95, rng) for _ in range(30)])  # look-alikes
    others = unit(rng.randn(40, dim))  # everything else: unrelated
    lonely = at_cosine(others[0], 0.85, rng)  # a copy of one of them, at cosine 0.85
    vectors = np.concatenate([crowd, others, lonely[None]])
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    found = find_candidates(Descriptors(ids, vectors))
    pairs = found.pairs.tolist()
    crowd_rows = [m for m, (a, b) in enumerate(pairs) if a < 30 and b < 30]
    best_crowd = max(crowd_rows, key=lambda m: found.cosine[m])
    copy = pairs.index([30, len(vectors) - 1])
    assert found.cosine[best_crowd] > found.cosine[copy]  # the look-alikes are closer ...
    assert found.score[copy] > found.score[best_crowd]  # ... but the copy scores higher
    assert 0 < BETA <= 1


def test_candidates_name_the_view_that_matched() -> None:
    """A crop's whole matches a view of its source: the pair records which image holds it,
    and in which region, as decide needs to check it there."""
    rng = np.random.RandomState(3)
    dim, n = 32, 40
    vectors = unit(rng.randn(n, dim))
    views = unit(rng.randn(n, 5, dim))
    views[7, 3] = vectors[21]  # image 21 is region 3 of image 7 (7 holds 21: a < b)
    views[30, 1] = vectors[12]  # image 12 is region 1 of image 30 (b holds a)
    found = find_candidates(Descriptors(np.arange(1, n + 1), vectors, views))
    rows = {(int(a), int(b)): m for m, (a, b) in enumerate(found.pairs)}
    assert found.region[rows[(7, 21)]] == -(3 + 1)  # a (7) holds b's whole in its region 3
    assert found.region[rows[(12, 30)]] == 1 + 1  # b (30) holds a's whole in its region 1
    assert found.view_score[rows[(7, 21)]] > 0.5
    unrelated = [m for (a, b), m in rows.items() if {a, b} not in ({7, 21}, {12, 30})]
    assert all(found.view_score[m] < found.view_score[rows[(7, 21)]] for m in unrelated)


def _planted(vectors: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Views of each image (its regions: like it, not the same), and for every 7th image a
    view that is the whole of another image (a crop of that image): (views, cropped)."""
    n, dim = vectors.shape
    views = unit(vectors[:, None, :] + 1.2 * unit(rng.randn(n, 5, dim)))
    cropped = rng.permutation(n)[: len(views[::7])]
    views[::7, 2] = vectors[cropped]
    return views.astype(np.float16), cropped


def _exact(vectors: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, ...]:
    """Brute force: centred wholes, each image's density, and each pair's best copy score
    whole against view (either way)."""
    from search.copies.candidates import DENSITY_K, centred

    mean = vectors.mean(axis=0)
    wholes, flat = centred(vectors, mean), centred(views, mean)
    scores = wholes @ wholes.T
    np.fill_diagonal(scores, -np.inf)
    density = -np.partition(-scores, DENSITY_K - 1, axis=1)[:, DENSITY_K - 1]
    view = wholes @ flat[:, 0].T  # whole i against region 0 of j, then the best region
    for region in range(1, flat.shape[1]):
        np.maximum(view, wholes @ flat[:, region].T, out=view)
    view -= BETA * (density[:, None] + density[None, :]) / 2
    np.fill_diagonal(view, -np.inf)
    return wholes, density, np.maximum(view, view.T)


def test_candidates_are_exact_on_a_small_collection() -> None:
    """Below the exact size, every candidate's scores are the brute-force ones, and every
    whole-against-view pair that reaches VIEW_REJECT is found with its best view score.
    Unrelated photos with planted copies and crops: a few view pairs per image."""
    from search.copies.candidates import VIEW_REJECT, VIEWS

    rng = np.random.RandomState(11)
    n, dim = 300, 128
    vectors = unit(rng.randn(n, dim))
    vectors[1::5] = unit(vectors[::5] + 0.4 * unit(rng.randn(n // 5, dim)))  # near copies
    views, _ = _planted(vectors, rng)
    found = find_candidates(Descriptors(np.arange(n) + 1, vectors, views))
    wholes, density, best = _exact(vectors, views)
    a, b = found.pairs[:, 0], found.pairs[:, 1]
    assert np.allclose(found.cosine, np.einsum("md,md->m", vectors[a], vectors[b]), atol=1e-5)
    centred_cosine = np.einsum("md,md->m", wholes[a], wholes[b])
    assert np.allclose(found.score, centred_cosine - BETA * (density[a] + density[b]) / 2,
                       atol=1e-4)  # fmt: skip
    by_views = (found.found_by & VIEWS) > 0
    assert np.allclose(found.view_score[by_views], best[a, b][by_views], atol=1e-3)
    wanted = set(zip(*np.nonzero(np.triu(best >= VIEW_REJECT)), strict=True))
    assert n // 7 <= len(wanted) <= 5 * n
    assert wanted <= set(zip(a[by_views], b[by_views], strict=True))


def _copies_with_views(seed: int, spread: float) -> tuple[np.ndarray, ...]:
    """(ids, vectors, views) of 400 images, every 4th with a near copy `spread` away, and
    planted crops among the views."""
    rng = np.random.RandomState(seed)
    n, dim = 400, 64
    vectors = unit(rng.randn(n, dim))
    vectors[1::4] = unit(vectors[::4] + spread * unit(rng.randn(n // 4, dim)))
    views, _ = _planted(vectors, rng)
    return np.arange(n) + 1, vectors, views


def test_centring_in_place_finds_the_same_candidates_without_a_copy() -> None:
    """`in_place` (what dupes asks: it reads the vectors no more) spends the caller's array on
    the centred vectors, and finds the very same pairs with the same scores; the raw cosines,
    rebuilt from the centred vectors, still equal the stored vectors' dot products."""
    from search.copies.candidates import centred

    ids, vectors, views = _copies_with_views(seed=13, spread=0.3)
    kept = find_candidates(Descriptors(ids, vectors.copy(), views))
    spent = vectors.copy()
    found = find_candidates(Descriptors(ids, spent, views, in_place=True))
    assert np.array_equal(found.pairs, kept.pairs)
    assert np.array_equal(found.found_by, kept.found_by)
    for column in ("cosine", "score", "view_score"):
        assert np.allclose(getattr(found, column), getattr(kept, column), atol=1e-5)
    a, b = found.pairs[:, 0], found.pairs[:, 1]
    assert np.allclose(found.cosine, np.einsum("md,md->m", vectors[a], vectors[b]), atol=1e-5)
    assert np.allclose(spent, centred(vectors, vectors.mean(axis=0)), atol=1e-6)


def test_a_score_floor_leaves_out_only_the_pairs_stage_two_drops() -> None:
    """With the card's reject score as a floor, the candidates are exactly those of a run
    without it whose global score reaches the floor or that a view found above VIEW_REJECT,
    with the same scores: the pairs decide would drop are never kept."""
    from search.copies.candidates import VIEW_REJECT

    ids, vectors, views = _copies_with_views(seed=14, spread=0.5)
    every = find_candidates(Descriptors(ids, vectors, views))
    floored = find_candidates(Descriptors(ids, vectors, views), score_floor=0.3)
    wanted = (every.score >= 0.3) | (every.view_score >= VIEW_REJECT)
    assert 0 < wanted.sum() < 0.8 * len(wanted)  # the floor leaves out some, not all
    assert np.array_equal(floored.pairs, every.pairs[wanted])
    for column in ("cosine", "score", "view_score", "region"):
        assert np.array_equal(getattr(floored, column), getattr(every, column)[wanted])
    assert floored.recall == every.recall  # the audit is of the neighbour lists, not the floor


def test_candidates_through_cells_find_the_crops() -> None:
    """Above the exact size (k-means cells), scores are never below the exact ones (an image's
    DENSITY_K-th neighbour is then the best of fewer), and planted crops are found through
    their views."""
    from search.copies.candidates import VIEWS
    from tests.helpers import clustered_with_duplicates

    rng = np.random.RandomState(12)
    n = 9000
    vectors = clustered_with_duplicates(n, dim=64, seed=4)
    views, cropped = _planted(vectors, rng)
    found = find_candidates(Descriptors(np.arange(n) + 1, vectors, views))
    wholes, density, best = _exact(vectors, views)
    a, b = found.pairs[:, 0], found.pairs[:, 1]
    exact = np.einsum("md,md->m", wholes[a], wholes[b]) - BETA * (density[a] + density[b]) / 2
    assert np.all(found.score >= exact - 1e-4)
    rows = {(int(x), int(y)): m for m, (x, y) in enumerate(found.pairs)}
    crops = [(min(i, j), max(i, j)) for i, j in zip(cropped, range(0, n, 7), strict=True) if i != j]
    hits = [rows.get(pair) for pair in crops]
    assert sum(m is not None and found.found_by[m] & VIEWS > 0 for m in hits) >= 0.99 * len(crops)
    assert all(found.view_score[m] >= best[pair] - 1e-3
               for pair, m in zip(crops, hits, strict=True) if m is not None)  # fmt: skip


def test_the_score_that_accepts_alone_eases_from_small_to_large_collections() -> None:
    card = copy_thresholds(find_card(DEFAULT_MODEL))
    sizes = [1, SMALL_COLLECTION, 150, 250, LARGE_COLLECTION, 10**6]
    accepts = [card.accept_in(n) for n in sizes]
    assert accepts[0] == accepts[1] == pytest.approx(card.small_accept)
    assert accepts[-2] == accepts[-1] == pytest.approx(card.accept)
    assert all(a > b for a, b in itertools.pairwise(accepts[1:5]))
    plain = copy_thresholds(None)  # uncalibrated: one fallback for every size
    assert plain.accept_in(10) == plain.accept_in(10**6) == FALLBACK_ACCEPT


def test_a_density_floor_keeps_a_small_collection_from_inflating_scores() -> None:
    """In a small collection every image's 20th neighbour is far, so every score runs high;
    the card's floor gives each image at least that density (exactly, against brute force)."""
    rng = np.random.RandomState(5)
    vectors = unit(rng.randn(40, 64))
    vectors[1] = at_cosine(vectors[0], 0.7, rng)  # two look-alikes, not copies
    ids = np.arange(1, 41)
    plain = find_candidates(Descriptors(ids, vectors))
    floored = find_candidates(Descriptors(ids, vectors), density_floor=0.5)
    _, density, _ = _exact(vectors, unit(vectors[:, None, :].repeat(5, axis=1)))
    a, b = floored.pairs[:, 0], floored.pairs[:, 1]
    raised = np.maximum(density, 0.5)
    lowered = plain.score - BETA * ((raised[a] - density[a]) + (raised[b] - density[b])) / 2
    assert np.allclose(floored.score, lowered, atol=1e-5)
    pair = plain.pairs.tolist().index([0, 1])
    card = copy_thresholds(find_card(DEFAULT_MODEL))
    assert plain.score[pair] >= card.accept > floored.score[pair]
    assert card.calibrated and 0 < card.density_floor < card.accept


def test_every_run_audits_its_candidate_recall_against_exact_search() -> None:
    """The audit finds the neighbours again by exact search on a sample: a join that found them
    all measures 1.0, one that lost half of each list measures 0.5."""
    from search.copies.candidates import NEIGHBOURS, audit

    rng = np.random.RandomState(4)
    unit = rng.randn(3000, 16).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    exact = np.argsort(-scores, axis=1)[:, :NEIGHBOURS]
    assert audit(unit, exact, chunk=700) == 1.0  # blocks that do not divide n
    half = exact.copy()
    half[:, NEIGHBOURS // 2 :] = -1
    assert audit(unit, half) == 0.5
