"""The torch runtime: device and precision resolved once, inference mode, autocast, and the
reference every other runtime is checked against."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from indexer.backbones import Backbone, load_backbone
from indexer.decode import Pixels
from indexer.embedder import Embeddings, describe_views, top_tags, unit_rows
from indexer.spec import ModelSpec
from store import InvalidOption

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BATCH_SIZE = 16  # measured: larger CPU batches give no more images/s, only more latency
MAX_PROBE_BATCH = 256


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; anything else is taken as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidOption(
            f"{name}: not a device (auto, cpu, cuda, cuda:N, mps)", field="device"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOption(f"{name}: CUDA is not available on this machine", field="device")
    return device


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on CUDA and fp32 on every CPU (indexer.runtime says why)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision not in _DTYPES:
        raise InvalidOption(
            f"must be one of auto, {', '.join(_DTYPES)}, got {precision!r}", field="precision"
        )
    return _DTYPES[precision]


def precision_name(dtype: torch.dtype) -> str:
    return next(name for name, d in _DTYPES.items() if d == dtype)


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


class TorchEmbedder:
    """A Backbone on a device at a precision; see indexer.embedder.Embedder."""

    runtime = "torch"

    def __init__(self, backbone: Backbone, device: torch.device, dtype: torch.dtype) -> None:
        self.backbone = backbone
        self.name, self.dim, self.prep = backbone.name, backbone.dim, backbone.prep
        self.labels = backbone.labels if backbone.classify is not None else ()
        self.torch_device = device
        self.device = str(device)
        self.dtype = dtype
        self.precision = precision_name(dtype)
        self._batch: int | None = None

    @property
    def default_batch(self) -> int:
        """A batch that fills the device: probed on CUDA, a measured constant on CPU."""
        if self._batch is None:
            self._batch = CPU_BATCH_SIZE
            if self.torch_device.type == "cuda":
                height, width = self.prep.size

                def try_batch(batch: int) -> None:
                    self.run(np.zeros((batch, 3, height, width), dtype=np.float32))
                    torch.cuda.synchronize(self.torch_device)

                self._batch = largest_fitting_batch(try_batch)
        return self._batch

    def run(self, pixels: Pixels | Any, top: int = 0, views: Pixels | None = None) -> Embeddings:
        """Unit descriptors, each image's `top` classes when the backbone has a head, and the
        descriptors of `views`. `pixels` may be a (pinned) torch tensor as well as numpy."""
        tensor = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(pixels)
        if len(tensor) == 0:
            return Embeddings(np.zeros((0, self.dim), dtype=np.float32), [])
        non_blocking = self.torch_device.type == "cuda" and tensor.is_pinned()
        autocast = (
            torch.autocast(self.torch_device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        classify = self.backbone.classify if top and self.labels else None
        with torch.inference_mode(), autocast:
            features = self.backbone.embed(tensor.to(self.torch_device, non_blocking=non_blocking))
            logits = classify(features) if classify else None
        vectors = unit_rows(features.float().cpu().numpy())
        found = None if logits is None else logits.float().cpu().numpy()
        described = describe_views(self.run, views)
        return Embeddings(vectors, top_tags(found, self.labels, top, len(vectors)), described)


def torch_embedder(spec: ModelSpec, labels: bool = False) -> TorchEmbedder:
    device = resolve_device(spec.compute.device)
    dtype = resolve_dtype(spec.compute.precision, device)
    return TorchEmbedder(load_backbone(spec, device, labels), device, dtype)
