"""tqdm progress bars on stderr, for `indexer.pipeline.Progress` and `search.steps.Steps`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from search.steps import Advance


class TqdmProgress:
    """Images/s on stderr; silent when stderr is not a terminal or when asked to be."""

    def __init__(self, *, disable: bool = False) -> None:
        self._bar: tqdm[Any] | None = None
        self._disable = True if disable else None  # None: tqdm hides itself off a TTY

    def start(self, total: int) -> None:
        self._bar = tqdm(
            total=total,
            unit="img",
            desc="indexing",
            disable=self._disable,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def advance(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


class TqdmSteps:
    """One bar per long step of `dupes` (features, verification, the keeper's looks)."""

    def __init__(self, *, disable: bool = False) -> None:
        self._disable = True if disable else None  # None: tqdm hides itself off a TTY

    @contextmanager
    def step(self, name: str, total: int) -> Iterator[Advance]:
        with tqdm(
            total=total,
            desc=name,
            disable=self._disable or total == 0 or None,
            dynamic_ncols=True,
            leave=False,
        ) as bar:
            yield bar.update
