"""Stage 2 of copy detection: which candidates are copies.

A candidate whose copy score reaches the model's `accept` threshold is a copy, unless local
features contradict it: both images have many keypoints and no similarity maps one onto the
other (two viewpoints of one wall score like copies). One in the uncertain band (from `reject`
up), and every candidate found through a regional view or a rotation, is a copy only if local
features verify it geometrically (search/copies/verify.py). A pair found through a view that
fails on whole frames is checked again against the matched region of the image that holds the
other, in a frame of its own (a corner crop is too small in its source's whole frame), when
that region's pixels look like the other image at all. An image no check joined to anything
gets a second look, in the region of another image whose pixels look most like it (a star
field's best view can name the wrong quadrant). Only candidates are verified, so the cost
follows them, not N^2.
Features of wholes and of regions are cached in the catalog by content hash (when this process
may write it), so a re-run verifies without decoding again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from indexer.decode import VIEW_BOXES
from search.copies.candidates import VIEW_REJECT, Candidates
from search.copies.verify import (
    FEATURES_VERSION,
    LOCAL_FEATURES,
    REGION_FEATURES,
    Features,
    in_whole_frame,
    likeliest_region,
    region_likeness,
    verify,
)
from search.per_content import Recipe
from search.records import Edge, Verification
from search.steps import SILENT, Steps
from search.workers import LOCAL, Workers
from store import ImageRecord

log = logging.getLogger("imgsearch.search")
MIRROR_FROM = 0.5  # a mirrored copy scores high globally: only such pairs try the mirror
# Pairs found through a view from this view score are checked against that region when their
# whole frames do not verify, if the whole looks at least REGION_LIKENESS like the region pixel
# for pixel (verify.region_likeness; a copy's crop 0.95-1.00). Tuned on bench/copydetect.py's
# development part: recall stayed the same for likeness floors from 0.0 to 0.5, and the
# region checks fell from 533 to 137 at 0.3 (the rest were other photos of a look-alike set).
REGION_FROM = 0.35
REGION_LIKENESS = 0.3
# An image no check has joined to any other gets a second look: its pairs found through a view
# from SECOND_LOOK_FROM, each in the region of the other image that looks most like it pixel for
# pixel (verify.region_likeness, at least SECOND_LOOK_LIKENESS; not the region already tried),
# the SECOND_LOOK_PAIRS likest. Tuned on bench/copydetect.py's development part.
SECOND_LOOK_FROM = 0.25
SECOND_LOOK_PAIRS = 2
SECOND_LOOK_LIKENESS = 0.7
# Pairs accepted by their score are checked too: one that fails although both images have
# this many keypoints (of verify.MAX_FEATURES) is refused (`contradicted`). Tuned on
# bench/copydetect.py's development part: true copies that failed had at most 97; two views of
# one graffiti wall, 549 and more.
RICH = 200
PARALLEL_PAIRS = 512
CHUNK_PAIRS = 128  # pairs a worker verifies per task


@dataclass(frozen=True)
class Thresholds:
    accept: float  # a copy score at least this is a copy (global, or with one image turned)
    reject: float  # below this (global, or turned), not a copy
    verify: bool = True  # check the band with local features
    # Candidates found through views: verified from this (candidates holds none below VIEW_REJECT)
    view_reject: float = VIEW_REJECT


# For each (recipe, records) asked, the features made from the records, by image id, and the
# paths that could not be read: local features of whole images or of one of their regions
# (search/per_content.py's per_contents, with the catalog's cache).
FeaturesFor = Callable[
    [Sequence[tuple[Recipe[Features], list[ImageRecord]]]],
    list[tuple[dict[int, Features], list[str]]],
]


@dataclass(frozen=True)
class Decided:
    edges: list[Edge]
    checked: int  # pairs verified with local features
    unreadable: list[str]  # files that could not be read again: their pairs stayed unverified
    feature_seconds: float
    verify_seconds: float
    candidate_recall: float | None = None  # Candidates.recall; None: no candidate join


def decide(
    candidates: Candidates,
    records: dict[int, ImageRecord],
    thresholds: Thresholds,
    features_for: FeaturesFor,
    steps: Steps = SILENT,
    workers: Workers = LOCAL,
) -> Decided:
    """The copies among `candidates` (records: by image id, for paths and hashes), verified
    on `workers`."""
    ids, pairs = candidates.ids, candidates.pairs
    best = np.maximum(candidates.score, candidates.turn_score)
    accepted = best >= thresholds.accept
    band = ~accepted & (
        (best >= thresholds.reject) | (candidates.view_score >= thresholds.view_reject)
    )
    if not thresholds.verify:
        edges = [_edge(candidates, int(m), None) for m in np.nonzero(accepted)[0]]
        return Decided(edges, 0, [], 0.0, 0.0, candidates.recall)
    checking = _Checking(records, features_for, steps, workers)
    checked = band | accepted  # every pair is checked: the band's to verify, the rest to contradict
    unreadable = checking.make({WHOLE: {int(ids[p]) for p in pairs[checked].ravel()}})
    for path in unreadable:
        log.warning("could not read %s again: its candidate pairs stay unverified", path)
    jobs = []
    for m in np.nonzero(checked)[0]:
        a, b = int(ids[pairs[m, 0]]), int(ids[pairs[m, 1]])
        jobs.append(Job(int(m), (a, WHOLE), (b, WHOLE), bool(best[m] >= MIRROR_FROM)))
    jobs, found = checking.run(jobs, "verifying candidate pairs")
    # A pair accepted by its score stands unless its pixels contradict it (two viewpoints of
    # one scene, two look-alike photos: `contradicted`); its edge stays a score's.
    refused = {
        j.row
        for j, c in zip(jobs, found, strict=True)
        if accepted[j.row] and contradicted(c, checking.features[j.a], checking.features[j.b])
    }
    seen = {j.row: c for j, c in zip(jobs, found, strict=True)}  # a score's edge keeps its tilt
    edges = [
        _edge(candidates, int(m), None, seen.get(int(m)))
        for m in np.nonzero(accepted)[0]
        if int(m) not in refused
    ]
    band_jobs = [(j, c) for j, c in zip(jobs, found, strict=True) if band[j.row]]
    edges += [_edge(candidates, j.row, c) for j, c in band_jobs if c.verified]
    failed = [j.row for j, c in band_jobs if not c.verified]
    edges += _in_regions(candidates, failed, checking)
    edges += _second_look(candidates, failed, edges, checking)
    return Decided(
        edges,
        len(jobs),
        unreadable,
        checking.feature_seconds,
        checking.verify_seconds,
        candidates.recall,
    )


def contradicted(check: Verification, a: Features, b: Features) -> bool:
    """Whether local features say that two images are not one picture: no similarity maps
    one onto the other although both have at least RICH keypoints to match. A copy too blurred,
    compressed or small to verify has few keypoints (bench/copydetect.py's development part:
    at most 97 in every true pair that failed); two viewpoints of one wall, or two photos
    taken side by side, have hundreds that match in parts or not at all."""
    return not check.verified and min(len(a.points), len(b.points)) >= RICH


def _in_regions(candidates: Candidates, rows: list[int], checking: _Checking) -> list[Edge]:
    """Pairs found through a regional view that did not verify on whole frames, checked again
    against that region of the image that holds it, in a frame of its own: a corner crop or a
    pasted thumbnail is a quarter of its container, too small in the container's whole frame
    to keep enough keypoints (bench/RESULTS.md)."""
    jobs = []
    for m in rows:
        if candidates.region[m] == 0 or candidates.view_score[m] < REGION_FROM:
            continue
        whole, holder, region = _sides(candidates, m)
        likeness = _likeness(checking, whole, holder)
        if likeness is not None and likeness[abs(region) - 1] >= REGION_LIKENESS:
            jobs.append(_region_job(candidates, m, abs(region) - 1))
    return _check_regions(candidates, jobs, checking, "verifying against regions")


def _second_look(
    candidates: Candidates, rows: list[int], edges: list[Edge], checking: _Checking
) -> list[Edge]:
    """Pairs found through a view that no check verified, of an image still joined to none,
    looked at again in the region of the other image that looks most like it: the region whose
    view scored best can be the wrong one in a star field or a texture, where a corner crop's
    pixels still say which quadrant it was cut from (bench/RESULTS.md)."""
    joined = {i for e in edges for i in (e.a, e.b)}
    mine: dict[int, list[tuple[float, Job]]] = {}  # an image's whole -> its tries, by likeness
    for m in rows:
        if candidates.region[m] == 0 or candidates.view_score[m] < SECOND_LOOK_FROM:
            continue
        whole, holder, region = _sides(candidates, m)
        if whole in joined or {(whole, WHOLE), (holder, WHOLE)} - checking.features.keys():
            continue  # joined, or unreadable
        # A view pair from REGION_FROM was tried in its region by _in_regions (or too unlike).
        skip = [abs(region) - 1] if candidates.view_score[m] >= REGION_FROM else []
        best, likeness = likeliest_region(
            checking.features[whole, WHOLE], checking.features[holder, WHOLE], skip
        )
        if likeness >= SECOND_LOOK_LIKENESS:
            mine.setdefault(whole, []).append((likeness, _region_job(candidates, m, best)))
    jobs = [
        job
        for tries in mine.values()
        for _, job in sorted(tries, key=lambda t: -t[0])[:SECOND_LOOK_PAIRS]
    ]
    return _check_regions(candidates, jobs, checking, "looking again in regions")


def _likeness(checking: _Checking, whole: int, holder: int) -> NDArray[np.float32] | None:
    """verify.region_likeness of two images' whole features; None when either is unreadable."""
    if {(whole, WHOLE), (holder, WHOLE)} - checking.features.keys():
        return None
    return region_likeness(checking.features[whole, WHOLE], checking.features[holder, WHOLE])


