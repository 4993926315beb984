"""Where a command's work runs: `--engine local|ray` and `--ray-address`, the same on every
command that can run on a Ray cluster (index, dupes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def ENGINE(help: str) -> Callable[[Any], Any]:
    return click.option(
        "--engine",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help=help,
    )


RAY_ADDRESS = click.option(
    "--ray-address",
    default=None,
    help="With --engine ray: auto or ray://HOST:PORT to join a cluster (default: start a "
    "local one).",
)
