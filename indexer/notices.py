"""Notices of a long first step (a model's one-time export or download): shown to a person
watching a terminal without -v, so the first run is never seconds of silence; kept out of
scripts' stderr (there they are -v detail), where a failure stays one line."""

from __future__ import annotations

import logging
import sys


def notice(log: logging.Logger, message: str, *args: object) -> None:
    level = logging.WARNING if sys.stderr.isatty() else logging.INFO
    log.log(level, message, *args)
