"""What the user asks the indexer for. Torch-free: the CLI and `search` import it at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from store import InvalidOption

DEFAULT_MODEL = "effnet-lite0"
# A 200 MP photo (the largest phone sensors) fits; a PNG that declares 100,000 x 100,000 does not.
DEFAULT_MAX_PIXELS = 250_000_000
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIMES = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class Compute:
    """Where and how to run the backbone, as asked.

    device: auto|cpu|cuda[:N]|mps; precision: auto|fp32|bf16|fp16; runtime: auto|torch|onnx.
    """

    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"

    def __post_init__(self) -> None:
        """Refused when asked, before any model is loaded (or a command that needs none runs)."""
        index = self.device.removeprefix("cuda:")
        if self.device not in ("auto", "cpu", "mps", "cuda") and not (
            self.device.startswith("cuda:") and index.isdigit()
        ):
            raise InvalidOption(
                f"{self.device}: not a device (auto, cpu, cuda, cuda:N, mps)", field="device"
            )
        for name, value, allowed in (
            ("runtime", self.runtime, RUNTIMES),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise InvalidOption(
                    f"must be one of {', '.join(allowed)}, got {value!r}", field=name
                )


@dataclass(frozen=True)
class ModelOptions:
    """The model options every embedding command shares, as given.

    None means "as the index recorded" (or the default for a new index).
    """

    model: str | None = None  # a short name, a Birder weights name or a Birder network name
    weights: Path | None = None  # a local checkpoint; None: packaged, cached or recorded
    size: int | None = None  # input resolution; None: as recorded, else the model's own
    compute: Compute = field(default_factory=Compute)
    batch_size: int | None = None  # None: chosen to fill the device
    show_download: bool = True  # a progress bar if weights must be downloaded


@dataclass(frozen=True)
class IndexOptions:
    model: ModelOptions = field(default_factory=ModelOptions)
    workers: int | None = None  # decoding processes; None: sized from the cores
    prune: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused unread (bombs)
    index_type: str | None = None  # auto|flat|hnsw|ivf|ivfpq; None: as recorded (auto if new)
    max_index_memory: int | None = None  # bytes `auto` may use; None: as recorded or default


def default_workers() -> int:
    """Worker processes for decoding (`index`) and for reading files again (`dupes`): one per
    core, at most 4 (bench/RESULTS.md: with the model on ONNX Runtime, decoding photo-sized
    JPEGs is the slower stage on 2 cores)."""
    return max(1, min(4, os.cpu_count() or 1))
