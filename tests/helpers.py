"""Test data made on the spot: PIL-drawn images and a tiny random-weight Birder checkpoint."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from indexer.options import Compute
from indexer.runtime import has_cuda_driver, resolve_runtime
from indexer.scan import content_hash
from store import DEFAULT_PROBES, Gpu, ImageRecord, Vectors, cells_of, nearest_in

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SAMPLE_PHOTOS = sorted(EXAMPLES.glob("*.jpg"))

TINY_NETWORK = "rope_i_vit_s16_pn_aps_c1"
TINY_CONFIG = {"num_layers": 2, "hidden_dim": 64, "num_heads": 4, "mlp_dim": 128}
TINY_SIZE = 64
TINY_DIM = 64


def solid(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> Image.Image:
    return Image.new("RGB", size, color)


def gradient(size: tuple[int, int] = (96, 64), axis: int = 0) -> Image.Image:
    w, h = size
    ramp = np.linspace(0, 255, w if axis == 0 else h, dtype=np.float32)
    plane = np.tile(ramp, (h, 1)) if axis == 0 else np.tile(ramp[:, None], (1, w))
    rgb = np.stack([plane, 255 - plane, np.full_like(plane, 128)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def shapes(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    rng = np.random.RandomState(seed)
    image = Image.new("RGB", size, tuple(int(c) for c in rng.randint(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.randint(0, size[0] - 10)), int(rng.randint(0, size[1] - 10))
        box = (x0, y0, x0 + int(rng.randint(5, 40)), y0 + int(rng.randint(5, 40)))
        fill = tuple(int(c) for c in rng.randint(0, 255, 3))
        (draw.ellipse if rng.rand() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def edited(image: Image.Image) -> Image.Image:
    """A typical near-duplicate: cropped, downscaled, brightened, re-encoded as JPEG q=60."""
    w, h = image.size
    crop = image.crop((w // 12, h // 12, w - w // 12, h - h // 12))
    small = crop.resize((crop.width * 2 // 3, crop.height * 2 // 3), Image.Resampling.BILINEAR)
    bright = ImageEnhance.Brightness(small).enhance(1.1)
    buffer = io.BytesIO()
    bright.save(buffer, "JPEG", quality=60)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def write_collection(folder: Path) -> dict[str, Path]:
    """A small collection with every case the core issue names, by role."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    files = {
        "red": folder / "red.png",
        "blue": folder / "sub" / "blue.jpg",
        "gradient": folder / "gradient.png",
        "shapes1": folder / "shapes1.png",
        "shapes2": folder / "sub" / "shapes2.webp",
        "corrupt": folder / "corrupt.jpg",
        "text": folder / "notes.jpg",
    }
    solid((220, 20, 20)).save(files["red"])
    solid((20, 20, 220)).save(files["blue"], quality=95)
    gradient().save(files["gradient"])
    shapes(1).save(files["shapes1"])
    shapes(2).save(files["shapes2"])
    jpeg = io.BytesIO()
    shapes(3).save(jpeg, "JPEG")
    files["corrupt"].write_bytes(jpeg.getvalue()[:200])  # header only: a truncated JPEG
    files["text"].write_text("this is not an image\n")
    (folder / "readme.txt").write_text("not an image extension: never scanned\n")
    return files


def save_tiny_checkpoint(directory: Path) -> Path:
    """The tiny test net (0.15M parameters, 64 px), saved with Birder's own checkpoint code."""
    return save_random_checkpoint(directory, TINY_NETWORK, TINY_SIZE, TINY_CONFIG)


def save_random_checkpoint(
    directory: Path,
    network: str,
    size_px: int,
    config: dict[str, object] | None = None,
    classes: tuple[str, ...] = (),
    head: int = 0,
) -> Path:
    """A random-weight Birder net saved with Birder's own checkpoint code; returns its path.

    With `classes`, the net has a head of that many classes, named in class_to_idx; with
    `head`, a head of that many unnamed outputs (a projection, as SSCD's)."""
    import torch
    from birder.common import fs_ops
    from birder.conf import settings
    from birder.model_registry import registry
    from birder.net.base import get_signature

    torch.manual_seed(0)
    size = (size_px, size_px)
    outputs = head or len(classes)
    net = registry.net_factory(network, outputs, config=config, size=size)
    signature = get_signature((1, 3, *size), outputs)
    class_to_idx = {name: i for i, name in enumerate(classes)}
    rgb_stats = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    previous = settings.MODELS_DIR
    settings.MODELS_DIR = directory  # checkpoint_model writes into MODELS_DIR
    try:
        fs_ops.checkpoint_model(
            network, 0, net, signature, class_to_idx, rgb_stats, None, None, None, None,
            external_config=config,
        )  # fmt: skip
    finally:
        settings.MODELS_DIR = previous
    path = directory / f"{network}_0.pt"
    assert path.is_file(), f"birder did not write {path}"
    return path