def _sides(candidates: Candidates, m: int) -> tuple[int, int, int]:
    """A view pair's (the image whose whole matched, the image holding it, Candidates.region)."""
    a, b = (int(candidates.ids[p]) for p in candidates.pairs[m])
    region = int(candidates.region[m])
    return (a, b, region) if region > 0 else (b, a, region)


def _region_job(candidates: Candidates, m: int, region: int) -> Job:
    """Candidate row m's whole image against region `region` of the image that holds it."""
    a, b = (int(candidates.ids[p]) for p in candidates.pairs[m])
    # Candidates.region > 0: b holds a's whole; < 0: a holds b's.
    return (
        Job(m, (a, WHOLE), (b, region))
        if candidates.region[m] > 0
        else Job(m, (a, region), (b, WHOLE))
    )


def _check_regions(
    candidates: Candidates, jobs: list[Job], checking: _Checking, name: str
) -> list[Edge]:
    """The edges among region jobs, their checks given in whole frames."""
    holders: dict[int, set[int]] = {}  # region -> the images whose region is needed
    for key in (k for j in jobs for k in (j.a, j.b) if k[1] != WHOLE):
        holders.setdefault(key[1], set()).add(key[0])
    checking.make(holders)
    jobs, found = checking.run(jobs, name)
    edges = []
    for job, check in zip(jobs, found, strict=True):
        in_b = job.b[1] != WHOLE
        whole_frame = in_whole_frame(check, VIEW_BOXES[job.b[1] if in_b else job.a[1]], in_b)
        if whole_frame.verified:
            edges.append(_edge(candidates, job.row, whole_frame))
    return edges


