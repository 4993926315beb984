"""Getting a model card's weights: Birder downloads them into our cache dir, sha256-verified.

Birder's downloader writes `<dst>.<uuid>.partial` next to the destination and renames it only
after the whole file arrived with the registry's sha256, so a failed download leaves nothing.
It also creates `settings.MODELS_DIR` (default `./models`, relative to the working directory)
on every call, so that setting points into our cache dir for the duration of the call.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.error import URLError

from indexer.errors import WeightsUnavailable
from indexer.models import ModelCard, cache_dir, weights_file
from indexer.notices import notice

log = logging.getLogger(__name__)
DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte before a download is given up


def import_birder_quietly() -> None:
    """Import birder, keeping the level its logger had: birder's import resets it to INFO.

    Without a level set by the application, Birder's INFO lines ("Loading model from ...")
    would interleave with our progress bar, so WARNING is used.
    """
    logger = logging.getLogger("birder")
    level = logger.level or logging.WARNING
    # Birder imports torch.utils.cpp_extension, which warns "No CUDA runtime is found" on every
    # machine without CUDA: not news for an embedding run, and it would break one-line errors.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import birder.conf.settings  # noqa: F401  (runs logging.config.dictConfig)

    logger.setLevel(level)


@contextlib.contextmanager
def birder_models_dir() -> Iterator[Path]:
    """Point Birder's MODELS_DIR at our cache dir (Birder mkdirs it on every download call)."""
    import_birder_quietly()
    from birder.conf import settings

    folder = cache_dir()
    previous, previous_timeout = settings.MODELS_DIR, socket.getdefaulttimeout()
    settings.MODELS_DIR = folder
    # Birder's urlopen has no timeout: without one, a dead network would hang, not fail.
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        yield folder
    finally:
        settings.MODELS_DIR = previous
        socket.setdefaulttimeout(previous_timeout)


@contextlib.contextmanager
def download_errors(card: ModelCard) -> Iterator[None]:
    """Turn what Birder's downloader raises into one line that says what to do."""
    path = weights_file(card)
    try:
        yield
    except (URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsUnavailable(
            f"{card.name} needs its weights file {path} (Birder {card.weights}) and downloading "
            f"it failed ({reason}): run `imgsearch models download {card.name}` where the "
            f"network is reachable, or pass --weights FILE (a Birder checkpoint of {card.network})"
        ) from exc
    except FileExistsError as exc:
        raise WeightsUnavailable(
            f"{path}: its sha256 is not the one Birder lists for {card.weights} (damaged or "
            f"another version): delete it and run `imgsearch models download {card.name}`, "
            "or pass it with --weights FILE to use it anyway"
        ) from exc
    except RuntimeError as exc:
        if "invalid hash value" not in str(exc):
            raise
        raise WeightsUnavailable(
            f"downloaded {card.weights} but its sha256 did not match Birder's registry; "
            "nothing was kept: try again"
        ) from exc


def download(card: ModelCard, progress: bool = True) -> Path:
    """Make sure the card's weights are in the cache dir; download them if not. Returns the
    file. An existing file is checked against the registry's sha256."""
    path = weights_file(card)
    if path is None or card.weights is None:  # ships inside a package: nothing to download
        raise WeightsUnavailable(f"{card.name}: its weights ship inside a Python package")
    if not path.is_file():  # said before Birder's import (seconds): a run is never silent
        notice(
            log,
            "%s's weights (%.0f MB) are not in %s: downloading them once",
            card.name,
            card.download_mb,
            path.parent,
        )
    with birder_models_dir(), download_errors(card):
        from birder.common import fs_ops

        fs_ops.download_model_by_weights(card.weights, dst=path, progress_bar=progress)
    return path
