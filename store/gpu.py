"""FAISS on a GPU, when the `gpu` extra (official faiss-gpu) is installed and a GPU is present.

Guarded because `index_cpu_to_all_gpus` with no GPU returns an empty index silently,
so GPU use starts only after `hasattr(faiss, "StandardGpuResources") and
faiss.get_num_gpus() > 0`. HNSW has no GPU version: it stays on the CPU. `--device auto` falls
back to the CPU quietly; `--device cuda` (which may be meant for torch, with faiss-cpu
installed) falls back with a one-line notice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from store.faiss_files import import_faiss

Products = Callable[[NDArray[np.float32], NDArray[np.float32]], NDArray[np.float32]]


log = logging.getLogger("imgsearch.store")


@dataclass(frozen=True)
class Gpu:
    resources: Any  # faiss.StandardGpuResources
    device: int


def faiss_has_gpu() -> bool:
    faiss = import_faiss()
    return hasattr(faiss, "StandardGpuResources") and int(faiss.get_num_gpus()) > 0


def gpu_for(device: str) -> Gpu | None:
    """The GPU to use for `device` (auto, cpu, cuda, cuda:N, mps), or None for the CPU."""
    if not (device == "auto" or device.startswith("cuda")):
        return None
    if not faiss_has_gpu():
        if device.startswith("cuda"):
            log.warning(
                "--device %s: FAISS cannot use a GPU here (no GPU, or faiss-cpu installed: "
                "pip install 'imgsearch-engine[gpu]'); searching on the CPU",
                device,
            )
        return None
    faiss = import_faiss()
    number = int(device.split(":", 1)[1]) if ":" in device else 0
    return Gpu(faiss.StandardGpuResources(), number)


def products(gpu: Gpu | None) -> Products:
    """`a @ b.T` for unit rows: numpy BLAS on the CPU, FAISS brute force on a GPU."""
    if gpu is None:
        return lambda a, b: np.asarray(a @ b.T, dtype=np.float32)
    faiss = import_faiss()

    def on_gpu(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
        scores: NDArray[np.float32] = faiss.pairwise_distance_gpu(
            gpu.resources,
            np.ascontiguousarray(a),
            np.ascontiguousarray(b),
            metric=faiss.METRIC_INNER_PRODUCT,
            device=gpu.device,
        )
        return scores

    return on_gpu


def to_gpu(index: Any, gpu: Gpu) -> Any:
    """A GPU copy of a CPU flat or IVF index (for search only)."""
    faiss = import_faiss()
    return faiss.index_cpu_to_gpu(gpu.resources, gpu.device, index)