Key = tuple[int, int]  # (image id, its region; WHOLE for the whole image)
WHOLE = -1
_RECIPES = {WHOLE: LOCAL_FEATURES, **dict(enumerate(REGION_FEATURES))}


@dataclass(frozen=True)
class Job:
    row: int  # candidate row
    a: Key
    b: Key
    mirror: bool = False  # try b's mirror image when the pair fails


class _Checking:
    """Features made so far, by (image id, region), and the seconds spent making them and
    verifying with them."""

    def __init__(
        self,
        records: dict[int, ImageRecord],
        features_for: FeaturesFor,
        steps: Steps,
        workers: Workers,
    ) -> None:
        self.records, self.features_for, self.steps = records, features_for, steps
        self.workers = workers
        self.features: dict[Key, Features] = {}
        self.feature_seconds = self.verify_seconds = 0.0

    def make(self, wanted: dict[int, set[int]]) -> list[str]:
        """Features of images by region (WHOLE: of the whole images), made at once; the paths
        that could not be read."""
        wanted = {region: ids for region, ids in sorted(wanted.items()) if ids}
        if not wanted:
            return []
        started = time.perf_counter()
        orders = [
            (_RECIPES[region], [self.records[i] for i in sorted(ids)])
            for region, ids in wanted.items()
        ]
        unreadable: list[str] = []
        for region, (made, lost) in zip(wanted, self.features_for(orders), strict=True):
            self.features.update({(i, region): f for i, f in made.items()})
            unreadable += lost
        self.feature_seconds += time.perf_counter() - started
        return unreadable

    def run(self, jobs: list[Job], name: str) -> tuple[list[Job], list[Verification]]:
        """The jobs whose features could be made, and their checks."""
        jobs = [j for j in jobs if j.a in self.features and j.b in self.features]
        started = time.perf_counter()
        found = _run(jobs, self.features, name, self.steps, self.workers) if jobs else []
        self.verify_seconds += time.perf_counter() - started
        return jobs, found


