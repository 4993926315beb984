"""Long steps of library code, reported to whoever asks (the CLI's progress bars).

A function that takes `steps` wraps each long step in `steps.step(name, total)` and calls what
it yields with the number of items done so far since the last call. Library code never prints:
the CLI passes search.progress.TqdmSteps, everything else the silent default.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

Advance = Callable[[int], object]  # n more items done


class Steps(Protocol):
    def step(self, name: str, total: int) -> AbstractContextManager[Advance]: ...


class _Silent:
    def step(self, name: str, total: int) -> AbstractContextManager[Advance]:
        return nullcontext(_ignore)


def _ignore(_done: int) -> None:
    return None


SILENT: Steps = _Silent()
