"""`imgsearch index` and `reindex`: turn folders into vectors, and rebuild the FAISS index."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.options import DEFAULT_MAX_PIXELS, IndexOptions, ModelOptions
from indexer.scan import IMAGE_EXTENSIONS
from search import render
from search.cli.common import (
    IndexKind,
    Settings,
    domain_errors,
    index_kind_options,
    model_options,
    option_group,
    pass_settings,
)
from search.cli.engines import ENGINE, RAY_ADDRESS
from store import Store

if TYPE_CHECKING:
    from indexer.session import IndexReport


@dataclass(frozen=True)
class _IndexRun:
    """The options of `index` besides the model's."""

    workers: int | None
    no_prune: bool
    size: int | None
    max_pixels: int


@dataclass(frozen=True)
class _Engine:
    engine: str
    ray_address: str | None
    from_list: Path | None


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@model_options
@option_group(
    "run",
    _IndexRun,
    click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=None,
        help="Decoding processes (default: one per core, at most 4; 0: decode inline).",
    ),
    click.option("--no-prune", is_flag=True, help="Keep entries of files that were deleted."),
    click.option(
        "--size",
        type=click.IntRange(min=16),
        default=None,
        help="Run the model at N x N pixels instead of its own size (ViTs: a "
        "multiple of the patch size). Recorded: later runs and queries use it.",
    ),
    click.option(
        "--max-pixels",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_PIXELS,
        show_default=True,
        help="Refuse larger images unread (decompression bombs).",
    ),
)
@index_kind_options
@option_group(
    "engine",
    _Engine,
    ENGINE(
        "ray: decode and embed on a Ray cluster (the `ray` extra); shards are written in "
        "HOME/shards and ingested here."
    ),
    RAY_ADDRESS,
    click.option(
        "--from-list",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="With --engine ray: index the files listed in FILE.txt (one path per "
        "line) or FILE.parquet (a `path` column) instead of scanning PATHS.",
    ),
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_settings
@domain_errors
def index(
    settings: Settings,
    paths: tuple[str, ...],
    embedding: ModelOptions,
    run: _IndexRun,
    kind: IndexKind,
    engine: _Engine,
    as_json: bool,
) -> None:
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
    quiet = settings.quiet
    options = IndexOptions(
        model=replace(embedding, size=run.size),
        workers=run.workers,
        prune=not run.no_prune,
        max_pixels=run.max_pixels,
        index_type=kind.index_type,
        max_index_memory=kind.max_index_memory,
    )
    if engine.engine == "ray":
        report = _index_with_ray(settings.home, paths, options, engine)
    else:
        with TqdmProgress(disable=quiet) as progress:
            report = index_folders(settings.home, paths, options, progress)
    for failure in report.failed:
        click.echo(f"imgsearch: skipped {failure.path}: {failure.error}", err=True)
    if not quiet:
        if report.repaired:
            click.echo(
                f"imgsearch: the FAISS file was {report.repaired}: rebuilt from the catalog",
                err=True,
            )
        if report.index_change:
            click.echo(f"imgsearch: {render.index_change(report.index_change)}", err=True)
        if report.not_retried:
            click.echo(
                f"imgsearch: {len(report.not_retried)} files that failed before are "
                "unchanged and were not retried (`imgsearch info` lists them)",
                err=True,
            )
        found = report.added + report.updated + report.unchanged
        if paths and found + len(report.failed) + len(report.not_retried) == 0:
            click.echo(
                f"imgsearch: no image files under {', '.join(paths)} (looked for "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}; hidden folders are skipped)",
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


@click.command()
@index_kind_options
@click.option("--json", "as_json", is_flag=True, help="Print the new index as JSON.")
@pass_settings
@domain_errors
def reindex(settings: Settings, kind: IndexKind, as_json: bool) -> None:
    """Rebuild the FAISS index from the stored vectors (no re-embedding) and tune it.

    \b
    imgsearch reindex --index-type hnsw
    imgsearch reindex --index-type auto --max-index-memory 2G
    """
    with Store.writer(settings.home) as store:
        spec = store.index.reindex(kind.index_type, kind.max_index_memory)
        count = store.catalog.count()
    if as_json:
        click.echo(json.dumps(render.index_spec_json(spec, count)))
    else:
        click.echo(render.index_change(spec) + f" ({count} vectors)")