def _run(
    jobs: list[Job], features: dict[Key, Features], name: str, steps: Steps, workers: Workers
) -> list[Verification]:
    """Verify every job, in parallel: in chunks of CHUNK_PAIRS, on one BLAS thread each (the
    workers fill the cores, as for OpenCV: verify.opencv), `features` shared by all (read
    copy-on-write by forked processes, sent once to a cluster)."""
    if len(jobs) < PARALLEL_PAIRS:
        chunks = [jobs]
    else:
        chunks = [jobs[i : i + CHUNK_PAIRS] for i in range(0, len(jobs), CHUNK_PAIRS)]
    found: list[list[Verification]] = [[] for _ in chunks]
    with steps.step(name, len(jobs)) as advance:
        for at, checks in workers.map_with(_verify_chunk, features, chunks, spread=True):
            found[at] = checks
            advance(len(checks))
    return [check for part in found for check in part]


def _verify_chunk(features: dict[Key, Features], jobs: list[Job]) -> list[Verification]:
    found = []
    for job in jobs:
        check = verify(features[job.a], features[job.b])
        if not check.verified and job.mirror:  # a mirrored copy
            flipped = verify(features[job.a], features[job.b].mirrored(), mirrored=True)
            check = flipped if flipped.inliers > check.inliers else check
        found.append(check)
    return found


def _edge(
    candidates: Candidates, m: int, check: Verification | None, seen: Verification | None = None
) -> Edge:
    """Candidate m as an accepted pair: verified by `check` (None: by its score, `seen` the
    check it also got, for its tilt)."""
    a, b = candidates.pairs[m]
    scored_tilt = seen.tilt if check is None and seen is not None else None
    return Edge(
        int(candidates.ids[a]),
        int(candidates.ids[b]),
        max(float(candidates.score[m]), float(candidates.turn_score[m])),
        float(candidates.cosine[m]),
        int(candidates.angle[m]),
        check,
        scored_tilt,
    )


__all__ = ["FEATURES_VERSION", "Decided", "Edge", "FeaturesFor", "Thresholds", "decide"]
