"""What the user asks the indexer for. Torch-free: the CLI and `search` import it at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "effnet-lite0"
# A 200 MP photo (the largest phone sensors) fits; a PNG that declares 100,000 x 100,000 does not.
DEFAULT_MAX_PIXELS = 250_000_000
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ModelChoice:
    """Which backbone to run: a short name or a Birder network name, and optional weights."""

    name: str = DEFAULT_MODEL
    weights: Path | None = None
    size: int | None = None  # input resolution; None: the model's own
    show_download: bool = True  # a progress bar if weights must be downloaded


@dataclass(frozen=True)
class Runtime:
    """Where and how to run the backbone, as asked: device auto|cpu|cuda[:N]|mps."""

    device: str = "auto"
    precision: str = "auto"


@dataclass(frozen=True)
class EmbedOptions:
    """The model options every embedding command shares, as given on the command line."""

    model: str | None = None  # None: the index's own model (or the default for a new index)
    weights: Path | None = None  # None: the packaged weights, or those the index recorded
    runtime: Runtime = field(default_factory=Runtime)
    batch_size: int | None = None  # None: chosen to fill the device


@dataclass(frozen=True)
class IndexOptions:
    model: ModelChoice = field(default_factory=ModelChoice)
    runtime: Runtime = field(default_factory=Runtime)
    batch_size: int | None = None  # None: chosen to fill the device
    workers: int | None = None  # None: one per core, at most 4
    prune: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused unread (bombs)
    index_type: str | None = None  # auto|flat|hnsw|ivf|ivfpq; None: as recorded (auto if new)
    max_index_memory: int | None = None  # bytes `auto` may use; None: as recorded or default
