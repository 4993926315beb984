"""Embedding a few image files in this process, for queries and for `dupes --rotations`.

Torch-free: with the ONNX runtime a query decodes with Pillow and numpy and embeds without
importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from indexer.decode import Pixels, decode_file, open_rgb, read_file, to_pixels
from indexer.embedder import Embedder, Embeddings
from indexer.errors import UnreadableImage
from store import Vectors

ROTATIONS = (90, 180, 270)  # degrees, counter-clockwise


def embed_files(
    paths: Sequence[str], embedder: Embedder, batch_size: int | None = None
) -> Embeddings:
    """Unit descriptors (n, d) of image files, and of their views (n, R, d) when the model
    makes them. Raises UnreadableImage for the first file that cannot be read."""
    size = batch_size or max(1, min(len(paths), embedder.default_batch))
    vectors = [np.zeros((0, embedder.dim), dtype=np.float32)]
    views: list[Vectors] = []
    for start in range(0, len(paths), size):
        decoded = [decode_file(path, embedder.prep) for path in paths[start : start + size]]
        extra = [d.views for d in decoded if d.views is not None]
        stacked = np.stack(extra) if len(extra) == len(decoded) else None
        made = embedder.run(np.stack([d.pixels for d in decoded]), 0, stacked)
        vectors.append(made.vectors)
        if made.views is not None:
            views.append(made.views)
    described = np.concatenate(views) if views and len(views) == len(vectors) - 1 else None
    return Embeddings(np.concatenate(vectors), [], described)


def embed_rotations(
    paths: Sequence[str],
    embedder: Embedder,
    batch_size: int | None = None,
    advance: Callable[[int], object] | None = None,
) -> tuple[list[int], Vectors]:
    """Descriptors of each file turned by 90, 180 and 270 degrees: (3 per readable file, d).

    Returns the position in `paths` of each row, so that unreadable files can be skipped.
    `advance(n)`: told as files are done (a progress bar).
    """
    size = batch_size or embedder.default_batch
    rows: list[int] = []
    chunks = [np.zeros((0, embedder.dim), dtype=np.float32)]
    pending: list[Pixels] = []
    for position, path in enumerate(paths):
        if advance is not None:
            advance(1)
        try:
            image, _, _ = open_rgb(read_file(path).data, path, embedder.prep.size)
        except UnreadableImage:
            continue
        for angle in ROTATIONS:
            pending.append(to_pixels(image.rotate(angle, expand=True), embedder.prep))
            rows.append(position)
        if len(pending) >= size:
            chunks.append(embedder.run(np.stack(pending)).vectors)
            pending = []
    if pending:
        chunks.append(embedder.run(np.stack(pending)).vectors)
    return rows, np.concatenate(chunks)
