"""`imgsearch query`: the nearest neighbours of images, or of an indexed image."""

from __future__ import annotations

import json
from dataclasses import replace

import click

from indexer.options import ModelOptions
from search import query as queries
from search import render
from search.cli.common import (
    IMAGE_ID,
    FiniteFloat,
    Settings,
    domain_errors,
    model_options,
    option_group,
    pass_settings,
)
from store import Store


def _query_options(
    k: int, min_score: float | None, tag: str | None, no_verify: bool
) -> queries.QueryOptions:
    return queries.QueryOptions(k, min_score, tag, not no_verify)


@click.command()
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--id", "image_id", type=IMAGE_ID, help="Query by the id of an indexed image.")
@click.option("--path", "indexed_path", help="Query by the path of an indexed image.")
@option_group(
    "options",
    _query_options,
    click.option(
        "-k",
        type=click.IntRange(1, queries.MAX_K),
        default=10,
        show_default=True,
        help="How many neighbours.",
    ),
    click.option(
        "--min-score", type=FiniteFloat(-1, 1), help="Only neighbours with cosine >= this."
    ),
    click.option("--tag", help="Only images tagged WORD (see `imgsearch tags`)."),
    click.option(
        "--no-verify",
        is_flag=True,
        help="Query images: rank by cosine alone (no "
        "local-feature check of the top candidates for copies).",
    ),
)
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@pass_settings
@domain_errors
def query(
    settings: Settings,
    images: tuple[str, ...],
    image_id: int | None,
    indexed_path: str | None,
    options: queries.QueryOptions,
    embedding: ModelOptions,
    as_json: bool,
) -> None:
    """Find the nearest neighbours of IMAGES, or of an indexed image (--id / --path).

    \b
    imgsearch query photo.jpg -k 5
    imgsearch query --id 42 --min-score 0.8 --json
    """
    chosen = sum([bool(images), image_id is not None, indexed_path is not None])
    if chosen != 1:
        raise click.UsageError("give IMAGES, or --id ID, or --path INDEXED_PATH (exactly one)")
    options = replace(options, embedding=embedding)
    with Store.open(settings.home) as store:
        store.index.use_device(embedding.compute.device)  # FAISS search on a GPU when there is one
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
