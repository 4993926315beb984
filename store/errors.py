"""The one root of every error the library raises, and the store's own errors.

Library errors carry the input they are about in `field` (a parameter name such as "size" or
"min_score", or None), never a command-line flag: the CLI and the server each turn the root into
their own words once (`--size: ...` on the command line, `size: ...` in a JSON `detail`).
"""

from __future__ import annotations


class ImgsearchError(Exception):
    """Root of every error imgsearch raises. `field` names the parameter at fault, if any."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidOption(ImgsearchError):
    """A parameter value that cannot be used; `field` is the parameter's name."""


class StoreError(ImgsearchError):
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


class CatalogDamaged(StoreError):
    """SQLite reports the catalog as damaged, or a stored row cannot be what it must be."""


class HomeNotWritable(StoreError):
    """A command that must write finds the home read-only (or cannot create it)."""
