"""Where an index lives: one directory holding the catalog and the FAISS file."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

HOME_ENV = "IMGSEARCH_HOME"
CATALOG_NAME = "catalog.sqlite"


def resolve_home(option: str | os.PathLike[str] | None) -> Path:
    """`--home` first, then $IMGSEARCH_HOME, then the platform's user data dir."""
    if option:
        return Path(option).expanduser().absolute()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return Path(platformdirs.user_data_dir("imgsearch", appauthor=False))


def catalog_path(home: Path) -> Path:
    return home / CATALOG_NAME
