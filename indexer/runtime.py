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
from pathlib import Path

from indexer.embedder import Embedder
from indexer.options import Compute
from indexer.spec import ModelSpec
from store import InvalidOption

log = logging.getLogger("imgsearch.indexer")


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
