"""Run a backbone on batches: device and precision resolved once, L2-normalised float32 out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from indexer.backbones import Backbone
from indexer.errors import InvalidOption
from indexer.options import PRECISIONS
from store import Tag, Vectors

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; anything else is taken as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidOption(
            f"--device {name}: not a device (auto, cpu, cuda, cuda:N, mps)"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOption(f"--device {name}: CUDA is not available on this machine")
    return device


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """AMX or AVX-512 BF16 (Linux flags). Without them bf16 is emulated and slower than fp32."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if precision == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if native else torch.float32
    if precision not in _DTYPES:
        raise InvalidOption(
            f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    return _DTYPES[precision]


def precision_name(dtype: torch.dtype) -> str:
    return next(name for name, d in _DTYPES.items() if d == dtype)


CPU_BATCH_SIZE = 16  # measured: larger CPU batches give no more images/s, only more latency
MAX_PROBE_BATCH = 256


def largest_fitting_batch(try_batch: Callable[[int], None], start: int = MAX_PROBE_BATCH) -> int:
    """The largest power of two <= start for which `try_batch` does not run out of memory."""
    batch = start
    while batch > 1:
        try:
            try_batch(batch)
            return batch
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch //= 2
    return 1


def auto_batch_size(embedder: Embedder) -> int:
    """A batch that fills the device: probed on CUDA, a measured constant on CPU."""
    if embedder.device.type != "cuda":
        return CPU_BATCH_SIZE
    height, width = embedder.backbone.prep.size

    def try_batch(batch: int) -> None:
        embedder(torch.zeros(batch, 3, height, width))
        torch.cuda.synchronize(embedder.device)

    return largest_fitting_batch(try_batch)


TOP_TAGS = 5  # classes kept per image for models with a named head


class Embedder:
    """Callable: (B, 3, H, W) float32 pixels on any device -> (B, D) unit-norm float32 numpy."""

    def __init__(self, backbone: Backbone, device: torch.device, dtype: torch.dtype) -> None:
        self.backbone = backbone
        self.device = device
        self.dtype = dtype

    @property
    def tags(self) -> bool:
        """Whether the backbone has a classification head with named classes."""
        return self.backbone.classify is not None and bool(self.backbone.labels)

    def __call__(self, pixels: torch.Tensor) -> Vectors:
        return self.run(pixels)[0]

    def run(self, pixels: torch.Tensor, top: int = 0) -> tuple[Vectors, list[tuple[Tag, ...]]]:
        """Unit embeddings, and each image's `top` classes when the backbone has a head."""
        if len(pixels) == 0:
            return np.zeros((0, self.backbone.dim), dtype=np.float32), []
        non_blocking = self.device.type == "cuda" and pixels.is_pinned()
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        classify = self.backbone.classify if top and self.tags else None
        with torch.inference_mode(), autocast:
            features = self.backbone.embed(pixels.to(self.device, non_blocking=non_blocking))
            logits = classify(features) if classify else None
            # Normalise in float32 whatever the compute precision was.
            unit = torch.nn.functional.normalize(features.float(), dim=1)
        found: list[tuple[Tag, ...]] = [()] * len(pixels)
        if logits is not None:
            probs = logits.float().softmax(dim=1)
            scores, indices = probs.topk(min(top, probs.shape[1]), dim=1)
            labels = self.backbone.labels
            found = [
                tuple(Tag(labels[i], s) for i, s in zip(row_i, row_s, strict=True))
                for row_i, row_s in zip(indices.tolist(), scores.tolist(), strict=True)
            ]
        return unit.cpu().numpy(), found
