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
from indexer.onnx_runtime import (
    ExportRecord,
    OnnxEmbedder,
    export_dir,
    export_key,
    write_record,
)
from indexer.spec import ModelSpec
from store import ImgsearchError

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
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    log.info("exporting %s to %s (once)", spec.name, target)
    try:
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
        )
        embedder = OnnxEmbedder(tmp, record)
        _check_parity(backbone, embedder)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(target)
        write_record(record)
    except ExportFailed:
        raise
    except Exception as exc:  # torch.onnx and ONNX Runtime raise many types
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ExportFailed(reason) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return OnnxEmbedder(target, record)


def _export(backbone: Backbone, path: os.PathLike[str]) -> None:
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


def _check_parity(backbone: Backbone, embedder: OnnxEmbedder) -> None:
    height, width = backbone.prep.size
    probe = np.random.RandomState(0).randn(3, 3, height, width).astype(np.float32)
    with torch.inference_mode():
        reference = backbone.embed(torch.from_numpy(probe)).float().numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    cosine = float((reference * embedder.run(probe).vectors).sum(axis=1).min())
    if backbone.prep.view_size:  # the views run at another size through the same graph
        view = probe[:, :, : backbone.prep.view_size[0], : backbone.prep.view_size[1]]
        with torch.inference_mode():
            expected = backbone.embed(torch.from_numpy(np.ascontiguousarray(view))).numpy()
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        got = embedder.run(np.ascontiguousarray(view)).vectors
        cosine = min(cosine, float((expected * got).sum(axis=1).min()))
    if not cosine >= PARITY:
        raise ExportFailed(f"its export differs from torch (cosine {cosine:.5f})")
