"""The `imgsearch` command line: parse options, call the library, render, map errors to exits.

Only this module prints or exits. stdout carries results; progress, notices and errors go to
stderr. Exit codes: 0 success, 1 a domain error, 2 a usage error (click's own).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from indexer.errors import IndexerError
from indexer.options import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MODEL,
    PRECISIONS,
    EmbedOptions,
    IndexOptions,
    ModelChoice,
    Runtime,
)
from search import query as queries
from search import render
from search.actions import ActionError, apply_actions, journal_path, plan_actions, undo
from search.dupes import DupeOptions, DuplicateGroup, find_duplicates
from search.export import write_csv, write_html
from search.keep import KEEP_HELP, parse_keep
from store import Store, StoreError, resolve_home

F = TypeVar("F", bound=Callable[..., Any])


class DomainError(click.ClickException):
    """One line on stderr, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"imgsearch: {self.format_message()}", err=True)


def domain_errors(fn: F) -> F:
    """Translate every library error into one line and exit code 1, in one place."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StoreError, IndexerError, ActionError) as exc:
            raise DomainError(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


class BatchSize(click.ParamType[int | None]):
    """A positive integer, or `auto` (None)."""

    name = "N|auto"

    def convert(self, value: Any, param: Any, ctx: click.Context | None) -> int | None:
        if value is None or value == "auto":
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            self.fail(f"{value!r} is not a positive integer or 'auto'", param, ctx)
        return number


def model_options(*, default_model: str | None) -> Callable[[F], F]:
    """--model --weights --device --precision --batch-size, shared by model-using commands.

    The command receives them as one `embedding: EmbedOptions` argument.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, model: str | None, weights: Path | None, device: str,
                    precision: str, batch_size: int | None, **kwargs: Any) -> Any:  # fmt: skip
            embedding = EmbedOptions(model, weights, Runtime(device, precision), batch_size)
            return fn(*args, embedding=embedding, **kwargs)

        options = [
            click.option("--model", default=default_model, show_default=default_model is not None,
                         help="Backbone: a short name or a Birder network name"
                              + ("." if default_model else " (default: the index's own).")),
            click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
                         help="A local checkpoint file for --model."),
            click.option("--device", default="auto", show_default=True,
                         help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps."),
            click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
                         show_default=True,
                         help="auto: bf16 on CUDA and on CPUs with native bf16, else fp32."),
            click.option("--batch-size", type=BatchSize(), default="auto", show_default=True,
                         help="Images per forward pass, or auto: 16 on CPU, the largest that "
                              "fits on a GPU (probed)."),
        ]  # fmt: skip
        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorate


