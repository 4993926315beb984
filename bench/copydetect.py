"""Copy detection on a copydays-style set: what plain `imgsearch dupes` and `query` find.

    bash ../shared/data/devphotos/fetch.sh ~/devphotos
    python bench/copyset.py --photos ~/devphotos --out ~/copyset        # once
    python bench/copydetect.py --set ~/copyset --split heldout           # the reported part
    python bench/copydetect.py --set ~/copyset --split dev               # what was tuned on
    python bench/copydetect.py --set ~/copyset --split dev --model sscd --sweep 0.4,0.5,0.6,0.7

Indexes the split with the default model (as `imgsearch index` does), runs duplicate finding
with the default options (as plain `imgsearch dupes`), and prints JSON: pair precision and
recall over the groups, recall per edit (the original and its edit in one group), the same
with `--rotations`, how often the original is the kept copy (per edit of the copies it beat),
query top-1 for each indexed copy (`query --path`) and for each copy queried from outside an
index of originals and distractors (`query IMAGE`), the seconds each step took, and the same
`dupes` on small collections drawn from the split (about 100 files, each indexed alone:
density normalisation has fewer neighbours to go by there). To calibrate another model's
copy thresholds (its card's `copy_accept` and `copy_density_floor`), sweep them on the dev split
and check the choice on the held-out one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.copyset import ROTATIONS, Row, read_labels
from bench.machine import machine
from indexer.options import IndexOptions, ModelOptions
from indexer.pipeline import index_folders
from search.copies.dupes import DupeOptions, Found, find_duplicates
from search.query import QueryOptions, by_images, by_path
from search.records import Edge
from store import ImageRecord, Store

# Copies a person cannot tell from the original (the issue: "either may be kept").
EQUIVALENT = ("hflip", "exif-orientation")


def _originals(files: list[ImageRecord], rows: dict[str, Row]) -> list[ImageRecord]:
    return [f for f in files if rows[Path(f.path).name].edit == "original"]


def pair_scores(found: Found, rows: dict[str, Row], skip_rotated: bool) -> dict[str, Any]:
    """Pair precision and recall over the groups, recall per edit, keeper of the original."""
    label = {}
    for number, group in enumerate(found.groups):
        for record in [group.keep, *(m.record for m in group.members)]:
            label[Path(record.path).name] = number
    names = sorted(rows)
    source = np.array([rows[n].source for n in names])
    group = np.array([rows[n].group for n in names])
    edit = np.array([rows[n].edit for n in names])
    found_in = np.array([label.get(n, -1) for n in names])
    upper = np.triu(np.ones((len(names), len(names)), dtype=bool), 1)
    same = (found_in[:, None] == found_in[None, :]) & (found_in[:, None] >= 0) & upper
    turned = np.isin(edit, ROTATIONS)
    positive = (source[:, None] == source[None, :]) & (source[:, None] != "") & upper
    if skip_rotated:
        positive &= ~turned[:, None] & ~turned[None, :]
    negative = (group[:, None] != group[None, :]) & upper
    canvas = np.array([rows[n].canvas for n in names])  # composites on one background
    negative &= ~((canvas[:, None] == canvas[None, :]) & (canvas[:, None] != ""))
    tp, fp = int((same & positive).sum()), int((same & negative).sum())
    per_edit: dict[str, float] = {}
    original = {rows[n].source: i for i, n in enumerate(names) if rows[n].edit == "original"}
    for kind in sorted(set(edit) - {"original", "distractor"}):
        hits = [found_in[i] >= 0 and found_in[i] == found_in[original[source[i]]]
                for i in np.nonzero(edit == kind)[0]]  # fmt: skip
        per_edit[kind] = round(float(np.mean(hits)), 3)
    kept, same, beaten, with_original = 0, 0, Counter(), 0
    by_edit: dict[str, list[bool]] = defaultdict(list)
    by_format: dict[str, list[bool]] = defaultdict(list)
    for g in found.groups:
        files = g.files
        originals = _originals(files, rows)
        if not originals:
            continue
        with_original += 1
        kept_edit = rows[Path(g.keep.path).name].edit
        if kept_edit == "original":
            kept += 1
        elif kept_edit in EQUIVALENT:
            same += 1
        else:
            beaten[kept_edit] += 1
        right = kept_edit == "original" or kept_edit in EQUIVALENT
        by_format[Path(originals[0].path).suffix.lower()].append(right)
        for kind in {rows[Path(f.path).name].edit for f in files} - {"original", "distractor"}:
            by_edit[kind].append(right)
    return {
        "precision": round(tp / max(1, tp + fp), 4),
        "recall": round(tp / max(1, int(positive.sum())), 4),
        "true_pairs": tp, "false_pairs": fp, "per_edit": per_edit,
        "groups": len(found.groups), "original_kept": f"{kept}/{with_original}",
        "original_or_equivalent_kept": f"{kept + same}/{with_original}",
        "kept_instead_of_original": dict(beaten.most_common()),
        # Of the groups holding the original and a copy of this kind (or an original of this
        # format): how many keep the original or a copy a person cannot tell from it.
        "keeper_by_edit": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by_edit.items())},
        "keeper_by_format": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by_format.items())},
        **_mixed(found, rows),
    }  # fmt: skip


SUBGROUP_DRAWS = 12  # random sub-groups drawn from each group that holds an original


def keeper_subgroups(
    store: Store, found: Found, rows: dict[str, Row], seed: int = 0
) -> dict[str, Any]:
    """The keeper on random sub-groups of every found group that holds an original and three
    or more of its copies: the original and 2-6 of them, with the pairs found between them. A
    collection holds some copies of a picture and not others; a rule that keeps the original
    in the whole group only thanks to which copies happen to be there shows here (the copy
    that won instead, per edit kind)."""
    from search.keeper.best import chooser

    rng = np.random.RandomState(seed)
    draws: list[tuple[list[ImageRecord], list[Edge]]] = []
    for g in found.groups:
        files = g.files
        originals = _originals(files, rows)
        if not originals:
            continue
        source = rows[Path(originals[0].path).name].source
        copies = [f for f in files if rows[Path(f.path).name].source == source
                  and rows[Path(f.path).name].edit != "original"]  # fmt: skip
        if len(copies) < 3:
            continue
        for _ in range(SUBGROUP_DRAWS):
            count = int(rng.randint(2, min(6, len(copies)) + 1))
            chosen = [copies[i] for i in rng.choice(len(copies), count, replace=False)]
            ids = {f.id for f in [originals[0], *chosen]}
            draws.append(([originals[0], *chosen], [e for e in g.edges if {e.a, e.b} <= ids]))
    wanted = sorted({f.id for files, _ in draws for f in files})
    ids, vectors = store.catalog.vectors(wanted)
    row = {int(i): n for n, i in enumerate(ids)}

    def similarity(a: ImageRecord, b: ImageRecord) -> float:
        return float(vectors[row[a.id]] @ vectors[row[b.id]])

    choose = chooser(similarity)
    instead: Counter[str] = Counter()
    for files, edges in draws:
        kept_edit = rows[Path(choose(files, edges)[0].path).name].edit
        if kept_edit != "original" and kept_edit not in EQUIVALENT:
            instead[kept_edit] += 1
    return {"trials": len(draws), "original_or_equivalent_kept": len(draws) - sum(instead.values()),
            "kept_instead": dict(instead.most_common())}  # fmt: skip


def _mixed(found: Found, rows: dict[str, Row]) -> dict[str, Any]:
    """Groups holding copies of two originals: of two scenes (never right), or two photos of
    one scene (two viewpoints, in the set's scene groups)."""
    mixed: list[list[str]] = []
    scenes: list[list[str]] = []
    for g in found.groups:
        files = [rows[Path(r.path).name] for r in g.files]
        sources = {r.source: r.group for r in files if r.source}
        if len(sources) < 2:
            continue
        names = sorted(Path(r.path).name for r in g.files)
        (mixed if len(set(sources.values())) > 1 else scenes).append(names[:6])
    return {"groups_of_two_originals": len(mixed), "groups_of_one_scene_two_views": len(scenes),
            "two_originals_examples": mixed[:3]}  # fmt: skip


def query_scores(store: Store, folder: Path, rows: dict[str, Row]) -> dict[str, Any]:
    """Top-1 of `query --path` for every indexed copy (itself excluded)."""
    per_edit: dict[str, list[bool]] = defaultdict(list)
    for name, row in rows.items():
        if row.edit in ("original", "distractor"):
            continue
        result = by_path(store, str(folder / name), QueryOptions(k=1))
        top = Path(result.matches[0].record.path).name if result.matches else ""
        per_edit[row.edit].append(rows[top].source == row.source if top in rows else False)
    return _top1(per_edit)


def outside_scores(home: Path, folder: Path, rows: dict[str, Row]) -> dict[str, Any]:
    """Top-1 of `query IMAGE` for each copy against an index that does not hold it."""
    copies = [n for n, r in rows.items() if r.edit not in ("original", "distractor")]
    per_edit: dict[str, list[bool]] = defaultdict(list)
    with Store.open(home) as store:
        results = by_images(store, [str(folder / n) for n in copies], QueryOptions(k=1))
    for name, result in zip(copies, results, strict=True):
        top = Path(result.matches[0].record.path).name if result.matches else ""
        per_edit[rows[name].edit].append(rows[top].source == rows[name].source
                                         if top in rows else False)  # fmt: skip
    return _top1(per_edit)


def _top1(per_edit: dict[str, list[bool]]) -> dict[str, Any]:
    every = [hit for hits in per_edit.values() for hit in hits]
    upright = [hit for kind, hits in per_edit.items() if kind not in ROTATIONS for hit in hits]
    return {
        "top1": round(float(np.mean(every)), 4),
        "top1_not_turned": round(float(np.mean(upright)), 4),
        "per_edit": {k: round(float(np.mean(v)), 3) for k, v in sorted(per_edit.items())},
    }


def small_collections(folder: Path, rows: dict[str, Row], count: int, seed: int,
                      indexing: IndexOptions) -> dict[str, Any]:  # fmt: skip
    """Plain `dupes` on `count` small collections drawn from the split (a folder a person
    keeps: 8 originals with their copies and 30 distractors, about 100 files), each indexed on
    its own: pooled pair precision and recall, and the false pairs in each."""
    import os
    import random

    rng = random.Random(seed)
    originals = sorted({r.source for r in rows.values() if r.source})
    distractors = sorted(n for n, r in rows.items() if r.edit == "distractor")
    found = []
    for number in range(count):
        picked = set(rng.sample(originals, min(8, len(originals))))
        names = [n for n, r in rows.items() if r.source in picked]
        names += rng.sample(distractors, min(30, len(distractors)))
        with tempfile.TemporaryDirectory() as tmp:
            files = Path(tmp) / f"small-{number}"
            files.mkdir()
            for name in names:
                os.symlink(folder / name, files / name)
            index_folders(Path(tmp) / "home", [str(files)], indexing)
            with Store.open(Path(tmp) / "home") as store:
                groups = find_duplicates(store, DupeOptions())
        found.append(pair_scores(groups, {n: rows[n] for n in names}, skip_rotated=True))
    true = sum(f["true_pairs"] for f in found)
    false = sum(f["false_pairs"] for f in found)
    return {"collections": count, "files_each": len(names),
            "precision": round(true / max(1, true + false), 4),
            "recall_mean": round(float(np.mean([f["recall"] for f in found])), 4),
            "false_pairs_each": [f["false_pairs"] for f in found]}  # fmt: skip


def cache_sizes(catalog: Path, images: int) -> dict[str, dict[str, int]]:
    """What `dupes` cached by content: how many contents, bytes each, bytes per indexed image."""
    import sqlite3

    with sqlite3.connect(catalog) as db:
        rows = db.execute("SELECT kind, count(*), sum(length(data)) FROM content_cache "
                          "GROUP BY kind").fetchall()  # fmt: skip
    return {
        kind: {"contents": n, "bytes_each": round(total / n), "per_image": round(total / images)}
        for kind, n, total in rows
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", type=Path, required=True, help="bench/copyset.py's --out")
    parser.add_argument("--split", choices=["dev", "heldout"], default="heldout")
    parser.add_argument("--home", type=Path, help="reuse this index home (default: a new one)")
    parser.add_argument("--no-outside", action="store_true", help="skip the outside queries")
    parser.add_argument(
        "--subsets", type=int, default=10, help="small collections, each indexed alone (0: none)"
    )
    parser.add_argument("--model", help="another backbone (default: the default model)")
    parser.add_argument("--weights", type=Path, help="its checkpoint, if not in the cache")
    parser.add_argument(
        "--sweep",
        help="calibration: copy thresholds to try, e.g. 0.5,0.6,0.7 (pair precision and "
        "recall at each, the uncertain band verified)",
    )
    args = parser.parse_args()
    indexing = IndexOptions(model=ModelOptions(args.model, args.weights))
    folder = args.set / args.split
    rows = {r.name: r for r in read_labels(folder)}
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        started = time.perf_counter()
        report = index_folders(home, [str(folder)], indexing)
        index_seconds = time.perf_counter() - started
        out: dict[str, Any] = {"benchmark": "copydetect", "split": args.split,
                               "images": len(rows), "index_seconds": round(index_seconds, 1),
                               "index_report": {"added": report.added, "failed": len(report.failed),
                                                "failed_files": [str(f)[:200] for f in
                                                                 report.failed[:5]],
                                                "runtime": report.runtime}}  # fmt: skip
        catalog = home / "catalog.sqlite"
        out["store_bytes_per_image"] = round(
            sum(p.stat().st_size for p in home.iterdir() if p.is_file()) / len(rows)
        )
        out["catalog_bytes_per_image"] = round(catalog.stat().st_size / len(rows))
        with Store.open(home) as store:
            for name, options in (("dupes", DupeOptions()),
                                  ("dupes_rotations", DupeOptions(rotations=True))):  # fmt: skip
                started = time.perf_counter()
                found = find_duplicates(store, options)
                seconds = time.perf_counter() - started
                scores = pair_scores(found, rows, skip_rotated=not options.rotations)
                if not options.rotations:
                    scores["keeper_subgroups"] = keeper_subgroups(store, found, rows)
                again = time.perf_counter()
                find_duplicates(store, replace(options))  # the cached pairs
                out[name] = {**scores, "threshold": found.threshold,
                             "verified_pairs": found.checked, "seconds": round(seconds, 1),
                             "features_seconds": round(found.feature_seconds, 1),
                             "verify_ms_per_pair": round(1000 * found.verify_seconds
                                                         / max(1, found.checked), 2),
                             "seconds_again": round(time.perf_counter() - again, 2)}  # fmt: skip
            out["query_path"] = query_scores(store, folder, rows)
            for value in [float(v) for v in args.sweep.split(",")] if args.sweep else []:
                found = find_duplicates(store, DupeOptions(copy_threshold=value))
                scores = pair_scores(found, rows, skip_rotated=True)
                out.setdefault("sweep", {})[str(value)] = {
                    k: scores[k] for k in ("precision", "recall", "false_pairs")
                }
        out["content_cache"] = cache_sizes(catalog, len(rows))
        if not args.no_outside:
            outside = Path(tmp) / "outside"
            outside.mkdir()
            for name, row in rows.items():
                if row.edit in ("original", "distractor"):
                    (outside / name).symlink_to(folder / name)
            index_folders(Path(tmp) / "outside-home", [str(outside)], indexing)
            started = time.perf_counter()
            out["query_outside"] = outside_scores(Path(tmp) / "outside-home", folder, rows)
            out["query_outside"]["seconds"] = round(time.perf_counter() - started, 1)
    if args.subsets:
        out["small_collections"] = small_collections(folder, rows, args.subsets, 1, indexing)
    out["machine"] = machine()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
