"""The catalog: SQLite (the truth, vectors included) and FAISS (derived), kept consistent.

Never imports torch. Knows nothing of models beyond the name and dimension recorded in `meta`.
This module is the store's face: code outside store/ imports from here only (`make lint`
checks it). Besides the Store, it publishes the atomic write, the writer lock's wait, the
home check, and the join kernels that copy detection's candidate stage drives (store/pairs.py).
"""

from store.ann import KINDS as INDEX_KINDS
from store.ann import IndexSpec
from store.atomic import atomic_path, pid_alive, temp_pid, write_atomic
from store.check import CheckReport, check_home
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
from store.faiss_index import fill_part
from store.gpu import Gpu, faiss_has_gpu
from store.home import HOME_ENV, catalog_path, resolve_home
from store.lock import DEFAULT_WAIT, exclusive_writer
from store.pairs import (
    DEFAULT_PROBES,
    EXACT_LIMIT,
    Cells,
    Nearests,
    Side,
    cells_of,
    floor_join,
    nearest_in,
    nearest_probing,
    probes_for,
)
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
from store.rows import Catalog, StoredVector
from store.store import NewIndex, Store, Writer

__all__ = [
    "DEFAULT_PROBES",
    "DEFAULT_WAIT",
    "EXACT_LIMIT",
    "HOME_ENV",
    "INDEX_KINDS",
    "Catalog",
    "CatalogDamaged",
    "Cells",
    "CheckReport",
    "Embedded",
    "Failure",
    "FaissUnavailable",
    "FileStat",
    "Gpu",
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
    "Nearests",
    "NewIndex",
    "Side",
    "Store",
    "StoreError",
    "StoredVector",
    "Tag",
    "Vector",
    "Vectors",
    "Writer",
    "atomic_path",
    "catalog_path",
    "cells_of",
    "check_home",
    "exclusive_writer",
    "faiss_has_gpu",
    "fill_part",
    "floor_join",
    "nearest_in",
    "nearest_probing",
    "pid_alive",
    "probes_for",
    "resolve_home",
    "temp_pid",
    "write_atomic",
]
