"""`imgsearch dupes` and `imgsearch undo`: find duplicates, choose keepers, act safely."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import click

from indexer.models import canonical_name
from indexer.options import EmbedOptions
from search import render
from search.actions import ActionKind, apply_actions, journal_path, plan_actions, undo
from search.cli_common import DomainError, domain_errors, model_options, option_group
from search.dupes import DupeOptions, DuplicateGroup, find_duplicates
from search.export import write_csv, write_html
from search.keep import KEEP_HELP, parse_keep
from store import Store


@dataclass(frozen=True)
class Outputs:
    as_json: bool
    csv_file: Path | None
    html_file: Path | None


@dataclass(frozen=True)
class ActionRequest:
    kind: ActionKind
    dest: Path | None  # None for delete
    yes: bool


def _finding(threshold: float | None, exact_only: bool, keep_spec: str,
             rotations: bool) -> DupeOptions:  # fmt: skip
    return DupeOptions(threshold, exact_only, parse_keep(keep_spec), rotations)


def _action(move_to: Path | None, symlink_to: Path | None, delete: bool,
            yes: bool) -> ActionRequest | None:  # fmt: skip
    chosen: list[tuple[ActionKind, Path | None]] = []
    if move_to:
        chosen.append(("move", move_to))
    if symlink_to:
        chosen.append(("symlink", symlink_to))
    if delete:
        chosen.append(("delete", None))
    if len(chosen) > 1:
        raise click.UsageError("choose one of --move-to, --symlink-to, --delete")
    return ActionRequest(chosen[0][0], chosen[0][1], yes) if chosen else None


finding_options = option_group(
    "finding",
    _finding,
    click.option("--threshold", type=click.FloatRange(-1, 1),
                 help="Cosine for near duplicates (default: the model's calibrated value)."),
    click.option("--exact-only", is_flag=True, help="Only byte-identical copies."),
    click.option("--keep", "keep_spec", default="largest", show_default=True, help=KEEP_HELP),
    click.option("--rotations", is_flag=True,
                 help="Also find copies turned by 90/180/270 degrees (runs the model)."),
)  # fmt: skip
output_options = option_group(
    "outputs",
    Outputs,
    click.option("--json", "as_json", is_flag=True, help="Print groups as JSON."),
    click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path),
                 help="Also write the groups to a CSV file."),
    click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
                 help="Also write a contact sheet with thumbnails (one offline HTML file)."),
)  # fmt: skip
action_options = option_group(
    "action",
    _action,
    click.option("--move-to", type=click.Path(file_okay=False, path_type=Path),
                 help="Move the duplicates (not the keepers) under DIR, keeping relative paths."),
    click.option("--symlink-to", type=click.Path(file_okay=False, path_type=Path),
                 help="Make symlinks to the duplicates under DIR, for review."),
    click.option("--delete", is_flag=True, help="Delete the duplicates (cannot be undone)."),
    click.option("--yes", is_flag=True, help="Really act; without it every action is a dry run."),
)  # fmt: skip


@click.command()
@click.argument("ids", nargs=-1, type=int)
@click.option("--ignore", is_flag=True, help="Remember IDS as not duplicates of each other.")
@finding_options
@output_options
@action_options
@model_options(default_model=None)
@click.pass_context
@domain_errors
def dupes(ctx: click.Context, ids: tuple[int, ...], ignore: bool, finding: DupeOptions,
          outputs: Outputs, action: ActionRequest | None,
          embedding: EmbedOptions) -> None:  # fmt: skip
    """Find exact and near duplicates, pick a keeper in each group, and optionally act.

    \b
    imgsearch dupes
    imgsearch dupes --threshold 0.9 --keep oldest --html dupes.html
    imgsearch dupes --move-to ~/dupes            (a dry run: shows what it would do)
    imgsearch dupes --move-to ~/dupes --yes      (does it, writes a journal for undo)
    imgsearch dupes --ignore 12 57               (12 and 57 are not duplicates)
    """
    if ids and not ignore:
        raise click.UsageError("IDS are only taken with --ignore")
    with Store.open(ctx.obj) as store:
        if ignore:
            _ignore(store, ids)
            return
        if embedding.model is not None:
            store.check_model(canonical_name(embedding.model))
        store.use_device(embedding.runtime.device)  # the self-join on a GPU when there is one
        options = dataclasses.replace(finding, embedding=embedding)
        used, groups = find_duplicates(store, options)
        keep = options.keep.name
        if outputs.csv_file:
            write_csv(groups, outputs.csv_file, keep)
        if outputs.html_file:
            title = f"imgsearch dupes: {len(groups)} groups"
            write_html(groups, outputs.html_file, title, keep)
        if outputs.as_json:
            click.echo(json.dumps(render.dupes_json(used, keep, groups)))
        else:
            click.echo(render.dupes_text(used, keep, groups))
        if action:
            _act(store, groups, action)


def _ignore(store: Store, ids: tuple[int, ...]) -> None:
    if len(ids) < 2:
        raise click.UsageError("--ignore needs at least two ids")
    records = store.records(ids)
    missing = sorted(set(ids) - set(records))
    if missing:
        raise DomainError(f"no image with id {missing[0]} in the index")
    added = store.ignore_pairs([r.content_hash for r in records.values()])
    click.echo(f"{added} pair(s) remembered as not duplicates")


def _act(store: Store, groups: list[DuplicateGroup], action: ActionRequest) -> None:
    plan = plan_actions(groups, action.kind, action.dest)
    if not action.yes:
        if plan.actions or plan.skipped:
            click.echo(render.plan_text(plan, dry_run=True))
        click.echo(f"dry run: {len(plan.actions)} file(s) would be affected; add --yes to do it",
                   err=True)  # fmt: skip
        return
    journal = journal_path(store.home, action.kind)
    failures = apply_actions(plan, store, journal)
    click.echo(render.plan_text(plan, dry_run=False))
    for path, why in failures:
        click.echo(f"imgsearch: could not act on {path}: {why}", err=True)
    click.echo(f"journal: {journal} (imgsearch undo {journal})", err=True)


@click.command("undo")
@click.argument("journal", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@domain_errors
def undo_command(journal: Path) -> None:
    """Undo `dupes --yes` or `orient --fix --yes` from its journal: move files back, remove
    links, restore the originals of fixed images.

    \b
    imgsearch undo ~/.local/share/imgsearch/journals/20261123-101500-move-4242.jsonl
    """
    report = undo(journal)
    for path in report.restored:
        click.echo(f"restored {path}")
    for path, why in report.not_restored:
        click.echo(f"imgsearch: not restored {path}: {why}", err=True)
    if report.restored:
        click.echo("run `imgsearch index` on their folders to index them again", err=True)
