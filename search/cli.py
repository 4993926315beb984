"""The `imgsearch` command line: parse options, call the library, render, map errors to exits.

Only the CLI modules (search/cli*.py) print or exit. stdout carries results; progress, notices
and errors go to stderr. Exit codes: 0 success, 1 a domain error, 2 a usage error or a value
a command cannot use.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.options import DEFAULT_MAX_PIXELS, IndexOptions, ModelOptions
from search import query as queries
from search import render
from search.cli_catalog import check, export, tags
from search.cli_common import (
    HOME_HELP,
    IMAGE_ID,
    ByteSize,
    FiniteFloat,
    OneLineGroup,
    add_home_option,
    domain_errors,
    model_options,
    option_group,
)
from search.cli_dupes import apply_command, dupes, undo_command
from search.cli_models import models
from search.cli_orient import orient
from search.cli_serve import serve
from store import INDEX_KINDS, Store, exclusive_writer, resolve_home

if TYPE_CHECKING:
    from indexer.session import IndexReport


@click.group(cls=OneLineGroup)
@click.option("--home", envvar="IMGSEARCH_HOME", type=click.Path(file_okay=False), help=HOME_HELP)
@click.option("-v", "--verbose", is_flag=True, help="More detail on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(package_name="imgsearch-engine")
@click.pass_context
def cli(ctx: click.Context, home: str | None, verbose: bool, quiet: bool) -> None:
    """Find similar and duplicate images with vision-model embeddings.

    \b
    imgsearch index ~/Pictures
    imgsearch query photo.jpg -k 5
    imgsearch dupes
    """
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(stream=sys.stderr, level=level, format="imgsearch: %(message)s", force=True)
    for noisy in ("birder", "faiss", "faiss.loader", "httpx", "PIL"):
        # Their INFO lines (FAISS's "could not load swigfaiss_avx512" probing) are not ours.
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    ctx.obj = resolve_home(home)
    ctx.meta["quiet"] = quiet


@dataclass(frozen=True)
class _IndexRun:
    """The options of `index` besides the model's."""

    workers: int | None
    no_prune: bool
    size: int | None
    max_pixels: int
    index_type: str | None
    max_index_memory: int | None


