"""FAISS on a GPU: the CPU fallback here; the GPU path itself where faiss-gpu sees a GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from store import faiss_has_gpu
from store.gpu import gpu_for, products
from store.pairs import EXACT_LIMIT, similar_pairs
from tests.helpers import clustered_with_duplicates, self_nearest
from tests.test_index_types import DIM, fill, queries_near

needs_gpu = pytest.mark.skipif(not faiss_has_gpu(), reason="needs faiss-gpu and a CUDA GPU")


@pytest.mark.skipif(faiss_has_gpu(), reason="checks the fallback of a machine without a GPU")
def test_without_a_gpu_search_falls_back_to_the_cpu_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert gpu_for("auto") is None and gpu_for("cpu") is None and not caplog.records
    data = clustered_with_duplicates(800, DIM, seed=8)
    store = fill(tmp_path / "home", data)
    queries = queries_near(data, 10)
    before = store.index.search(queries, 5)
    store.index.use_device("auto")
    assert store.index.search(queries, 5) == before
    with caplog.at_level(logging.WARNING, logger="imgsearch.store"):
        store.index.use_device("cuda:0")
    assert "--device cuda:0: FAISS cannot use a GPU here" in caplog.text
    assert store.index.search(queries, 5) == before
    store.close()


def test_cpu_products_are_the_matrix_product() -> None:
    rng = np.random.RandomState(0)
    a, b = rng.randn(5, 8).astype(np.float32), rng.randn(7, 8).astype(np.float32)
    assert np.allclose(products(None)(a, b), a @ b.T, atol=1e-6)


@needs_gpu
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_search_matches_the_cpu(kind: str, tmp_path: Path) -> None:
    data = clustered_with_duplicates(6000, DIM, seed=9)
    store = fill(tmp_path / "home", data)
    store.index.reindex(kind)
    queries = queries_near(data, 50)
    cpu = [[h.id for h in row] for row in store.index.search(queries, 10)]
    store.index.use_device("cuda")
    gpu = [[h.id for h in row] for row in store.index.search(queries, 10)]
    agree = sum(len(set(c) & set(g)) for c, g in zip(cpu, gpu, strict=True)) / 500
    assert agree >= (0.999 if kind == "flat" else 0.95)
    store.close()


@needs_gpu
def test_gpu_self_join_and_nearest_match_the_cpu() -> None:
    """Above EXACT_LIMIT, so the k-means cells (trained on the GPU) are used."""
    n = EXACT_LIMIT + 5000
    vectors = clustered_with_duplicates(n, DIM, seed=10)
    ids = np.arange(1, n + 1, dtype=np.int64)
    gpu = gpu_for("cuda")
    cpu_pairs = {(a, b) for a, b, _ in similar_pairs(ids, vectors, 0.9)}
    gpu_pairs = {(a, b) for a, b, _ in similar_pairs(ids, vectors, 0.9, gpu=gpu)}
    assert len(cpu_pairs ^ gpu_pairs) <= 0.01 * max(1, len(cpu_pairs))
    cpu_near, _ = self_nearest(vectors[:2000], 5)
    gpu_near, _ = self_nearest(vectors[:2000], 5, gpu=gpu)
    assert (cpu_near == gpu_near).mean() >= 0.99
