"""Typed errors raised by the store; the CLI maps them to messages and exit codes."""


class StoreError(Exception):
    """Base class for every error the store raises."""


class IndexNotFound(StoreError):
    """The home directory holds no index yet."""


class ModelMismatch(StoreError):
    """The index was built with another backbone than the one asked for."""


class FaissUnavailable(StoreError):
    """The `faiss` package cannot be imported (install the `cpu` or `gpu` extra)."""


class IndexBusy(StoreError):
    """Another process is writing to the index."""


class ItemNotFound(StoreError):
    """An id or path that is not in the index."""
