"""A tqdm progress bar on stderr, shaped for `indexer.pipeline.Progress`."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


class TqdmProgress:
    """Images/s on stderr; silent when stderr is not a terminal or when asked to be."""

    def __init__(self, *, disable: bool = False) -> None:
        self._bar: tqdm[Any] | None = None
        self._disable = True if disable else None  # None: tqdm hides itself off a TTY

    def start(self, total: int) -> None:
        self._bar = tqdm(total=total, unit="img", desc="indexing", disable=self._disable,
                         dynamic_ncols=True, smoothing=0.1)  # fmt: skip

    def advance(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
