"""One resolution of the model options and an index's own record into what to run.

Every command that embeds goes through `resolve_model`: the model defaults to the index's own
(else the default model for a new index), another model than the index's is refused here and
nowhere else, and the weights and input size an index recorded are used unless given again.
Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indexer.models import CopyThresholds, ModelCard, canonical_name, copy_thresholds, find_card
from indexer.options import DEFAULT_MODEL, Compute, ModelOptions
from store import IndexMeta, InvalidOption, ModelMismatch


@dataclass(frozen=True)
class ModelSpec:
    """A model to run, fully resolved (runtime `auto` is resolved when it is loaded)."""

    name: str  # as the index records it: a card's short name, or a Birder network name
    card: ModelCard | None
    weights: Path | None  # a given or recorded file; None: packaged or in the cache dir
    size: int | None  # input resolution when not the model's own
    compute: Compute
    batch_size: int | None
    show_download: bool = True

    @property
    def descriptor(self) -> str:
        return self.card.descriptor if self.card else "embedding"

    @property
    def copy_thresholds(self) -> CopyThresholds:
        """See indexer.models."""
        return copy_thresholds(self.card)

    def settings(self) -> dict[str, str]:
        """What a new index records about its model besides name and dimension."""
        found = {}
        if self.weights:
            found["weights"] = str(self.weights.absolute())
        if self.size:
            found["input_size"] = str(self.size)
        return found


def resolve_model(options: ModelOptions, recorded: IndexMeta | None) -> ModelSpec:
    """The spec for `options` on an index that recorded `recorded` (None: a new index)."""
    asked = canonical_name(options.model) if options.model else None
    if recorded is None:
        name = asked or DEFAULT_MODEL
        return ModelSpec(
            name,
            find_card(name),
            options.weights,
            options.size,
            options.compute,
            options.batch_size,
            options.show_download,
        )
    if asked is not None and asked != recorded.model:
        raise ModelMismatch(
            f"this index was built with {recorded.model!r}, not {asked!r}: leave the model out "
            "to use the index's own, or use another index home for another model",
            field="model",
        )
    card = find_card(recorded.model)
    native = card.size if card else None
    if options.size not in (None, recorded.input_size) and not (
        recorded.input_size is None and options.size == native
    ):
        made = recorded.input_size or "its model's own size"
        raise InvalidOption(
            f"{options.size}: this index was made at {made}, and keeps it", field="size"
        )
    weights = options.weights or (Path(recorded.weights) if recorded.weights else None)
    return ModelSpec(
        recorded.model,
        card,
        weights,
        recorded.input_size,
        options.compute,
        options.batch_size,
        options.show_download,
    )
