"""`imgsearch dupes`, `apply` and `undo`: find duplicates, choose keepers, act safely."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import click

from indexer.options import ModelOptions
from search import render
from search.actions.journal import journal_path, read_journal
from search.actions.plan import (
    ActionKind,
    ActionPlan,
    apply_plan,
    groups_from_plan,
    plan_actions,
    undo,
)
from search.cli.common import (
    IMAGE_ID,
    DomainError,
    current_settings,
    domain_errors,
    model_options,
)
from search.cli.dupes_options import (
    ActionRequest,
    Finding,
    Outputs,
    action_options,
    finding_options,
    output_options,
    sets_options,
)
from search.copies.dupes import find_duplicates
from search.report import write_csv, write_html
from search.sets import Sets
from store import DEFAULT_WAIT, Store, exclusive_writer


def opened(home: Path, write: bool) -> Store:
    """The store, for writing when `write` (waiting for the writer lock, with a notice)."""
    return Store.writer(home, wait=DEFAULT_WAIT) if write else Store.open(home)


@click.command()
@click.argument("ids", nargs=-1, type=IMAGE_ID)
@click.option("--ignore", is_flag=True, help="Remember IDS as not duplicates of each other.")
@click.option("--unignore", is_flag=True, help="Take back --ignore: IDS may be duplicates again.")
@click.option(
    "--unkeep",
    is_flag=True,
    help="Take back the keeper chosen in review for IDS: the --keep policy decides again.",
)
@finding_options
@sets_options
@output_options
@action_options
@model_options
@click.pass_context
@domain_errors
def dupes(
    ctx: click.Context,
    ids: tuple[int, ...],
    ignore: bool,
    unignore: bool,
    unkeep: bool,
    finding: Finding,
    sets: Sets,
    outputs: Outputs,
    action: ActionRequest | None,
    embedding: ModelOptions,
) -> None:
    """Find exact and near duplicates, pick a keeper in each group, and optionally act.

    \b
    imgsearch dupes
    imgsearch dupes --keep oldest --html dupes.html
    imgsearch dupes --trash                      (a dry run: shows what it would do)
    imgsearch dupes --move-to ~/dupes --yes      (does it, writes a journal for undo)
    imgsearch dupes --json > plan.json           (edit keepers, then: imgsearch apply plan.json)
    imgsearch dupes --ignore 12 57               (12 and 57 are not duplicates)
    imgsearch dupes --unignore 12 57             (take it back)
    imgsearch dupes --keep-in ~/Pictures/originals --trash
    imgsearch dupes --across data/train --across data/test   (test images leaked from train)
    """
    decision = [name for name, on in (("--ignore", ignore), ("--unignore", unignore),
                                      ("--unkeep", unkeep)) if on]  # fmt: skip
    if len(decision) > 1:
        raise click.UsageError(f"choose one of {', '.join(decision)}")
    if ids and not decision:
        raise click.UsageError("IDS are only taken with --ignore, --unignore or --unkeep")
    home = current_settings(ctx).home
    changes = bool(decision) or bool(action and action.yes)
    with opened(home, changes) as store:
        if decision:
            _decide(store, decision[0], ids)
            return
        store.index.use_device(embedding.compute.device)
        options = dataclasses.replace(finding.options(), embedding=embedding, sets=sets)
        from search.progress import TqdmSteps  # tqdm: only when duplicates are looked for

        quiet = current_settings(ctx).quiet
        found = find_duplicates(store, options, TqdmSteps(disable=quiet))
        keep = options.keep.name
        if outputs.csv_file:
            write_csv(found, outputs.csv_file, keep)
        if outputs.html_file:
            write_html(
                found, outputs.html_file, f"imgsearch dupes: {len(found.groups)} groups", keep
            )
        if outputs.as_json:
            click.echo(json.dumps(render.dupes_json(found, keep)))
        else:
            click.echo(render.dupes_text(found, keep))
        if action:
            folders = store.meta.indexed_folders
            plan = plan_actions(found.groups, action.kind, action.dest, folders, sets)
            _act(store, plan, action)


def _decide(store: Store, flag: str, ids: tuple[int, ...]) -> None:
    """Remember, or take back, a review decision about IDS."""
    if len(ids) < (1 if flag == "--unkeep" else 2):
        raise click.UsageError(f"{flag} needs at least {1 if flag == '--unkeep' else 2} id(s)")
    records = store.catalog.records(ids)
    missing = sorted(set(ids) - set(records))
    if missing:
        raise DomainError(f"no image with id {missing[0]} in the index")
    hashes = [r.content_hash for r in records.values()]
    if flag == "--ignore":
        click.echo(f"{store.catalog.ignore_pairs(hashes)} pair(s) remembered as not duplicates")
    elif flag == "--unignore":
        click.echo(f"{store.catalog.forget_ignored(hashes)} pair(s) may be duplicates again")
    else:
        click.echo(f"{store.catalog.forget_keepers(hashes)} chosen keeper(s) taken back")


def _act(store: Store, plan: ActionPlan, action: ActionRequest) -> None:
    if not action.yes:
        if plan.actions or plan.skipped:
            click.echo(render.plan_text(plan, dry_run=True))
        click.echo(
            f"dry run: {len(plan.actions)} file(s) would be affected, "
            f"{_freed(action.kind, plan.freed_bytes, 'would be')}; add --yes to do it",
            err=True,
        )
        return
    journal = journal_path(store.home, action.kind)
    report = apply_plan(plan, store, journal)
    click.echo(render.plan_text(ActionPlan(report.done, plan.skipped), dry_run=False))
    for path, why in report.failures:
        click.echo(f"imgsearch: could not act on {path}: {why}", err=True)
    freed = sum(a.size for a in report.done)
    click.echo(
        f"{_freed(action.kind, freed, 'were')}; journal: {journal} (imgsearch undo {journal})",
        err=True,
    )
    if report.failures:
        raise DomainError(f"{len(report.failures)} file(s) were not acted on (above)")


def _freed(kind: ActionKind, size: int, verb: str) -> str:
    """What the action does to the space the collection takes, in words."""
    if kind == "symlink":
        return "no file moves"
    where = {
        "move": "moved out of the collection",
        "trash": "sent to the trash",
        "delete": "deleted for good",
    }[kind]
    return f"{render.size_text(size)} {verb} {where}"


@click.command("apply")
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@sets_options
@action_options
@click.pass_context
@domain_errors
def apply_command(
    ctx: click.Context, plan_file: Path, sets: Sets, action: ActionRequest | None
) -> None:
    """Act on the groups of a plan file: `dupes --json` output, keepers possibly edited (put
    another member's id as `keep`). A dry run unless --yes.

    \b
    imgsearch dupes --json > plan.json
    imgsearch apply plan.json --trash              (dry run)
    imgsearch apply plan.json --move-to ~/dupes --yes
    """
    if action is None:
        raise click.UsageError("choose one of --move-to, --symlink-to, --trash, --delete")
    home = current_settings(ctx).home
    with opened(home, action.yes) as store:
        groups = groups_from_plan(store, plan_file)
        folders = store.meta.indexed_folders
        _act(store, plan_actions(groups, action.kind, action.dest, folders, sets), action)


@click.command("undo")
@click.argument("journal", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@domain_errors
def undo_command(journal: Path) -> None:
    """Undo `dupes --yes`, `apply --yes` or `orient --fix --yes` from its journal: move files
    back (and into the index), take them out of the trash, remove links and the folders the
    action made, restore the originals of fixed images.

    \b
    imgsearch undo ~/.local/share/imgsearch/journals/20261123-101500-move-4242.jsonl
    """
    header, _, _, _ = read_journal(journal)
    home = Path(str(header.get("home") or journal.parent.parent))
    with exclusive_writer(home, wait=DEFAULT_WAIT) if home.is_dir() else contextlib.nullcontext():
        report = undo(journal)
    if report.already:
        click.echo(f"{journal} was undone already: nothing to restore")
        return
    for path in report.restored:
        click.echo(f"restored {path}")
    if report.unlinked:
        click.echo(f"removed {report.unlinked} link(s); no file had moved")
    for path, why in report.not_restored:
        click.echo(f"imgsearch: not restored {path}: {why}", err=True)
    if report.torn:
        click.echo(
            f"imgsearch: {report.torn} journal line(s) were cut short (a killed run) and skipped",
            err=True,
        )
    missing = len(report.restored) - report.reindexed
    if header.get("kind") in ("move", "trash") and missing > 0:
        click.echo(
            f"imgsearch: {missing} restored file(s) are not in the index: run "
            "`imgsearch index` on their folders",
            err=True,
        )
