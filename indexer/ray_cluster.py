"""Joining a Ray cluster, for every `--engine ray` (index, dupes): Ray is imported here only
when one is asked for (the `ray` extra)."""

from __future__ import annotations

import logging


def connect(address: str | None) -> None:
    """Join the cluster at `address` ("auto", "ray://host:port"), or start a local one (None);
    nothing when this process has joined one already."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )


def cpus() -> int:
    """The cluster's CPUs (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]
