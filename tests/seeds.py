"""The five model cards as tiny random-weight checkpoints, served by a `file://` Birder registry.

Each keeps its card's network and embedding dimension (one layer, a small MLP, a 2 x 2 patch
grid), is written by Birder's checkpoint code, and is registered under the card's real weights
name with its sha256, so `birder.load_pretrained_model`'s download path is the one exercised.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from indexer.models import CARDS, ModelCard
from tests.helpers import save_random_checkpoint

# Class names as Birder checkpoints carry them: ImageNet-21k words, rotation angles.
IN21K_CLASSES = ("golden retriever", "tabby cat", "espresso", "sports car", "red fox", "tulip")
ROTNET_CLASSES = ("0", "90", "180", "270")

SEEDS = tuple(c for c in CARDS if c.weights is not None)


@dataclass(frozen=True)
class Served:
    folder: Path  # what the file:// URL points at: <weights>.pt files
    sha256: dict[str, str]  # weights name -> digest


def classes_of(card: ModelCard) -> tuple[str, ...]:
    return {"capi-b14-in21k": IN21K_CLASSES, "rotnet": ROTNET_CLASSES}.get(card.name, ())


def tiny_input(card: ModelCard) -> int:
    return 2 * card.patch if card.patch else 64


def tiny_config(card: ModelCard) -> dict[str, object]:
    """The card's network, shrunk: one layer and a small MLP for the ViTs (hidden_dim kept: the
    card's dimension); one block per stage of narrow filters for the ResNet (its 512-d head
    kept: SSCD's descriptor)."""
    if card.network and card.network.startswith("resnet"):
        return {
            "bottle_neck": True,
            "filter_list": [8, 16, 16, 32, 32],
            "units": [1, 1, 1, 1],
            "pooling_param": 3.0,
        }
    return {"num_layers": 1, "mlp_dim": 64}


def head_of(card: ModelCard) -> int:
    """Outputs of the head that are not named classes (SSCD's projection), else 0."""
    return card.dim if card.descriptor == "logits" else 0


def write_seed_checkpoints(folder: Path) -> Served:
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for card in SEEDS:
        assert card.network and card.weights
        work = folder / "work"
        work.mkdir(exist_ok=True)
        written = save_random_checkpoint(
            work, card.network, tiny_input(card), tiny_config(card), classes_of(card), head_of(card)
        )
        target = folder / f"{card.weights}.pt"
        shutil.move(written, target)
        digests[card.weights] = hashlib.sha256(target.read_bytes()).hexdigest()
    shutil.rmtree(folder / "work")
    return Served(folder, digests)


@contextlib.contextmanager
def registered(served: Served, sha_override: dict[str, str] | None = None) -> Iterator[None]:
    """Point the cards' registry entries at `served` for the duration of the block."""
    from birder.model_registry import registry

    originals = {c.weights: dict(registry.get_pretrained_metadata(c.weights)) for c in SEEDS
                 if c.weights}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "already registered, overwritten"
        for name, original in originals.items():
            digest = (sha_override or {}).get(name, served.sha256[name])
            entry = {**original, "url": served.folder.as_uri(),
                     "formats": {"pt": {"file_size": 1.0, "sha256": digest}}}  # fmt: skip
            registry.register_weights(name, entry)  # type: ignore[arg-type]
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for name, original in originals.items():
                registry.register_weights(name, original)  # type: ignore[arg-type]
