"""Exporting a backbone to ONNX once, into the user cache dir (indexer/onnx_runtime.py).

The export traces the very module the torch runtime runs (`Backbone.exportable`), with a dynamic
batch axis, and is accepted only if ONNX Runtime then reproduces torch fp32 on a probe batch
(cosine >= PARITY); otherwise the caller runs the network with torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings

import numpy as np
import torch

from indexer.backbones import Backbone, load_backbone
from indexer.notices import notice
from indexer.onnx_runtime import (
    ExportRecord,
    OnnxEmbedder,
    export_dir,
    export_key,
    sha256_of,
    write_record,
)
from indexer.spec import ModelSpec
from store import ImgsearchError, atomic_path

log = logging.getLogger("imgsearch.indexer")
PARITY = 0.9999  # minimum cosine between torch fp32 and ONNX Runtime on the probe batch
OPSET = 17


class ExportFailed(ImgsearchError):
    """A network that torch.onnx cannot export, or whose export does not match torch."""


def export_embedder(spec: ModelSpec) -> OnnxEmbedder:
    """Load `spec` with torch on the CPU, export it, check it, cache it; the ONNX embedder."""
    backbone = load_backbone(spec, torch.device("cpu"), labels=True)
    key = export_key(spec)  # after loading: a card's weights may just have been downloaded
    if key is None:
        raise ExportFailed("its weights file is not known")
    target = export_dir() / f"{key}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    notice(log, "exporting %s to ONNX once, for fast CPU inference (%s)", spec.name, target)
    probe, reference = _reference(backbone)  # before _export makes its layers exportable
    try:
        with atomic_path(target) as tmp:
            _export(backbone, tmp)
            record = ExportRecord(
                key,
                backbone.name,
                backbone.dim,
                backbone.prep.size,
                backbone.prep.mean,
                backbone.prep.std,
                backbone.labels,
                tmp.stat().st_size,
                backbone.prep.view_size,
                sha256_of(tmp),
            )
            embedder = OnnxEmbedder(tmp, record)
            _check_parity(backbone, embedder, probe, reference)
        write_record(record)
    except ExportFailed:
        raise
    except Exception as exc:  # torch.onnx and ONNX Runtime raise many types
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ExportFailed(reason) from exc
    return OnnxEmbedder(target, record)


class _DecomposedRMSNorm(torch.nn.Module):
    """torch.nn.RMSNorm in elementary operations: the TorchScript exporter has no
    `aten::rms_norm` at the opsets it writes (the CAPI SoViT models use it)."""

    def __init__(self, norm: torch.nn.RMSNorm) -> None:
        super().__init__()
        self.shape = tuple(norm.normalized_shape)
        self.eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
        self.weight = norm.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(self.shape), 0))
        normed = x * torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + self.eps)
        return normed * self.weight if self.weight is not None else normed


def _exportable_layers(module: torch.nn.Module) -> None:
    """Replace layers the exporter cannot write with equivalent ones (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.RMSNorm):
            setattr(module, name, _DecomposedRMSNorm(child))
        else:
            _exportable_layers(child)


def _export(backbone: Backbone, path: os.PathLike[str]) -> None:
    _exportable_layers(backbone.module)  # this backbone was loaded for the export alone
    module = backbone.exportable().eval()
    height, width = backbone.prep.size
    probe = torch.zeros(2, 3, height, width)
    outputs = ["embedding", "logits"] if backbone.labels else ["embedding"]
    dynamic = {0: "batch", 2: "height", 3: "width"} if backbone.prep.view_size else {0: "batch"}
    axes = {"pixels": dynamic, **{name: {0: "batch"} for name in outputs}}
    # The tracer warns about every Python-level branch it freezes, on stderr and stdout.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                module,
                (probe,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=["pixels"],
                output_names=outputs,
                dynamic_axes=axes,
            )


def _reference(backbone: Backbone) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Probe batches (the input size, and the views' size) and torch fp32's unit vectors."""
    height, width = backbone.prep.size
    sizes = [(height, width)] + ([backbone.prep.view_size] if backbone.prep.view_size else [])
    rng = np.random.RandomState(0)
    probes = [rng.randn(3, 3, h, w).astype(np.float32) for h, w in sizes]
    expected = []
    for probe in probes:
        with torch.inference_mode():
            vectors = backbone.embed(torch.from_numpy(probe)).float().numpy()
        expected.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return probes, expected


def _check_parity(
    backbone: Backbone, embedder: OnnxEmbedder, probes: list[np.ndarray], expected: list[np.ndarray]
) -> None:
    cosine = min(
        float((e * embedder.run(p).vectors).sum(axis=1).min())
        for p, e in zip(probes, expected, strict=True)
    )
    if not cosine >= PARITY:
        raise ExportFailed(f"its export differs from torch (cosine {cosine:.5f})")
