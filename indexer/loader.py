"""Decoding ahead of the model in worker processes, batch by batch, in order.

A plain multiprocessing pool (forked where the OS allows): each task decodes one batch of the
dataset (indexer/dataset.py) and sends back one stacked array, and up to PREFETCH batches are in
flight while the model runs. It needs no torch, so an ONNX Runtime run never imports it; on
CUDA the batch is pinned in this process for non-blocking copies.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from indexer.dataset import Batch, DecodeDataset, collate

PREFETCH = 4  # batches decoded ahead, per worker
NICE = 19
ORPHAN_POLL_S = 1.0
_DATASET: DecodeDataset | None = None  # the workers' copy (set by the pool's initializer)


def decoded_batches(
    dataset: DecodeDataset, batch_size: int, workers: int, pin: bool = False
) -> Iterator[Batch]:
    """The dataset's items in batches of `batch_size`, decoded by `workers` processes (0:
    here)."""
    ranges = [
        (start, min(len(dataset), start + batch_size))
        for start in range(0, len(dataset), batch_size)
    ]
    if workers <= 0 or len(ranges) <= 1:
        for start, end in ranges:
            yield _pinned(collate([dataset[i] for i in range(start, end)]), pin)
        return
    window = PREFETCH * workers
    pool = _context().Pool(workers, initializer=_adopt, initargs=(dataset, os.getpid()))
    with pool:
        # A sliding window of tasks: decoding stays ahead of the model by at most `window`
        # batches (pool.imap would queue them all and hold every decoded batch).
        pending = deque(pool.apply_async(_decode_range, (r,)) for r in ranges[:window])
        for bounds in ranges[window:]:
            yield _pinned(pending.popleft().get(), pin)
            pending.append(pool.apply_async(_decode_range, (bounds,)))
        while pending:
            yield _pinned(pending.popleft().get(), pin)


def _context() -> Any:
    """Forked workers where the OS allows (they inherit the dataset for free), spawned ones
    elsewhere."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _adopt(dataset: DecodeDataset, parent: int) -> None:
    global _DATASET
    _DATASET = dataset
    _exit_with_parent(parent)
    if hasattr(os, "nice"):
        # The model's threads work in lockstep: a decoder taking one of their cores stalls
        # them all. At a lower priority decoding fills the gaps instead (bench/RESULTS.md).
        with contextlib.suppress(OSError):
            os.nice(NICE)


def _exit_with_parent(parent: int) -> None:
    """End this worker when the run that started it is gone, kill -9 included: a pool worker
    holds both ends of its task pipe, so it may never see the end of its input and would wait
    forever, orphaned (tests/test_kill.py)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="imgsearch-orphan-watch", daemon=True).start()


def _decode_range(bounds: tuple[int, int]) -> Batch:
    assert _DATASET is not None
    start, end = bounds
    return collate([_DATASET[i] for i in range(start, end)])


def _pinned(batch: Batch, pin: bool) -> Any:
    return batch.pin_memory() if pin else batch
