"""Typed errors raised by the indexer, under the library's one root (store.errors)."""

from store import ImgsearchError, InvalidOption

__all__ = [
    "FolderNotFound",
    "IndexerError",
    "InvalidOption",
    "UnknownModel",
    "UnreadableImage",
    "WeightsUnavailable",
]


class IndexerError(ImgsearchError):
    """Base class for every error the indexer raises."""


class FolderNotFound(IndexerError):
    """A folder given to `index` does not exist."""


class UnreadableImage(IndexerError):
    """A file that cannot be read or decoded as an image. The message names file and reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class UnknownModel(IndexerError):
    """A model name that is neither a short name nor loadable from the given weights."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="model")


class WeightsUnavailable(IndexerError):
    """A model's weights are neither here nor downloadable; the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="weights")