def clustered_with_duplicates(n: int, dim: int = 384, seed: int = 1338) -> np.ndarray:
    """(n, dim) unit vectors like a photo collection's: topics of related images (cosine ~0.5
    within a topic), and near-duplicate variants of about a third of them (cosine 0.89-0.995)."""
    rng = np.random.RandomState(seed)
    topics = rng.randn(max(1, n // 200), dim).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    i = 0
    while i < n:
        base = topics[rng.randint(len(topics))] + 0.9 * rng.randn(dim).astype(np.float32) / np.sqrt(
            dim
        )
        base /= np.linalg.norm(base)
        out[i] = base
        i += 1
        for _ in range(rng.choice([0, 0, 1, 2, 3]) if i < n else 0):
            if i >= n:
                break
            noise = rng.randn(dim).astype(np.float32)
            noise -= (noise @ base) * base
            variant = base + rng.uniform(0.1, 0.5) * noise / np.linalg.norm(noise)
            out[i] = variant / np.linalg.norm(variant)
            i += 1
    return out


class RecordedSteps:
    """Progress steps (search.steps.Steps) that record each step's total and what was reported
    done, by name."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    @contextmanager
    def step(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        done = self.seen.setdefault(name, [total, 0])
        yield lambda n: done.__setitem__(1, done[1] + n)


def resolved_precision(compute: Compute) -> str:
    """What precision `compute` runs at, as `index` reports it: through the project's own
    runtime resolver, so a test holds on a CPU with or without native bf16."""
    if compute.precision != "auto":
        return compute.precision
    if resolve_runtime(compute) == "onnx":
        return "fp32"
    on_gpu = compute.device.startswith("cuda") or (compute.device == "auto" and has_cuda_driver())
    return "bf16" if on_gpu else "fp32"


def self_nearest(
    vectors: Vectors, k: int, probes: int = DEFAULT_PROBES, gpu: Gpu | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Each vector's k nearest others in the set, through the store's cells: (positions (n, k),
    cosines (n, k)), best first; -1 and -inf pad rows with fewer than k others."""
    cells = cells_of(vectors, gpu)
    return nearest_in(vectors, vectors, k, cells, cells.nearest(vectors, probes), same=True)


def review_photos(folder: Path) -> Path:
    """Two duplicate groups of real photos in `folder`: rocket.jpg and its byte copy, coffee.jpg
    and a q60 copy of it; chelsea.jpg alone."""
    import shutil

    folder.mkdir(parents=True)
    for name in ("coffee.jpg", "rocket.jpg", "chelsea.jpg"):
        shutil.copy(EXAMPLES / name, folder / name)
    shutil.copy(folder / "rocket.jpg", folder / "rocket-copy.jpg")
    Image.open(folder / "coffee.jpg").save(folder / "coffee-small.jpg", quality=60)
    return folder


PHOTOS = [EXAMPLES / n for n in ("coffee.jpg", "chelsea.jpg", "astronaut.jpg", "rocket.jpg")]


def edits(photo: Path, folder: Path) -> dict[str, Path]:
    """The original and copies of it, written as a user's tools would."""
    image = Image.open(photo).convert("RGB")
    w, h = image.size
    made = {"original": folder / photo.name}
    image.save(made["original"], quality=95)

    def save(name: str, edited: Image.Image, quality: int = 90) -> None:
        made[name] = folder / f"{photo.stem}-{name}.jpg"
        edited.save(made[name], quality=quality)

    save("crop-60", image.crop((w // 5, h // 5, w - w // 5, h - h // 5)))
    save("corner", image.crop((0, 0, w // 2, h // 2)))
    canvas = Image.new("RGB", (w, h), (40, 90, 160))
    canvas.paste(image.resize((w // 2, h // 2)), (w // 4, h // 3))
    save("pasted", canvas)
    save("grayscale", ImageOps.grayscale(image).convert("RGB"))
    save("blur", image.filter(ImageFilter.GaussianBlur(2)))
    save("q10", image, quality=10)
    save("turned", image.rotate(90, expand=True))
    save("mirror", ImageOps.mirror(image))
    banded = image.copy()
    ImageDraw.Draw(banded).rectangle((0, h - h // 7, w, h), fill=(15, 15, 15))
    save("band", banded)
    return made


def file_record(path: Path, image_id: int) -> ImageRecord:
    """The catalog's record of a file on disk, as an index run would make it."""
    st = path.stat()
    with Image.open(path) as image:
        width, height = image.size
    return ImageRecord(image_id, str(path), st.st_size, st.st_mtime_ns,
                       content_hash(path.read_bytes()), width, height)  # fmt: skip
