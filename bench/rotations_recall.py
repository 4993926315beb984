"""Recall of `dupes --rotations` on real photos turned by 90, 180 or 270 degrees.

    python bench/rotations_recall.py --photos ~/devphotos [--model effnet-lite0]

Each general photo of the dev corpus (fetch.sh) gets one turned JPEG copy (q90; the angle
cycles through 90/180/270). Prints JSON: the share of turned copies grouped with their original,
with and without --rotations, at the model's default threshold.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine
from indexer.decode import to_rgb
from indexer.options import IndexOptions, ModelChoice
from indexer.pipeline import index_folders
from search.dupes import DupeOptions, find_duplicates
from store import Store

TURNS = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--model", default="effnet-lite0")
    args = parser.parse_args()
    with open(args.photos / "manifest.csv", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["domain"] == "photos"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "set"
        folder.mkdir()
        for n, row in enumerate(rows):
            image = to_rgb(ImageOps.exif_transpose(Image.open(args.photos / row["relpath"])))
            image.save(folder / f"{n:04}-original.png")
            image.transpose(TURNS[n % 3]).save(folder / f"{n:04}-turned.jpg", quality=90)
        home = Path(tmp) / "home"
        index_folders(home, [str(folder)], IndexOptions(model=ModelChoice(args.model)))
        result = {}
        with Store.open(home) as store:
            for label, rotations in (("without_rotations", False), ("with_rotations", True)):
                threshold, groups = find_duplicates(store, DupeOptions(rotations=rotations))
                found = 0
                for group in groups:
                    names = [Path(group.keep.path).name] + [
                        Path(m.record.path).name for m in group.members
                    ]
                    stems = {name.split("-")[0] for name in names}
                    found += sum(
                        1
                        for s in stems
                        if f"{s}-original.png" in names and f"{s}-turned.jpg" in names
                    )
                result[label] = round(found / len(rows), 4)
    report = {"benchmark": "rotations_recall", "model": args.model, "photos": len(rows),
              "threshold": threshold, "recall": result, "machine": machine()}  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
