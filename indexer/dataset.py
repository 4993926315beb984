"""The decode stage: a torch Dataset whose items are read, hashed and decoded in workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from indexer.decode import Preprocess, decode, read_file
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
    pixels: torch.Tensor  # (m, 3, H, W): one row per item with neither error nor reuse, in order


Sample = tuple[Item, torch.Tensor | None]


class DecodeDataset(Dataset[Sample]):
    """Reads each file once: the bytes are hashed, then decoded unless the hash is known."""

    def __init__(
        self,
        stats: Sequence[FileStat],
        prep: Preprocess,
        known_hashes: frozenset[str],
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
        return Item(stat, file, decoded.width, decoded.height), decoded.pixels


def collate(samples: list[Sample]) -> Batch:
    """Stack in the worker, so one tensor per batch crosses the process boundary."""
    tensors = [pixels for _, pixels in samples if pixels is not None]
    pixels = torch.stack(tensors) if tensors else torch.empty((0, 3, 1, 1))
    return Batch([item for item, _ in samples], pixels)
