"""The embedder contract, below the runtimes: what a loaded backbone takes and gives back, and
the steps every runtime shares (unit rows, top classes, regional views)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from indexer.decode import Pixels, Preprocess
from store import Tag, Vectors

TOP_TAGS = 5  # classes kept per image for models with a named head


@dataclass(frozen=True)
class Embeddings:
    """A batch's unit descriptors (B, D) float32, each image's top classes (or ()), and the
    unit descriptors of its regional views (B, R, D) when views were given."""

    vectors: Vectors
    tags: list[tuple[Tag, ...]]
    views: NDArray[np.float32] | None = None


class Embedder(Protocol):
    """A loaded backbone: pixels (B, 3, H, W) float32 in, unit descriptors out."""

    name: str
    dim: int
    prep: Preprocess
    labels: tuple[str, ...]  # the classes of a named head (empty: none)
    runtime: str  # "torch" or "onnx"
    device: str  # "cpu", "cuda:0", ...
    precision: str  # "fp32", "bf16", "fp16"

    @property
    def default_batch(self) -> int:
        """Images per forward pass that fill the device."""
        ...

    def run(self, pixels: Pixels, top: int = 0, views: Pixels | None = None) -> Embeddings:
        """`views`: (B, R, 3, h, w) regional views to describe as well."""
        ...


def unit_rows(features: NDArray[np.floating]) -> Vectors:
    """L2-normalised in float32, whatever the compute precision was."""
    rows = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.ascontiguousarray(rows / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)


def top_tags(
    logits: NDArray[np.floating] | None, labels: Sequence[str], top: int, count: int
) -> list[tuple[Tag, ...]]:
    """Each row's `top` classes by softmax probability (empty tuples without a head)."""
    if logits is None or not top or not labels:
        return [()] * count
    values = np.asarray(logits, dtype=np.float64)
    values = np.exp(values - values.max(axis=1, keepdims=True))
    probs = values / values.sum(axis=1, keepdims=True)
    best = np.argsort(-probs, axis=1, kind="stable")[:, : min(top, probs.shape[1])]
    return [
        tuple(Tag(labels[i], float(row[i])) for i in order)
        for row, order in zip(probs, best, strict=True)
    ]


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


def describe_views(
    run: Callable[[Pixels], Embeddings], views: Pixels | None
) -> NDArray[np.float32] | None:
    """Unit descriptors (B, R, D) of regional views (B, R, 3, h, w), run as one flat batch."""
    if views is None:
        return None
    flat = views.reshape(-1, *views.shape[2:])
    return run(flat).vectors.reshape(len(views), views.shape[1], -1)
