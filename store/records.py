"""Records that cross the store's boundary. Frozen, typed, no behaviour."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]  # (n, d), float32, unit L2 norm
Vector = NDArray[np.float32]  # (d,), float32, unit L2 norm


@dataclass(frozen=True)
class FileStat:
    """What a directory scan learns about a file without reading it."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ImageFile:
    """A file whose content was read: its stat plus a content hash (hex)."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str


@dataclass(frozen=True)
class ImageRecord:
    """One indexed image as stored in the catalog. `id` is also its FAISS id."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str
    width: int
    height: int


@dataclass(frozen=True)
class Tag:
    """A class of the model's head for an image, with its probability."""

    label: str
    score: float


@dataclass(frozen=True)
class Embedded:
    """An image ready to be written: its file, pixel size, embedding (d,), top classes (empty:
    the model has no named head, or they are already stored for this content), and its
    regional views' descriptors (R, d) when the model makes them."""

    file: ImageFile
    width: int
    height: int
    vector: Vector
    tags: tuple[Tag, ...] = ()
    views: Vectors | None = None


@dataclass(frozen=True)
class Failure:
    """A file that could not be indexed, with a one-line reason."""

    path: str
    size: int
    mtime_ns: int
    error: str


@dataclass(frozen=True)
class Hit:
    """One search result: a catalog id and its cosine similarity to the query."""

    id: int
    score: float


@dataclass(frozen=True)
class IndexMeta:
    """What the `meta` table says about an index."""

    model: str
    dim: int
    metric: str
    index_factory: str  # the FAISS index as built now, e.g. "IVF4096,Flat" (`info`)
    schema_version: int
    weights: str | None = None
    input_size: int | None = None  # the model's input resolution, when not its own (--size)
    precision: str | None = None  # of the last run that embedded images
    runtime: str | None = None  # torch or onnx, of the last run that embedded images
    index_spec: str | None = None  # the FAISS index's IndexSpec as JSON (None: flat)
    index_choice: str = "auto"  # what --index-type asked for: auto, flat, hnsw, ivf, ivfpq
    max_index_memory: int | None = None  # bytes; the budget `auto` chooses within
    faiss_file: str | None = None  # JSON FileRecord of the FAISS file last written
    folders: str | None = None  # JSON list of the folders `index` was given (real paths)

    @property
    def indexed_folders(self) -> tuple[str, ...]:
        """Every folder `index` was given in this home (a damaged value reads as none)."""
        try:
            listed = json.loads(self.folders or "[]")
        except ValueError:
            return ()
        return tuple(str(f) for f in listed) if isinstance(listed, list) else ()

    @classmethod
    def from_values(cls, values: dict[str, str]) -> IndexMeta:
        """From the key/value rows of the `meta` table."""
        return cls(
            model=values["model"],
            dim=int(values["dim"]),
            metric=values["metric"],
            index_factory=values["index_type"],
            schema_version=int(values["schema_version"]),
            weights=values.get("weights"),
            input_size=int(values["input_size"]) if "input_size" in values else None,
            precision=values.get("precision"),
            runtime=values.get("runtime"),
            index_spec=values.get("index_spec"),
            index_choice=values.get("index_choice", "auto"),
            max_index_memory=int(values["max_index_memory"])
            if "max_index_memory" in values
            else None,
            faiss_file=values.get("faiss_file"),
            folders=values.get("folders"),
        )

    def with_values(self, values: Mapping[str, str]) -> IndexMeta:
        """This record as it reads once `values` (meta keys) are written; other keys are not
        settings of a run and are left out."""
        changes: dict[str, object] = {}
        for key, value in values.items():
            if key in (
                "precision",
                "runtime",
                "faiss_file",
                "index_spec",
                "index_choice",
                "folders",
            ):
                changes[key] = value
            elif key == "index_type":
                changes["index_factory"] = value
            elif key == "max_index_memory":
                changes[key] = int(value)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
