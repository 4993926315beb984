"""The Ray engine against the local pipeline, on the same photos, in one run.

    python bench/distributed.py [--count 200] [--cpus 2]

Photo-sized JPEGs (bench/photos.py) are indexed with the default model twice into fresh
homes: by the local pipeline, then by `--engine ray` on a local Ray cluster of `--cpus` CPUs
(decoding tasks and one embedding actor). Ray's start-up is timed apart from the run.
Prints JSON: images/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from bench.photos import make_photos
from indexer.distributed import RayOptions, index_with_ray
from indexer.options import IndexOptions
from indexer.pipeline import index_folders
from indexer.scan import check_folders, scan

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    import ray

    photos = OUT / "photos"
    make_photos(args.count, photos)
    folder = tempfile.mkdtemp()
    for path in sorted(photos.glob("*.jpg"))[: args.count]:
        (Path(folder) / path.name).symlink_to(path)
    folders = check_folders([folder])
    files = list(scan(folders))  # symlinked files are followed: the photos themselves
    options = IndexOptions()
    with tempfile.TemporaryDirectory() as local_home, tempfile.TemporaryDirectory() as ray_home:
        local = index_folders(Path(local_home), folders, options)
        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - started
        remote = index_with_ray(Path(ray_home), files, folders, options, RayOptions())
        ray.shutdown()
    result = {
        "images": len(files),
        "model": local.model,
        "local_images_per_second": round(local.images_per_second, 2),
        "ray_images_per_second": round(remote.images_per_second, 2),
        "ray_over_local": round(remote.images_per_second / local.images_per_second, 3),
        "ray_start_seconds": round(ray_start, 1),
        "ray_cpus": args.cpus,
        "machine": machine(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
