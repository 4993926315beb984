"""Geometric verification of a candidate pair with local features (OpenCV SIFT + RANSAC).

Each image is read again, turned upright, made grey and scaled so that its longer side is
FEATURE_SIDE pixels (small images are scaled up, so a quarter-size copy still has features).
Flat regions connected to the border (letterboxing, the black corners of a tilted copy, the
plain background of a cut-out or a pasted canvas) are masked out: their edges look the same in
every image that has them and would match across unrelated pictures. SIFT is rotation and scale
invariant, so turned, resized, cropped and pasted copies verify; a mirrored copy is tried
against the mirror of the other image's features (`Features.mirrored`: no second read).

A pair is verified when a similarity transform (rotation, scale, shift) maps at least
MIN_INLIERS distinct keypoints of one image onto the other, the scale is plausible, and the
inliers cover at least MIN_COVERAGE of one of the two images (a shared logo or caption band
covers little of either). Measured on bench/copydetect.py's development part: no false pair
among 13,202 verified negatives.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
from numpy.typing import NDArray

from indexer.decode import VIEW_BOXES, Box, box_pixels, upright_rgb
from search.per_content import Recipe
from search.pixels import content_mask, opencv, seam
from search.records import CONTAINS, MIN_COVERAGE, MIN_INLIERS, Verification

FEATURE_SIDE = 256
MAX_FEATURES = 600
RATIO = 0.8  # Lowe's ratio test
MAX_SCALE = 12.0
FEATURES_VERSION = 3  # of what `Features.to_bytes` holds: cached rows of another are recomputed
THUMB_SHRINK = 4  # Features.thumb: the frame at a quarter of its size
LIKENESS_SIDE = 16  # region_likeness compares pixels on this grid


@dataclass(frozen=True)
class Features:
    """An image's keypoints (n, 2) float32 in a FEATURE_SIDE frame and descriptors (n, 128),
    and the frame itself at 1/THUMB_SHRINK of its size (for region_likeness)."""

    points: NDArray[np.float32]
    descriptors: NDArray[np.float32]
    shape: tuple[int, int]  # (height, width) of the frame
    thumb: NDArray[np.uint8] = field(default_factory=lambda: np.zeros((0, 0), np.uint8))

    def mirrored(self) -> Features:
        """The features of the image's mirror, without reading it again: SIFT mirrors with it.
        A keypoint moves to the mirrored place, and its descriptor's 4 x 4 grid of cells
        (laid out along the keypoint's orientation) flips along the orientation's normal, with
        each cell's 8 gradient directions negated. On development photos these descriptors
        are within 16 % (L2) of those SIFT finds in the mirror image."""
        points = self.points.copy()
        points[:, 0] = self.shape[1] - 1 - points[:, 0]
        return Features(
            points,
            self.descriptors[:, _MIRROR_ORDER],
            self.shape,
            np.ascontiguousarray(self.thumb[:, ::-1]),
        )

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            points=self.points,
            descriptors=self.descriptors.astype(np.uint8),
            shape=np.array(self.shape),
            thumb=self.thumb,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        with np.load(io.BytesIO(data)) as stored:
            return cls(
                stored["points"],
                stored["descriptors"].astype(np.float32),
                (int(stored["shape"][0]), int(stored["shape"][1])),
                stored["thumb"],
            )


# Where each of a SIFT descriptor's 128 values (4 rows x 4 columns x 8 directions) comes from in
# the mirror image's descriptor: rows reversed, directions negated.
_MIRROR_ORDER = np.arange(128).reshape(4, 4, 8)[::-1][:, :, (-np.arange(8)) % 8].ravel()
NO_MATCH = Verification(0, 0.0, 0.0, 1.0, False)


def grey_frame(path: str, box: Box | None = None) -> NDArray[np.uint8]:
    """The image (or its region `box`) as verification sees it. Raises OSError or PIL's errors
    when unreadable."""
    from PIL import Image

    with Image.open(path) as source:
        if source.format == "JPEG":
            wanted = FEATURE_SIDE if box is None else FEATURE_SIDE / _box_side(box)
            source.draft("RGB", (round(wanted), round(wanted)))
        grey = upright_rgb(source).convert("L")
    if box is not None:
        grey = grey.crop(box_pixels(box, grey.width, grey.height))
    scale = FEATURE_SIDE / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    grey = grey.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(grey, dtype=np.uint8)


def features_or_none(path: str, box: Box | None = None) -> Features | None:
    """Local features of an image file, None when it cannot be read (moved, changed, broken)."""
    try:
        return features_of(path, box)
    except Exception:  # PIL and OpenCV raise many kinds for a changed or broken file
        return None


def features_of(path: str, box: Box | None = None) -> Features:
    """Local features of an image file (or of its region `box`, in a frame of its own).
    Raises OSError (or PIL's errors) when unreadable."""
    cv2 = opencv()

    grey = grey_frame(path, box)
    sift = cv2.SIFT_create(nfeatures=MAX_FEATURES, contrastThreshold=0.03)
    keypoints, descriptors = sift.detectAndCompute(grey, content_mask(grey))
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    if descriptors is None:
        descriptors = np.zeros((0, 128), dtype=np.float32)
    height, width = grey.shape
    size = (max(1, width // THUMB_SHRINK), max(1, height // THUMB_SHRINK))
    thumb = np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return Features(points, descriptors.astype(np.float32), (height, width), thumb)


def likeliest_region(
    whole: Features, holder: Features, skip: Collection[int] = ()
) -> tuple[int, float]:
    """The region of `holder` (of VIEW_BOXES) whose pixels look most like `whole`, leaving out
    the regions in `skip`, and its likeness (-inf when all are left out): where a second look
    goes, in `dupes` (copies/decide.py) and in a query (copies/rerank.py) alike."""
    likeness = region_likeness(whole, holder)
    for region in skip:
        likeness[region] = -np.inf
    best = int(np.argmax(likeness))
    return best, float(likeness[best])


def region_likeness(whole: Features, holder: Features) -> NDArray[np.float32]:
    """How much each of holder's regions (indexer.decode.VIEW_BOXES) looks like whole, pixel
    for pixel: the normalised correlation of the two at LIKENESS_SIDE x LIKENESS_SIDE, from -1
    to 1 (0 where either is flat). A crop of a photo correlates near 1 with the region it was
    cut from, where an embedding may rank another region of a star field or a texture first;
    it says where to look, local features decide."""
    cv2 = opencv()

    def grid(image: NDArray[np.uint8], box: Box | None = None) -> NDArray[np.float32]:
        if image.size == 0:
            return np.zeros(LIKENESS_SIDE**2, np.float32)
        if box is not None:
            left, top, right, bottom = box_pixels(box, image.shape[1], image.shape[0])
            image = image[top:bottom, left:right]
        side = (LIKENESS_SIDE, LIKENESS_SIDE)
        cells = np.asarray(cv2.resize(image, side, interpolation=cv2.INTER_AREA), np.float32)
        cells = cells.ravel() - cells.mean()
        norm = float(np.linalg.norm(cells))
        return cells / norm if norm > 1e-3 else np.zeros_like(cells)

    mine = grid(whole.thumb)
    return np.array([mine @ grid(holder.thumb, box) for box in VIEW_BOXES], dtype=np.float32)


def verify(a: Features, b: Features, mirrored: bool = False) -> Verification:
    """Whether a similarity transform maps enough of a's keypoints onto b's."""
    return judge(fit(a, b), a, b, mirrored)


def judge(found: Fit | None, a: Features, b: Features, mirrored: bool = False) -> Verification:
    """What a fit between a and b (b: the mirror image when `mirrored`) amounts to."""
    if found is None:
        return NO_MATCH
    scale = float(np.sqrt(abs(np.linalg.det(found.transform[:, :2]))))
    if not 1 / MAX_SCALE < scale < MAX_SCALE:
        return NO_MATCH
    # SIFT repeats a point at several orientations: count distinct places, in both images.
    distinct = min(_places(found.src), _places(found.dst))
    cover_a, cover_b = _coverage(found.src, a.shape), _coverage(found.dst, b.shape)
    # How sharply the one frame is cut into the other: asked of a frame that contains the other.
    seam_a = _seam(b.shape, _inverse(found.transform), a) if cover_a <= CONTAINS * cover_b else 0.0
    seam_b = _seam(a.shape, found.transform, b) if cover_b <= CONTAINS * cover_a else 0.0
    turn = float(np.degrees(np.arctan2(found.transform[1, 0], found.transform[0, 0])))
    return Verification(
        distinct, cover_a, cover_b, scale, mirrored, seam_a=seam_a, seam_b=seam_b, turn=turn
    )


def _inverse(transform: NDArray[np.float64]) -> NDArray[np.float64]:
    """The inverse of a 2 x 3 similarity transform."""
    return np.asarray(opencv().invertAffineTransform(transform), dtype=np.float64)


def _seam(shape: tuple[int, int], transform: NDArray[np.float64], holder: Features) -> float:
    """How sharply a frame of `shape` (height, width), mapped by `transform` into holder's
    frame, is cut into holder's pixels (search.pixels.seam, on holder's thumb)."""
    if holder.thumb.size == 0:
        return 0.0
    height, width = shape
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    mapped = corners @ transform[:, :2].T + transform[:, 2]
    return seam(holder.thumb, mapped / THUMB_SHRINK)


@dataclass(frozen=True)
class Fit:
    """The transform RANSAC found from a's frame to b's, and the keypoints that agree with it."""

    src: NDArray[np.float32]  # (n, 2) inliers in a's frame
    dst: NDArray[np.float32]  # (n, 2) where they are in b's
    transform: NDArray[np.float64]  # 2 x 3: a's frame to b's


def fit(a: Features, b: Features) -> Fit | None:
    """The similarity transform that maps most of a's matched keypoints onto b's, or None when
    there are too few matches to verify."""
    cv2 = opencv()

    if len(a.descriptors) < 4 or len(b.descriptors) < 4:
        return None
    query, train = matches(a.descriptors, b.descriptors)
    if len(query) < max(4, MIN_INLIERS):  # too few to verify, whatever RANSAC keeps
        return None
    src, dst = a.points[query], b.points[train]
    transform, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=5.0, maxIters=2000
    )
    if transform is None or inliers is None:
        return None
    keep = inliers.ravel().astype(bool)
    return Fit(src[keep], dst[keep], np.asarray(transform, dtype=np.float64))


def matches(
    a: NDArray[np.float32], b: NDArray[np.float32]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Lowe's ratio test between descriptors a (n, 128) and b (m, 128), m >= 2, with at most
    one match per keypoint of b (its closest): (rows of a, rows of b). One matrix product:
    OpenCV's knnMatch gave the same matches at 3x the time (1.33 against 0.45 ms for dev's
    pairs), most of it spent making a Python object per match."""
    distance = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :]
    distance -= 2 * (a @ b.T)
    rows = np.arange(len(a))
    nearest = np.argmin(distance, axis=1)
    first = distance[rows, nearest]
    distance[rows, nearest] = np.inf
    second = distance.min(axis=1)
    # Squared distances: d1 < RATIO * d2 is d1^2 < RATIO^2 * d2^2.
    good = np.maximum(first, 0) < RATIO**2 * np.maximum(second, 0)
    query, train, closeness = rows[good], nearest[good], first[good]
    order = np.lexsort((closeness, train))  # by keypoint of b, closest first
    once = np.ones(len(order), dtype=bool)
    once[1:] = train[order][1:] != train[order][:-1]
    return query[order][once], train[order][once]


def _places(points: NDArray[np.float32]) -> int:
    """Distinct 3-pixel cells holding these points."""
    cells = np.floor_divide(points.astype(np.int64), 3)
    return len(np.unique(cells[:, 0] * (1 << 20) + cells[:, 1]))  # 1-d: 5x np.unique(axis=0)


def _coverage(points: NDArray[np.float32], shape: tuple[int, int]) -> float:
    cv2 = opencv()

    if len(points) < 3:
        return 0.0
    hull = cv2.convexHull(points.astype(np.float32))
    return float(cv2.contourArea(hull)) / float(shape[0] * shape[1])


def in_whole_frame(check: Verification, box: Box, b_holds: bool) -> Verification:
    """A check made against one image's region `box` (b's when `b_holds`, else a's), as if
    made against that image's whole frame: the region covers box-area of it, and its frame
    shows the region's longer side where the whole frame shows the image's. NO_MATCH unless
    the match covers MIN_COVERAGE of the region itself (bench/copydetect.py's development
    part: false matches against a region covered under 2 % of it, true ones 10 % or more)."""
    if not check.verified or (check.coverage_b if b_holds else check.coverage_a) < MIN_COVERAGE:
        return NO_MATCH
    area = (box[2] - box[0]) * (box[3] - box[1])
    side = _box_side(box)
    if b_holds:
        return replace(
            check, coverage_b=check.coverage_b * area, scale=check.scale * side, in_region=True
        )
    return replace(
        check, coverage_a=check.coverage_a * area, scale=check.scale / side, in_region=True
    )


def _box_side(box: Box) -> float:
    """The region's longer side over the image's (its boxes are as wide as they are tall, as
    fractions: the same for every image)."""
    return max(box[2] - box[0], box[3] - box[1])


# Cached by content in the catalog (search/per_content.py): an image's features, and those of
# each of its regional views (made only for the images a copy was found in through one).
LOCAL_FEATURES = Recipe(
    "local_features",
    "reading local features",
    FEATURES_VERSION,
    features_or_none,
    Features.to_bytes,
    Features.from_bytes,
)
REGION_FEATURES = tuple(
    Recipe(
        f"local_features_view{r}",
        "reading local features of regions",
        FEATURES_VERSION,
        partial(features_or_none, box=box),
        Features.to_bytes,
        Features.from_bytes,
    )
    for r, box in enumerate(VIEW_BOXES)
)
