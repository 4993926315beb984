"""What machine a benchmark ran on, for its JSON output."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "bf16_native": "amx_bf16" in flags or "avx512_bf16" in flags,
        "avx512": "avx512f" in flags,
        "python": platform.python_version(),
    }
    try:
        import torch

        info |= {"torch": torch.__version__, "threads": torch.get_num_threads(),
                 "cuda": torch.cuda.is_available()}  # fmt: skip
    except ImportError:
        pass
    return info