@dataclass(frozen=True)
class _Engine:
    engine: str
    ray_address: str | None
    from_list: Path | None


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@model_options
@option_group(
    "run",
    _IndexRun,
    click.option("--workers", type=click.IntRange(min=0), default=None,
                 help="Decoding processes (default: one per core, at most 4; 0: decode inline)."),
    click.option("--no-prune", is_flag=True, help="Keep entries of files that were deleted."),
    click.option("--size", type=click.IntRange(min=16), default=None,
                 help="Run the model at N x N pixels instead of its own size (ViTs: a "
                      "multiple of the patch size). Recorded: later runs and queries use it."),
    click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS,
                 show_default=True, help="Refuse larger images unread (decompression bombs)."),
    click.option("--index-type", type=click.Choice(["auto", *INDEX_KINDS]), default=None,
                 help="FAISS index of a new index [default: auto: flat below 50,000 images, "
                      "then IVF, or IVF-PQ past --max-index-memory]. `reindex` changes it."),
    click.option("--max-index-memory", type=ByteSize(), default=None,
                 help="Memory `auto` may give the vectors (default 8G)."),
)  # fmt: skip
@option_group(
    "engine",
    _Engine,
    click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                 show_default=True, help="ray: decode and embed on a Ray cluster (the `ray` "
                 "extra); shards are written in HOME/shards and ingested here."),
    click.option("--ray-address", default=None,
                 help="auto or ray://HOST:PORT to join a cluster (default: start a local one)."),
    click.option("--from-list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="With --engine ray: index the files listed in FILE.txt (one path per "
                      "line) or FILE.parquet (a `path` column) instead of scanning PATHS."),
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@domain_errors
def index(ctx: click.Context, paths: tuple[str, ...], embedding: ModelOptions, run: _IndexRun,
          engine: _Engine, as_json: bool) -> None:  # fmt: skip
    """Index the images under PATHS (recursive); re-runs only do what changed.

    \b
    imgsearch index ~/Pictures /mnt/photos
    imgsearch index ./dataset --json
    imgsearch index /shared/photos --engine ray --ray-address auto
    """
    from indexer.pipeline import index_folders
    from search.progress import TqdmProgress

    if not paths and engine.from_list is None:
        raise click.UsageError("give PATHS to index (or --from-list FILE with --engine ray)")
    if engine.from_list is not None and engine.engine != "ray":
        raise click.UsageError("--from-list needs --engine ray")
    quiet = bool(ctx.meta["quiet"])
    options = IndexOptions(
        model=replace(embedding, size=run.size),
        workers=run.workers,
        prune=not run.no_prune,
        max_pixels=run.max_pixels,
        index_type=run.index_type,
        max_index_memory=run.max_index_memory,
    )
    if engine.engine == "ray":
        report = _index_with_ray(ctx.obj, paths, options, engine)
    else:
        with TqdmProgress(disable=quiet) as progress:
            report = index_folders(ctx.obj, paths, options, progress)
    for failure in report.failed:
        click.echo(f"imgsearch: skipped {failure.path}: {failure.error}", err=True)
    if not quiet:
        if report.repaired:
            click.echo(f"imgsearch: the FAISS file was {report.repaired}: rebuilt from the "
                       "catalog", err=True)  # fmt: skip
        if report.index_change:
            click.echo(f"imgsearch: {render.index_change(report.index_change)}", err=True)
        if report.not_retried:
            click.echo(
                f"imgsearch: {len(report.not_retried)} files that failed before are "
                "unchanged and were not retried (`imgsearch info` lists them)",
                err=True,
            )
    click.echo(json.dumps(render.index_json(report)) if as_json else render.index_text(report))


def _index_with_ray(
    home: Path, paths: tuple[str, ...], options: IndexOptions, engine: _Engine
) -> IndexReport:
    from indexer.distributed import RayOptions, index_with_ray, read_list
    from indexer.scan import Skipped, check_folders, scan

    folders = check_folders(paths)
    skipped: list[Skipped] = []
    if engine.from_list:
        files, skipped = read_list(engine.from_list)
    else:
        files = list(scan(folders, skipped))
    return index_with_ray(home, files, folders, options, RayOptions(engine.ray_address), skipped)


def _query_options(k: int, min_score: float | None, tag: str | None,
                   no_verify: bool) -> queries.QueryOptions:  # fmt: skip
    return queries.QueryOptions(k, min_score, tag, not no_verify)


@cli.command()
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--id", "image_id", type=IMAGE_ID, help="Query by the id of an indexed image.")
@click.option("--path", "indexed_path", help="Query by the path of an indexed image.")
@option_group(
    "options",
    _query_options,
    click.option("-k", type=click.IntRange(min=1), default=10, show_default=True,
                 help="How many neighbours."),
    click.option("--min-score", type=FiniteFloat(-1, 1), help="Only neighbours with cosine >= "
                 "this."),
    click.option("--tag", help="Only images tagged WORD (see `imgsearch tags`)."),
    click.option("--no-verify", is_flag=True, help="Query images: rank by cosine alone (no "
                 "local-feature check of the top candidates for copies)."),
)  # fmt: skip
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.pass_context
@domain_errors
def query(ctx: click.Context, images: tuple[str, ...], image_id: int | None,
          indexed_path: str | None, options: queries.QueryOptions, embedding: ModelOptions,
          as_json: bool) -> None:  # fmt: skip
    """Find the nearest neighbours of IMAGES, or of an indexed image (--id / --path).

    \b
    imgsearch query photo.jpg -k 5
    imgsearch query --id 42 --min-score 0.8 --json
    """
    chosen = sum([bool(images), image_id is not None, indexed_path is not None])
    if chosen != 1:
        raise click.UsageError("give IMAGES, or --id ID, or --path INDEXED_PATH (exactly one)")
    options = replace(options, embedding=embedding)
    with Store.open(ctx.obj) as store:
        store.use_device(embedding.compute.device)  # FAISS search on a GPU when there is one
        if image_id is not None:
            results = [queries.by_id(store, image_id, options)]
        elif indexed_path is not None:
            results = [queries.by_path(store, indexed_path, options)]
        else:
            results = queries.by_images(store, images, options)
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
@click.option(
    "--index-type",
    type=click.Choice(["auto", *INDEX_KINDS]),
    default=None,
    help="The kind to rebuild as (default: the recorded choice).",
)
@click.option(
    "--max-index-memory",
    type=ByteSize(),
    default=None,
    help="Memory `auto` may give the vectors (default: as recorded, else 8G).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new index as JSON.")
@click.pass_context
@domain_errors
def reindex(ctx: click.Context, index_type: str | None, max_index_memory: int | None,
            as_json: bool) -> None:  # fmt: skip
    """Rebuild the FAISS index from the stored vectors (no re-embedding) and tune it.

    \b
    imgsearch reindex --index-type hnsw
    imgsearch reindex --index-type auto --max-index-memory 2G
    """
    with exclusive_writer(ctx.obj), Store.open(ctx.obj, writable=True) as store:
        spec = store.reindex(index_type, max_index_memory)
        count = store.count()
    if as_json:
        click.echo(json.dumps(render.index_spec_json(spec, count)))
    else:
        click.echo(render.index_change(spec) + f" ({count} vectors)")


@cli.command()
@click.pass_context
def path(ctx: click.Context) -> None:
    """Print the index home directory in use.

    \b
    imgsearch --home ./idx path
    """
    click.echo(str(ctx.obj))


for _command in (dupes, apply_command, undo_command, models, orient, tags, export, check, serve):
    cli.add_command(_command)
for _command in cli.commands.values():
    add_home_option(_command)
