"""`imgsearch`'s command line: one module per command group; `main.py` only wires them."""

from search.cli.main import cli

__all__ = ["cli"]
