"""End-to-end `index` rate vs the bare backbone forward rate, measured in one run.

    python bench/index_throughput.py [--count 200] [--batch-size 16] [--precision auto]

Prints JSON. The ratio (index / forward) is what matters: this machine is shared and noisy,
so absolute images/s move between runs while the ratio measured in one run is comparable.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from bench.photos import ROOT, make_photos
from indexer.decode import decode_file
from indexer.options import IndexOptions, ModelChoice, Runtime
from indexer.pipeline import default_workers, index_folders, load_embedder


def forward_rate(options: IndexOptions, sample: list[Path], batches: int) -> float:
    """Images/s of the embedder alone on pre-decoded tensors, batch as in the index run."""
    embedder = load_embedder(options.model, options.runtime)
    pixels = [decode_file(str(p), embedder.backbone.prep).pixels for p in sample]
    batch = torch.stack([pixels[i % len(pixels)] for i in range(options.batch_size)])
    embedder(batch)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        embedder(batch)
    return batches * options.batch_size / (time.perf_counter() - started)


def decode_rate(paths: list[Path], options: IndexOptions) -> float:
    """Images/s of read + decode + resize on one core (the per-core ceiling of the workers)."""
    embedder = load_embedder(options.model, options.runtime)
    started = time.perf_counter()
    for path in paths:
        decode_file(str(path), embedder.backbone.prep)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--model",
        default="effnet-lite0",
        help="effnet-lite0, or a Birder network run with random weights at --size",
    )
    parser.add_argument("--size", type=int, default=224, help="input size of a Birder network")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("birder").setLevel(logging.WARNING)

    photos = make_photos(args.count, ROOT / "bench" / "out" / "photos")
    weights = None
    if args.model != "effnet-lite0":  # same compute as the real weights, nothing to download
        from tests.helpers import save_random_checkpoint

        folder = ROOT / "bench" / "out" / "weights" / f"{args.model}-{args.size}"
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / f"{args.model}_0.pt"
        if not weights.is_file():
            save_random_checkpoint(folder, args.model, args.size)
    options = IndexOptions(
        model=ModelChoice(args.model, weights),
        runtime=Runtime("auto", args.precision),
        batch_size=args.batch_size,
        workers=args.workers,
    )
    forward = forward_rate(options, photos[:8], batches=max(4, args.count // args.batch_size))
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        report = index_folders(Path(home), [str(photos[0].parent)], options)
        wall = time.perf_counter() - started
    assert report.embedded == args.count, report
    index = args.count / wall
    decoding = decode_rate(photos[:40], options)
    megapixels = [megapixels_of(p) for p in photos]
    print(json.dumps({
        "benchmark": "index_throughput",
        "images": args.count,
        "megapixels": {"min": min(megapixels), "max": max(megapixels),
                       "mean": round(sum(megapixels) / len(megapixels), 2)},
        "model": report.model, "precision": report.precision, "device": report.device,
        "batch_size": args.batch_size,
        "workers": args.workers if args.workers is not None else default_workers(),
        "forward_images_per_second": round(forward, 2),
        "index_images_per_second": round(index, 2),
        "ratio_index_to_forward": round(index / forward, 3),
        "decode_images_per_second_one_core": round(decoding, 2),
        "index_seconds": round(wall, 2),
        "machine": machine(),
    }, indent=2))  # fmt: skip


def megapixels_of(path: Path) -> float:
    with Image.open(path) as image:
        return round(image.width * image.height / 1e6, 2)


if __name__ == "__main__":
    main()
