"""Which way up: a rotation classifier's head (the `rotnet` card) applied to image files.

A class named "90" means the picture's content is turned 90 degrees counter-clockwise from
upright (as `torchvision`'s and PIL's `rotate(90)` turn it); turning it 90 degrees clockwise
puts it upright. The angle of each class comes from the checkpoint's class_to_idx; a head
whose class names are not angles falls back to index x 90 degrees.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from indexer.decode import decode_file
from indexer.embedder import Embedder
from indexer.errors import IndexerError, InvalidOption, UnreadableImage
from indexer.models import find_card, is_present, weights_file
from indexer.options import ModelOptions
from indexer.scan import scan
from store import FileStat

ANGLES = (0, 90, 180, 270)
ROTATION_MODEL = "rotnet"  # the card `orient` uses, and the keeper when its weights are here
log = logging.getLogger("imgsearch.indexer")
# An image file's probability of being upright (its content turned by 0 degrees); None when it
# cannot be read.
UprightOf = Callable[[str], float | None]


@dataclass(frozen=True)
class Orientation:
    path: str
    angle: int  # predicted counter-clockwise turn of the content: 0, 90, 180 or 270
    confidence: float  # the probability of that class
    scores: dict[int, float]  # every angle's probability


def class_angles(labels: Sequence[str]) -> tuple[int, ...]:
    """The angle of each class index, from the class names when they are angles."""
    if len(labels) != len(ANGLES):
        raise InvalidOption(
            f"not a rotation model: its head has {len(labels)} classes, not 4 (0/90/180/270)",
            field="model",
        )
    try:
        angles = tuple(int(str(label).strip().rstrip("°")) % 360 for label in labels)
    except ValueError:
        return ANGLES
    return angles if sorted(angles) == list(ANGLES) else ANGLES


def image_files(paths: Sequence[str]) -> Iterator[FileStat]:
    """The files given, and the image files under the folders given, each once."""
    folders = []
    for path in paths:
        if os.path.isdir(path):
            folders.append(os.path.abspath(path))
        elif os.path.isfile(path):
            st = os.stat(path)
            yield FileStat(os.path.abspath(path), st.st_size, st.st_mtime_ns)
        else:
            raise UnreadableImage(path, "no such file or folder")
    yield from scan(folders)


def predict(
    files: Sequence[FileStat], embedder: Embedder, batch_size: int
) -> Iterator[Orientation | UnreadableImage]:
    """Each file's orientation, in order; a file that cannot be decoded yields its error."""
    if not embedder.labels:
        raise InvalidOption(
            f"{embedder.name} has no classification head to predict with", field="model"
        )
    angles = class_angles(embedder.labels)
    prep = embedder.prep
    for start in range(0, len(files), batch_size):
        pixels, paths = [], []
        for stat in files[start : start + batch_size]:
            try:
                pixels.append(decode_file(stat.path, prep).pixels)
                paths.append(stat.path)
            except UnreadableImage as exc:
                yield exc
        if not pixels:
            continue
        found = embedder.run(np.stack(pixels), top=len(angles)).tags
        for path, tags in zip(paths, found, strict=True):
            by_label = {t.label: t.score for t in tags}
            scores = {a: by_label[label] for a, label in zip(angles, embedder.labels, strict=True)}
            best = max(scores, key=lambda a: scores[a])
            yield Orientation(path, best, scores[best], scores)


def upright_estimator(model: str = ROTATION_MODEL) -> UprightOf | None:
    """How likely an image file is upright, by the rotation card, when its weights are already
    in the cache (never downloaded: choosing a keeper is no reason to fetch a model); None
    without them. The model loads at the first question, so a run that asks none imports no
    torch; a model that fails to load says so once and answers None from then on."""
    card = find_card(model)
    if card is None or weights_file(card) is None or not is_present(card):
        return None
    loaded: list[Embedder | None] = []

    def upright(path: str) -> float | None:
        if not loaded:
            from indexer.runtime import load_embedder
            from indexer.spec import resolve_model

            try:
                loaded.append(load_embedder(resolve_model(ModelOptions(model=model), None)))
            except (IndexerError, OSError, RuntimeError) as exc:
                log.warning("the rotation model %s could not be loaded (%s): not used", model, exc)
                loaded.append(None)
        embedder = loaded[0]
        if embedder is None:
            return None
        try:
            files = list(image_files([path]))
        except UnreadableImage:  # gone since it was looked at
            return None
        for found in predict(files, embedder, 1):
            return found.scores[0] if isinstance(found, Orientation) else None
        return None

    return upright