@click.group()
@click.option(
    "--home",
    envvar="IMGSEARCH_HOME",
    type=click.Path(file_okay=False),
    help="Index directory (default: $IMGSEARCH_HOME, else the user data dir).",
)
@click.option("-v", "--verbose", is_flag=True, help="More detail on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(package_name="imgsearch-engine")
@click.pass_context
def cli(ctx: click.Context, home: str | None, verbose: bool, quiet: bool) -> None:
    """Find similar and duplicate images with vision-model embeddings.

    \b
    imgsearch index ~/Pictures
    imgsearch query photo.jpg -k 5
    """
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(stream=sys.stderr, level=level, format="imgsearch: %(message)s")
    logging.getLogger("birder").setLevel(max(level, logging.WARNING))
    ctx.obj = resolve_home(home)
    ctx.meta["quiet"] = quiet


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@model_options(default_model=DEFAULT_MODEL)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Decoding processes (default: one per core, at most 4; 0: decode inline).",
)
@click.option("--no-prune", is_flag=True, help="Keep entries of files that were deleted.")
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Refuse larger images unread (decompression bombs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@domain_errors
def index(ctx: click.Context, paths: tuple[str, ...], embedding: EmbedOptions,
          workers: int | None, no_prune: bool, max_pixels: int, as_json: bool) -> None:  # fmt: skip
    """Index the images under PATHS (recursive); re-runs only do what changed.

    \b
    imgsearch index ~/Pictures /mnt/photos
    imgsearch index ./dataset --json
    """
    from indexer.pipeline import index_folders  # imports torch: only for commands that embed
    from search.progress import TqdmProgress

    options = IndexOptions(
        model=ModelChoice(embedding.model or DEFAULT_MODEL, embedding.weights),
        runtime=embedding.runtime,
        batch_size=embedding.batch_size,
        workers=workers,
        prune=not no_prune,
        max_pixels=max_pixels,
    )
    with TqdmProgress(disable=ctx.meta["quiet"]) as progress:
        report = index_folders(ctx.obj, paths, options, progress)
    for failure in report.failed:
        click.echo(f"imgsearch: skipped {failure.path}: {failure.error}", err=True)
    if report.not_retried:
        click.echo(
            f"imgsearch: {len(report.not_retried)} files that failed before are unchanged and "
            "were not retried (`imgsearch info` lists them)",
            err=True,
        )
    click.echo(json.dumps(render.index_json(report)) if as_json else render.index_text(report))


@cli.command()
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--id", "image_id", type=int, help="Query by the id of an indexed image.")
@click.option("--path", "indexed_path", help="Query by the path of an indexed image.")
@click.option(
    "-k", type=click.IntRange(min=1), default=10, show_default=True, help="How many neighbours."
)
@click.option("--min-score", type=float, help="Only neighbours with cosine >= this.")
@model_options(default_model=None)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.pass_context
@domain_errors
def query(ctx: click.Context, images: tuple[str, ...], image_id: int | None,
          indexed_path: str | None, k: int, min_score: float | None, embedding: EmbedOptions,
          as_json: bool) -> None:  # fmt: skip
    """Find the nearest neighbours of IMAGES, or of an indexed image (--id / --path).

    \b
    imgsearch query photo.jpg -k 5
    imgsearch query --id 42 --min-score 0.8 --json
    """
    chosen = sum([bool(images), image_id is not None, indexed_path is not None])
    if chosen != 1:
        raise click.UsageError("give IMAGES, or --id ID, or --path INDEXED_PATH (exactly one)")
    options = queries.QueryOptions(k=k, min_score=min_score)
    with Store.open(ctx.obj) as store:
        if image_id is not None:
            results = [queries.by_id(store, image_id, options)]
        elif indexed_path is not None:
            results = [queries.by_path(store, indexed_path, options)]
        else:
            results = queries.by_images(store, images, options, embedding)
    if as_json:
        shaped = [render.query_json(r) for r in results]
        click.echo(json.dumps(shaped[0] if len(shaped) == 1 else shaped))
    else:
        click.echo("\n\n".join(render.query_text(r) for r in results))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@domain_errors
def info(ctx: click.Context, as_json: bool) -> None:
    """Show the index: home, model, dimension, count, index type and failed files.

    \b
    imgsearch info --json
    """
    with Store.open(ctx.obj) as store:
        failed = sorted(store.failures().values(), key=lambda f: f.path)
        data = render.info_json(str(ctx.obj), store.meta, store.count(), failed)
    click.echo(json.dumps(data) if as_json else render.info_text(data, failed))


@cli.command()
@click.pass_context
def path(ctx: click.Context) -> None:
    """Print the index home directory in use.

    \b
    imgsearch --home ./idx path
    """
    click.echo(str(ctx.obj))


@cli.command()
@click.argument("ids", nargs=-1, type=int)
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    help="Cosine for near duplicates (default: the model's calibrated value).",
)
@click.option("--exact-only", is_flag=True, help="Only byte-identical copies.")
@click.option("--keep", "keep_spec", default="largest", show_default=True, help=KEEP_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print groups as JSON.")
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the groups to a CSV file.",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a contact sheet with thumbnails (one offline HTML file).",
)
@click.option(
    "--move-to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Move the duplicates (not the keepers) under DIR, keeping relative paths.",
)
@click.option(
    "--symlink-to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Make symlinks to the duplicates under DIR, for review.",
)
@click.option("--delete", is_flag=True, help="Delete the duplicates (cannot be undone).")
@click.option("--yes", is_flag=True, help="Really act; without it every action is a dry run.")
@click.option("--ignore", is_flag=True, help="Remember IDS as not duplicates of each other.")
@click.pass_context
@domain_errors
def dupes(ctx: click.Context, ids: tuple[int, ...], threshold: float | None, exact_only: bool,
          keep_spec: str, as_json: bool, csv_file: Path | None, html_file: Path | None,
          move_to: Path | None, symlink_to: Path | None, delete: bool, yes: bool,
          ignore: bool) -> None:  # fmt: skip
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
    actions = [(k, d) for k, d in (("move", move_to), ("symlink", symlink_to),
                                   ("delete", Path() if delete else None)) if d]  # fmt: skip
    if len(actions) > 1:
        raise click.UsageError("choose one of --move-to, --symlink-to, --delete")
    with Store.open(ctx.obj) as store:
        if ignore:
            _ignore(store, ids)
            return
        keep = parse_keep(keep_spec)
        options = DupeOptions(threshold=threshold, exact_only=exact_only, keep=keep)
        used, groups = find_duplicates(store, options)
        if csv_file:
            write_csv(groups, csv_file)
        if html_file:
            write_html(groups, html_file, f"imgsearch dupes: {len(groups)} groups")
        if as_json:
            click.echo(json.dumps(render.dupes_json(used, keep.name, groups)))
        else:
            click.echo(render.dupes_text(used, keep.name, groups))
        if actions:
            kind, dest = actions[0]
            _act(store, groups, kind, None if kind == "delete" else dest, yes)


def _ignore(store: Store, ids: tuple[int, ...]) -> None:
    if len(ids) < 2:
        raise click.UsageError("--ignore needs at least two ids")
    records = store.records(ids)
    missing = sorted(set(ids) - set(records))
    if missing:
        raise DomainError(f"no image with id {missing[0]} in the index")
    added = store.ignore_pairs([r.content_hash for r in records.values()])
    click.echo(f"{added} pair(s) remembered as not duplicates")


def _act(store: Store, groups: list[DuplicateGroup], kind: Any, dest: Path | None,
         yes: bool) -> None:  # fmt: skip
    plan = plan_actions(groups, kind, dest)
    if not yes:
        if plan.actions or plan.skipped:
            click.echo(render.plan_text(plan, dry_run=True))
        click.echo(f"dry run: {len(plan.actions)} file(s) would be affected; add --yes to do it",
                   err=True)  # fmt: skip
        return
    journal = journal_path(store.home, kind)
    failures = apply_actions(plan, store, journal)
    click.echo(render.plan_text(plan, dry_run=False))
    for path, why in failures:
        click.echo(f"imgsearch: could not act on {path}: {why}", err=True)
    click.echo(f"journal: {journal} (imgsearch undo {journal})", err=True)


@cli.command("undo")
@click.argument("journal", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@domain_errors
def undo_command(journal: Path) -> None:
    """Undo `dupes --yes` from its journal: move files back, remove links.

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
