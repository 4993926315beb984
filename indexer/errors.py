"""Typed errors raised by the indexer; the CLI maps them to messages and exit codes."""


class IndexerError(Exception):
    """Base class for every error the indexer raises."""


class FolderNotFound(IndexerError):
    """A folder given to `index` does not exist."""


class UnreadableImage(IndexerError):
    """A file that cannot be read or decoded as an image. The message names file and reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class InvalidOption(IndexerError):
    """An option value the indexer cannot use; the message names the flag."""


class UnknownModel(IndexerError):
    """A model name that is neither a short name nor loadable from the given weights."""


class WeightsUnavailable(IndexerError):
    """A model's weights are neither here nor downloadable; the message says what to do."""
