"""The catalog: SQLite (the truth, vectors included) and FAISS (derived), kept consistent.

Never imports torch. Knows nothing of models beyond the name and dimension recorded in `meta`.
"""

from store.ann import KINDS as INDEX_KINDS
from store.ann import IndexSpec
from store.catalog import Store
from store.errors import (
    CatalogDamaged,
    FaissUnavailable,
    HomeNotWritable,
    ImgsearchError,
    IndexBusy,
    IndexNotFound,
    InvalidOption,
    ItemNotFound,
    ModelMismatch,
    StoreError,
)
from store.gpu import faiss_has_gpu
from store.home import HOME_ENV, catalog_path, resolve_home
from store.lock import exclusive_writer
from store.reader import StoredVector
from store.records import (
    Embedded,
    Failure,
    FileStat,
    Hit,
    ImageFile,
    ImageRecord,
    IndexMeta,
    Tag,
    Vector,
    Vectors,
)

__all__ = [
    "HOME_ENV",
    "INDEX_KINDS",
    "CatalogDamaged",
    "Embedded",
    "Failure",
    "FaissUnavailable",
    "FileStat",
    "Hit",
    "HomeNotWritable",
    "ImageFile",
    "ImageRecord",
    "ImgsearchError",
    "IndexBusy",
    "IndexMeta",
    "IndexNotFound",
    "IndexSpec",
    "InvalidOption",
    "ItemNotFound",
    "ModelMismatch",
    "Store",
    "StoreError",
    "StoredVector",
    "Tag",
    "Vector",
    "Vectors",
    "catalog_path",
    "exclusive_writer",
    "faiss_has_gpu",
    "resolve_home",
]
