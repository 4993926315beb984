"""Running a backbone: one embed call over two runtimes, torch (the reference, CUDA) and
ONNX Runtime (the CPU). Torch-free: a query with a cached ONNX export never imports torch.

`auto` picks ONNX Runtime on a CPU and torch on a GPU. Measured on this project's 2-core CPUs
(bench/RESULTS.md), ONNX Runtime fp32 runs EfficientNet-Lite0 about 2.5x and a ViT-S/16 about
2.3x faster than torch eager fp32, with the same embeddings (cosine >= 0.9999).

Precision `auto` is fp32 on a CPU, whatever the runtime: bf16 moves embeddings by about 1 %,
enough to move pairs across the calibrated copy thresholds, and that change was not measured to
be harmless (this project's CPUs have no native bf16 to measure it on). bf16 stays on CUDA.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from indexer.decode import Pixels, Preprocess
from indexer.options import Compute
from indexer.spec import ModelSpec
from store import InvalidOption, Tag, Vectors

log = logging.getLogger("imgsearch.indexer")
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


def has_cuda_driver() -> bool:
    """Whether an NVIDIA driver is loaded (Linux), without importing torch."""
    return Path("/proc/driver/nvidia/version").exists()


def resolve_runtime(compute: Compute) -> str:
    """torch or onnx, for what `compute` asks (its values were checked when it was made)."""
    on_cpu = compute.device == "cpu" or (compute.device == "auto" and not has_cuda_driver())
    if compute.runtime == "onnx":
        if not on_cpu:
            raise InvalidOption(
                "onnx runs on the CPU here: use device cpu, or runtime torch for a GPU",
                field="runtime",
            )
        if compute.precision not in ("auto", "fp32"):
            raise InvalidOption(
                f"{compute.precision}: the onnx runtime runs fp32 (use runtime "
                "torch for bf16 or fp16)",
                field="precision",
            )
        return "onnx"
    if compute.runtime == "torch":
        return "torch"
    return "onnx" if on_cpu and compute.precision in ("auto", "fp32") else "torch"


def resolved_precision(compute: Compute) -> str:
    """What precision `compute` runs at, as `index` reports it (before any model is loaded)."""
    if compute.precision != "auto":
        return compute.precision
    if resolve_runtime(compute) == "onnx":
        return "fp32"
    on_gpu = compute.device.startswith("cuda") or (compute.device == "auto" and has_cuda_driver())
    return "bf16" if on_gpu else "fp32"


def load_embedder(spec: ModelSpec, labels: bool = False) -> Embedder:
    """The backbone of `spec` on the runtime it resolves to. `labels`: the default model's
    class names too (for tags), which costs a torchvision import on the torch path only.

    ONNX Runtime uses a cached export when there is one (no torch at all); otherwise the model
    is loaded with torch and exported once. A network that does not export runs with torch,
    with a one-line notice.
    """
    runtime = resolve_runtime(spec.compute)
    if runtime == "onnx":
        from indexer.onnx_runtime import cached_embedder

        cached = cached_embedder(spec)
        if cached is not None:
            return cached
        from indexer.onnx_export import ExportFailed, export_embedder

        try:
            return export_embedder(spec)
        except ExportFailed as exc:
            log.warning(
                "%s does not run on ONNX Runtime (%s): running it with torch", spec.name, exc
            )
    from indexer.torch_runtime import torch_embedder

    return torch_embedder(spec, labels)


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
