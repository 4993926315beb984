from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.options import IndexOptions, ModelOptions
from tests.helpers import TINY_NETWORK, save_tiny_checkpoint
from tests.seeds import Served, registered, write_seed_checkpoints

# One user cache (model exports) and one trash for the whole session, outside the user's own:
# set before anything imports send2trash (which reads XDG_DATA_HOME once) or exports a model.
_SESSION = tempfile.mkdtemp(prefix="imgsearch-tests-")
os.environ["IMGSEARCH_CACHE"] = os.path.join(_SESSION, "cache")
os.environ["XDG_DATA_HOME"] = os.path.join(_SESSION, "data")
_OWNER = os.getpid()


@atexit.register
def _clean_session() -> None:
    """Model exports and trashed test files (tens of MB) go when the session ends, not left in
    /tmp run after run; a forked child that exits normally leaves them to the session."""
    if os.getpid() == _OWNER:
        shutil.rmtree(_SESSION, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def tiny_options(tiny_checkpoint: Path) -> IndexOptions:
    """Index with the tiny Birder net, decoding inline (fast, deterministic)."""
    return IndexOptions(model=ModelOptions(TINY_NETWORK, tiny_checkpoint, batch_size=3), workers=0)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(scope="session")
def seed_server(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """Tiny checkpoints of the five model cards, as a file:// weights server would hold them."""
    return write_seed_checkpoints(tmp_path_factory.mktemp("seed-server"))


@pytest.fixture
def weights_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user cache dir ($IMGSEARCH_CACHE); returns its weights folder."""
    monkeypatch.setenv("IMGSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights"


@pytest.fixture
def seed_registry(seed_server: Served, weights_cache: Path) -> Iterator[Served]:
    """Birder's registry entries of the five cards point at `seed_server` (file://)."""
    with registered(seed_server):
        yield seed_server
