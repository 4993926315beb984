"""The decode stage: items read, hashed and decoded in DataLoader workers (or inline).

Pixels travel as numpy arrays, so the same stage feeds torch and ONNX Runtime; on CUDA the
DataLoader's pin-memory thread calls `Batch.pin_memory` for page-locked, non-blocking copies.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from indexer.decode import Pixels, Preprocess, decode, read_file
from indexer.errors import UnreadableImage
from indexer.scan import content_hash
from store import FileStat, ImageFile


@dataclass(frozen=True)
class Item:
    """What a worker learned about one file. Exactly one of error / reuse / pixels applies."""

    stat: FileStat
    file: ImageFile | None  # None when the file could not be read at all
    width: int = 0
    height: int = 0
    error: str | None = None
    reuse: bool = False  # its content is already indexed: no pixels were decoded


@dataclass(frozen=True)
class Batch:
    items: list[Item]
    pixels: Any  # (m, 3, H, W) float32 numpy (a pinned torch tensor once pinned): one row per
    # item with neither error nor reuse, in order
    views: Pixels | None = None  # (m, R, 3, h, w): their views, when the backbone takes them

    def pin_memory(self) -> Batch:
        import torch

        return replace(self, pixels=torch.from_numpy(self.pixels).pin_memory())


@dataclass(frozen=True)
class Decoded:
    pixels: Pixels
    views: Pixels | None


Sample = tuple[Item, Decoded | None]


class DecodeDataset:
    """Reads each file once: the bytes are hashed, then decoded unless the hash is known.

    A map-style dataset (len and getitem) for torch's DataLoader, usable without torch too.
    """

    def __init__(
        self,
        stats: Sequence[FileStat],
        prep: Preprocess,
        known_hashes: Container[str],
        max_pixels: int,
    ) -> None:
        self.stats = stats
        self.prep = prep
        self.known_hashes = known_hashes
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.stats)

    def __getitem__(self, index: int) -> Sample:
        stat = self.stats[index]
        try:
            read = read_file(stat.path)
        except UnreadableImage as exc:
            return Item(stat, None, error=exc.reason), None
        # The stat of the bytes actually read: a file rewritten since the scan stays consistent.
        file = ImageFile(stat.path, read.size, read.mtime_ns, content_hash(read.data))
        if file.content_hash in self.known_hashes:
            return Item(file=file, stat=stat, reuse=True), None
        try:
            decoded = decode(read.data, stat.path, self.prep, self.max_pixels)
        except UnreadableImage as exc:
            return Item(stat, file, error=exc.reason), None
        return Item(stat, file, decoded.width, decoded.height), Decoded(
            decoded.pixels, decoded.views
        )


def collate(samples: list[Sample]) -> Batch:
    """Stack in the worker, so one array per batch crosses the process boundary."""
    decoded = [d for _, d in samples if d is not None]
    pixels = (
        np.stack([d.pixels for d in decoded])
        if decoded
        else np.zeros((0, 3, 1, 1), dtype=np.float32)
    )
    views = None
    if decoded and decoded[0].views is not None:
        views = np.stack([d.views for d in decoded if d.views is not None])
    return Batch([item for item, _ in samples], pixels, views)
