"""The options of `imgsearch dupes` and `apply`: how duplicates are found, where, what is
written, what is done."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from search.actions.plan import ActionKind
from search.cli.common import DomainError, FiniteFloat, option_group
from search.cli.engines import ENGINE, RAY_ADDRESS
from search.copies.dupes import DupeOptions
from search.keeper.policy import DEFAULT_KEEP, KEEP_HELP, KeepPolicy, parse_keep
from search.sets import Sets
from search.workers import LOCAL, Workers
from store import ImgsearchError


class Keep(click.ParamType[KeepPolicy]):
    name = "POLICY"

    def convert(self, value: Any, param: Any, ctx: click.Context | None) -> KeepPolicy:
        if isinstance(value, KeepPolicy):
            return value
        try:
            return parse_keep(str(value))
        except ImgsearchError as exc:
            self.fail(str(exc), param, ctx)


@dataclass(frozen=True)
class Outputs:
    as_json: bool
    csv_file: Path | None
    html_file: Path | None

    def __post_init__(self) -> None:
        """A report that could not be written is refused before the search, not after it."""
        for path in (self.csv_file, self.html_file):
            if path is not None and not path.parent.is_dir():
                raise DomainError(f"{path}: no folder {path.parent} to write it in")


@dataclass(frozen=True)
class ActionRequest:
    kind: ActionKind
    dest: Path | None  # move and symlink only
    yes: bool


@dataclass(frozen=True)
class Finding:
    """The finding options as given; `options()` is what the library takes."""

    threshold: float | None
    copy_threshold: float | None
    exact_only: bool
    keep: KeepPolicy
    rotations: bool
    no_verify: bool
    engine: str
    ray_address: str | None

    def __post_init__(self) -> None:
        if self.engine == "local" and self.ray_address is not None:
            raise click.UsageError("--ray-address needs --engine ray")

    def options(self) -> DupeOptions:
        return DupeOptions(
            self.threshold,
            self.copy_threshold,
            self.exact_only,
            self.keep,
            self.rotations,
            not self.no_verify,
            workers=_workers(self.engine, self.ray_address),
        )


def _workers(engine: str, address: str | None) -> Workers:
    if engine == "local":
        return LOCAL
    try:
        from search.ray_workers import RayWorkers
    except ImportError as exc:  # ray is an extra
        raise DomainError(f"--engine ray needs the `ray` extra ({exc})") from exc
    return RayWorkers(address)


def _action(
    move_to: Path | None, symlink_to: Path | None, trash: bool, delete: bool, yes: bool
) -> ActionRequest | None:
    chosen: list[tuple[ActionKind, Path | None]] = []
    if move_to is not None:
        chosen.append(("move", move_to))
    if symlink_to is not None:
        chosen.append(("symlink", symlink_to))
    if trash:
        chosen.append(("trash", None))
    if delete:
        chosen.append(("delete", None))
    if len(chosen) > 1:
        raise click.UsageError("choose one of --move-to, --symlink-to, --trash, --delete")
    return ActionRequest(chosen[0][0], chosen[0][1], yes) if chosen else None


def _folder_named(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An empty DIR (an unset shell variable) would mean the current folder: refused."""
    if value is not None and not str(value).strip(". "):
        raise click.BadParameter("give a folder (it is empty or '.')", ctx, param)
    return value


finding_options = option_group(
    "finding",
    Finding,
    click.option(
        "--threshold",
        type=FiniteFloat(0, 1),
        help="Plain mode: a pair is a duplicate when its cosine is at least this (no "
        "copy scores, no verification).",
    ),
    click.option(
        "--copy-threshold",
        type=FiniteFloat(-2, 2),
        help="Copy mode (the default): the copy score that makes a pair a copy "
        "without verification (default: the model's calibrated value).",
    ),
    click.option("--exact-only", is_flag=True, help="Only byte-identical copies."),
    click.option("--keep", type=Keep(), default=DEFAULT_KEEP, show_default=True, help=KEEP_HELP),
    click.option(
        "--rotations",
        is_flag=True,
        help="Also find copies turned by 90/180/270 degrees (runs the model).",
    ),
    click.option(
        "--no-verify",
        is_flag=True,
        help="Copy mode: skip the local-feature check of uncertain pairs (faster).",
    ),
    ENGINE(
        "ray: the candidate join, local features and verification in Ray tasks (the `ray` "
        "extra; files must be readable where the tasks run); groups are decided here."
    ),
    RAY_ADDRESS,
)
output_options = option_group(
    "outputs",
    Outputs,
    click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print groups as JSON (a plan that `imgsearch apply` takes, keepers editable).",
    ),
    click.option(
        "--csv",
        "csv_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Also write the groups to a CSV file.",
    ),
    click.option(
        "--html",
        "html_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Also write a contact sheet with thumbnails (one offline HTML file).",
    ),
)
action_options = option_group(
    "action",
    _action,
    click.option(
        "--move-to",
        type=click.Path(file_okay=False, path_type=Path),
        callback=_folder_named,
        help="Move the duplicates (not the keepers) under DIR, keeping relative paths; DIR "
        "must be outside the indexed folders.",
    ),
    click.option(
        "--symlink-to",
        type=click.Path(file_okay=False, path_type=Path),
        callback=_folder_named,
        help="Make symlinks to the duplicates under DIR, for review.",
    ),
    click.option("--trash", is_flag=True, help="Send the duplicates to the platform trash."),
    click.option("--delete", is_flag=True, help="Delete the duplicates (cannot be undone)."),
    click.option("--yes", is_flag=True, help="Really act; without it every action is a dry run."),
)


def _sets(keep_in: tuple[Path, ...], across: tuple[Path, ...]) -> Sets:
    if len(across) == 1:
        raise click.UsageError("--across compares sets: give it at least twice")
    return Sets.of([str(f) for f in keep_in], [str(f) for f in across])


sets_options = option_group(
    "sets",
    _sets,
    click.option(
        "--keep-in",
        multiple=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="A reference folder (repeatable): its files are kept and never acted on.",
    ),
    click.option(
        "--across",
        multiple=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Only copies across these sets (give it twice or more, the reference first, "
        "e.g. train/ then test/); actions touch only the sets after the first.",
    ),
)
