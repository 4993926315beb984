"""`index` end to end against what the CPU allows, for `--runtime torch` and the default.

    python bench/index_throughput.py [--count 200] [--model effnet-lite0 | NETWORK --size S]
                                     [--device cuda --batch-size 256]

On the same photo-sized JPEGs (2-12 MP), in one run, for each runtime: the bare forward rate
(the embedder alone on decoded pixels, with the regional views and tags `index` computes), the
CPU seconds per image of the model and of the decoder (read, hash, draft decode, resize), the
ceiling they imply on this many cores (cores / (model + decode CPU seconds)), and `index` end
to end as a share of that ceiling (on CUDA the CPU figures cover the host side only). Prints
JSON with the machine it ran on. A Birder network other than the default runs with random
weights (the same compute as the real ones).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from bench.photos import ROOT, make_photos
from indexer.dataset import DecodeDataset
from indexer.decode import decode_file
from indexer.embedder import TOP_TAGS, Embedder
from indexer.options import Compute, IndexOptions, ModelOptions, default_workers
from indexer.pipeline import index_folders
from indexer.runtime import load_embedder
from indexer.spec import resolve_model


def model_costs(
    embedder: Embedder, sample: list[Path], batch: int, rounds: int
) -> dict[str, float]:
    """Images/s and CPU seconds per image of the embedder alone (as `index` calls it)."""
    decoded = [decode_file(str(p), embedder.prep) for p in sample]
    pixels = np.stack([decoded[i % len(decoded)].pixels for i in range(batch)])
    views = None
    if decoded[0].views is not None:
        views = np.stack([decoded[i % len(decoded)].views for i in range(batch)])
    top = TOP_TAGS if embedder.labels else 0
    embedder.run(pixels, top, views)  # warm-up (and ONNX Runtime's first-run allocations)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        embedder.run(pixels, top, views)
    images = rounds * batch
    return {"forward_images_per_second": images / (time.perf_counter() - wall),
            "model_cpu_seconds_per_image": (time.process_time() - cpu) / images}  # fmt: skip


def model_gflop(embedder: Embedder, sample: list[Path]) -> float:
    """Floating-point operations of one image through `index`'s embedder (with its views and
    tags), counted by torch on the torch runtime's run: what any runtime has to compute."""
    from torch.utils.flop_counter import FlopCounterMode

    decoded = decode_file(str(sample[0]), embedder.prep)
    views = None if decoded.views is None else decoded.views[None]
    with FlopCounterMode(display=False) as counter:
        embedder.run(decoded.pixels[None], TOP_TAGS if embedder.labels else 0, views)
    return float(counter.get_total_flops()) / 1e9


def gemm_gflops(size: int = 2048, rounds: int = 10) -> float:
    """This machine's fp32 matrix-product rate on all its cores (torch, the best of `rounds`):
    what the cores can do, against which a model's forward rate is compared."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def decode_cpu(paths: list[Path], embedder: Embedder) -> float:
    """CPU seconds per image of the decode stage (read, hash, decode, resize, views)."""
    dataset = DecodeDataset([_stat(p) for p in paths], embedder.prep, frozenset(), 250_000_000)
    started = time.process_time()
    for i in range(len(dataset)):
        dataset[i]
    return (time.process_time() - started) / len(paths)


def _stat(path: Path) -> Any:
    from store import FileStat

    st = path.stat()
    return FileStat(str(path), st.st_size, st.st_mtime_ns)


def measure(runtime: str, args: argparse.Namespace, photos: list[Path],
            weights: Path | None) -> dict[str, Any]:  # fmt: skip
    model = ModelOptions(args.model, weights, None, Compute(args.device, args.precision, runtime),
                         args.batch_size)  # fmt: skip
    embedder = load_embedder(resolve_model(model, None), labels=True)
    costs = model_costs(embedder, photos[:8], args.batch_size, max(4, args.count // 32))
    flops = model_gflop(embedder, photos) if embedder.runtime == "torch" else None
    decoding = decode_cpu(photos[:40], embedder)
    cores = os.cpu_count() or 1
    ceiling = cores / (costs["model_cpu_seconds_per_image"] + decoding)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"  # exactly these photos (the cache folder may hold more)
        folder.mkdir()
        for photo in photos:
            (folder / photo.name).symlink_to(photo)
        started = time.perf_counter()
        options = IndexOptions(model=model, workers=args.workers)
        report = index_folders(Path(tmp) / "home", [str(folder)], options)
        wall = time.perf_counter() - started
    assert report.embedded == len(photos), report
    end_to_end = len(photos) / wall
    return {
        "runtime": report.runtime, "precision": report.precision,
        "forward_images_per_second": round(costs["forward_images_per_second"], 2),
        "model_cpu_ms_per_image": round(1000 * costs["model_cpu_seconds_per_image"], 1),
        "decode_cpu_ms_per_image": round(1000 * decoding, 1),
        "ceiling_images_per_second": round(ceiling, 2),
        "index_images_per_second": round(end_to_end, 2),
        "share_of_ceiling": round(end_to_end / ceiling, 3),
        "index_seconds": round(wall, 2),
        "model_gflop_per_image": None if flops is None else round(flops, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--model",
        default="effnet-lite0",
        help="effnet-lite0, or a Birder network run with random weights at --size",
    )
    parser.add_argument("--size", type=int, default=224, help="input size of a Birder network")
    parser.add_argument("--runtimes", default="torch,auto")
    parser.add_argument("--device", default="cpu", help="cpu, cuda (bench/gpu_check.sh)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    photos = make_photos(args.count, ROOT / "bench" / "out" / "photos")
    weights = None
    if args.model != "effnet-lite0":  # same compute as the real weights, nothing to download
        from tests.helpers import save_random_checkpoint

        folder = ROOT / "bench" / "out" / "weights" / f"{args.model}-{args.size}"
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / f"{args.model}_0.pt"
        if not weights.is_file():
            save_random_checkpoint(folder, args.model, args.size)
    runs = {name: measure(name, args, photos, weights) for name in args.runtimes.split(",")}
    megapixels = [_megapixels(p) for p in photos]
    out: dict[str, Any] = {
        "benchmark": "index_throughput", "model": args.model, "images": len(photos),
        "device": args.device,
        "megapixels": {"min": min(megapixels), "max": max(megapixels),
                       "mean": round(sum(megapixels) / len(megapixels), 2)},
        "batch_size": args.batch_size,
        "workers": args.workers if args.workers is not None else default_workers(),
        "runs": runs,
    }  # fmt: skip
    if "torch" in runs and "auto" in runs:
        out["default_over_torch_end_to_end"] = round(
            runs["auto"]["index_images_per_second"] / runs["torch"]["index_images_per_second"], 2
        )
    flops = next((r["model_gflop_per_image"] for r in runs.values() if r["model_gflop_per_image"]),
                 None)  # fmt: skip
    if flops and args.device == "cpu":
        # How close each runtime's forward pass comes to the cores' matrix-product rate: no
        # runtime can go faster than that in fp32.
        peak = gemm_gflops()
        out["gemm_gflops_per_second"] = round(peak, 1)
        for run in runs.values():
            run["forward_share_of_gemm_rate"] = round(
                run["forward_images_per_second"] * flops / peak, 3
            )
    out["machine"] = machine()
    print(json.dumps(out, indent=2))


def _megapixels(path: Path) -> float:
    with Image.open(path) as image:
        return round(image.width * image.height / 1e6, 2)


if __name__ == "__main__":
    main()
