from __future__ import annotations

from pathlib import Path

import pytest

from indexer.options import IndexOptions, ModelChoice
from tests.helpers import TINY_NETWORK, save_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def tiny_options(tiny_checkpoint: Path) -> IndexOptions:
    """Index with the tiny Birder net, decoding inline (fast, deterministic)."""
    return IndexOptions(model=ModelChoice(TINY_NETWORK, tiny_checkpoint), batch_size=3, workers=0)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"
