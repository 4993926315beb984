"""The default backbone against the reference EfficientNet-Lite0, and the embedder's contract."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from indexer.backbones import Backbone, effnet_lite0_weights, load_backbone
from indexer.decode import decode_file
from indexer.errors import InvalidOption, UnknownModel
from indexer.options import ModelOptions
from indexer.spec import ModelSpec, resolve_model
from indexer.torch_runtime import (
    CPU_BATCH_SIZE,
    TorchEmbedder,
    largest_fitting_batch,
    resolve_device,
    resolve_dtype,
)
from tests.helpers import EXAMPLES, TINY_DIM, TINY_NETWORK, TINY_SIZE


def spec(model: str | None = None, weights: Path | None = None) -> ModelSpec:
    return resolve_model(ModelOptions(model, weights), None)


def embed(backbone: Backbone, pixels: np.ndarray, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Unit vectors of `pixels` by the torch runtime on the CPU."""
    return TorchEmbedder(backbone, torch.device("cpu"), dtype).run(np.asarray(pixels)).vectors


ESPRESSO = 967  # ImageNet-1k class index


@pytest.fixture(scope="module")
def effnet() -> Backbone:
    return load_backbone(spec(), torch.device("cpu"))


@pytest.fixture(scope="module")
def reference() -> Iterator[torch.nn.Module]:
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # from_pretrained prints to stdout
        weights = str(effnet_lite0_weights())  # a str: from_pretrained tests isinstance(str)
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    yield net.eval()


def reference_embedding(net: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """What the reference feeds its classifier: pooled features, before dropout and _fc."""
    with torch.inference_mode():
        pooled = net._avg_pooling(net.extract_features(pixels)).flatten(1)
    return torch.nn.functional.normalize(pooled, dim=1)


def test_embeddings_equal_the_reference_to_1e4(
    effnet: Backbone, reference: torch.nn.Module
) -> None:
    photos = [decode_file(str(p), effnet.prep).pixels for p in EXAMPLES.glob("*.jpg")]
    noise = np.random.RandomState(0).randn(2, 3, 224, 224).astype(np.float32)
    batch = np.concatenate([np.stack(photos), noise])
    ours = embed(effnet, batch)
    theirs = reference_embedding(reference, torch.from_numpy(batch)).numpy()
    assert ours.shape == (len(batch), 1280) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_preprocessing_is_the_one_the_weights_expect(
    effnet: Backbone, reference: torch.nn.Module
) -> None:
    """TF-Lite normalisation, orientation and RGB: the coffee photo is classified espresso."""
    photo = EXAMPLES / "coffee.jpg"
    pixels = decode_file(str(photo), effnet.prep).pixels
    with torch.inference_mode():
        probabilities = reference(torch.from_numpy(pixels[None])).softmax(dim=1)[0]
    assert int(probabilities.argmax()) == ESPRESSO
    assert float(probabilities[ESPRESSO]) > 0.5


def test_rotated_copy_in_exif_embeds_like_the_upright_photo(
    effnet: Backbone, tmp_path: Path
) -> None:
    photo = Image.open(EXAMPLES / "chelsea.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90° counter-clockwise to display"
    rotated = tmp_path / "rotated.jpg"
    photo.transpose(Image.Transpose.ROTATE_270).save(rotated, quality=95, exif=exif.tobytes())
    upright = decode_file(str(EXAMPLES / "chelsea.jpg"), effnet.prep).pixels
    stored = decode_file(str(rotated), effnet.prep).pixels
    a, b = embed(effnet, np.stack([upright, stored]))
    assert float(a @ b) > 0.98


def test_tiny_birder_checkpoint_loads_through_birder(tiny_checkpoint: Path) -> None:
    backbone = load_backbone(spec(TINY_NETWORK, tiny_checkpoint), torch.device("cpu"))
    assert backbone.dim == TINY_DIM and backbone.prep.size == (TINY_SIZE, TINY_SIZE)
    assert not backbone.module.training  # inference=True: no drop-path, deterministic
    pixels = np.random.RandomState(1).randn(3, 3, TINY_SIZE, TINY_SIZE).astype(np.float32)
    first, second = embed(backbone, pixels), embed(backbone, pixels)
    assert np.array_equal(first, second)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)


def test_unknown_model_and_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(UnknownModel, match="unknown model 'nope'"):
        load_backbone(spec("nope"), torch.device("cpu"))
    with pytest.raises(UnknownModel, match="weights file not found"):
        load_backbone(spec(TINY_NETWORK, tmp_path / "none.pt"), torch.device("cpu"))
    text = tmp_path / "weights.txt"
    text.write_text("not weights\n")
    with pytest.raises(UnknownModel, match="not EfficientNet-Lite0 weights"):
        load_backbone(spec(None, text), torch.device("cpu"))


def test_precision_auto_is_fp32_on_every_cpu_and_bf16_on_cuda() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32  # whatever the CPU supports
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("fp16", cpu) == torch.float16
    with pytest.raises(InvalidOption, match="must be one of"):
        resolve_dtype("int8", cpu)


def test_bf16_embeddings_stay_close_to_fp32(effnet: Backbone) -> None:
    pixels = np.stack([decode_file(str(p), effnet.prep).pixels for p in EXAMPLES.glob("*.jpg")])
    fp32 = embed(effnet, pixels)
    bf16 = embed(effnet, pixels, torch.bfloat16)
    assert bf16.dtype == np.float32
    assert (fp32 * bf16).sum(axis=1).min() > 0.98


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(effnet: Backbone) -> None:
    device = resolve_device("auto")
    assert device.type == "cuda"
    gpu = load_backbone(spec(), device)
    pixels = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    cpu_vectors = embed(effnet, pixels.numpy())
    gpu_vectors = TorchEmbedder(gpu, device, torch.bfloat16).run(pixels.pin_memory()).vectors
    assert (cpu_vectors * gpu_vectors).sum(axis=1).min() > 0.98


def test_device_cuda_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidOption, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(InvalidOption, match="not a device"):
        resolve_device("gpu0")


def test_largest_fitting_batch_halves_on_out_of_memory() -> None:
    tried: list[int] = []

    def fits_up_to_40(batch: int) -> None:
        tried.append(batch)
        if batch > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert largest_fitting_batch(fits_up_to_40) == 32
    assert tried == [256, 128, 64, 32]
    assert largest_fitting_batch(lambda b: None) == 256

    def never_fits(batch: int) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert largest_fitting_batch(never_fits) == 1


def test_auto_batch_size_on_cpu(effnet: Backbone) -> None:
    assert TorchEmbedder(effnet, torch.device("cpu"), torch.float32).default_batch == CPU_BATCH_SIZE
