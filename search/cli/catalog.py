"""Commands that read the catalog: `info`, `path`, `tags`, `export` and `check`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from search import render
from search.cli.common import DomainError, FiniteFloat, Settings, domain_errors, pass_settings
from store import Store, check_home


@click.command()
@click.option(
    "--min-score",
    type=FiniteFloat(0, 1),
    default=0.0,
    help="Only count tags the model gave at least this probability.",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_settings
@domain_errors
def tags(settings: Settings, min_score: float, as_json: bool) -> None:
    """List the class tags of the indexed images with how many images carry each.

    Tags are each image's top-5 classes, stored when the index's model has a classification
    head with named classes (effnet-lite0: ImageNet-1k; capi-b14-in21k: ImageNet-21k).

    \b
    imgsearch tags --min-score 0.3
    imgsearch query photo.jpg --tag retriever
    """
    with Store.open(settings.home) as store:
        counts = store.catalog.tag_counts(min_score)
    if as_json:
        click.echo(json.dumps([{"tag": label, "images": n} for label, n in counts]))
        return
    if not counts:
        click.echo("no tags: the index's model has no named classification head", err=True)
    for label, n in counts:
        click.echo(f"{n:>7}  {label}")


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@pass_settings
@domain_errors
def export(settings: Settings, out: Path) -> None:
    """Write ids, paths, vectors and metadata to OUT.npz or OUT.parquet.

    \b
    imgsearch export embeddings.parquet
    python -c "import numpy as np; d = np.load('embeddings.npz'); print(d['vector'].shape)"
    """
    from search.export import export as write

    with Store.open(settings.home) as store:
        count = write(store, out)
    click.echo(f"exported {count} images to {out}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@pass_settings
@domain_errors
def check(settings: Settings, as_json: bool) -> None:
    """Check the catalog (SQLite's integrity check, every stored vector) and the FAISS file
    (checksum, count, dimension); rebuild the FAISS file from the catalog if it is not sound.
    Exit 1 if the catalog itself is damaged (then: restore it, or index into a new home).

    \b
    imgsearch check
    """

    report = check_home(settings.home)
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.catalog_ok:
        raise DomainError(
            "the catalog is damaged: restore a backup of catalog.sqlite, or "
            "index the folders again into a new home"
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_settings
@domain_errors
def info(settings: Settings, as_json: bool) -> None:
    """Show the index: home, model, dimension, count, index type and failed files.

    \b
    imgsearch info --json
    """
    with Store.open(settings.home) as store:
        failed = sorted(store.catalog.failures().values(), key=lambda f: f.path)
        data = render.info_json(str(settings.home), store.meta, store.catalog.count(), failed)
    click.echo(json.dumps(data) if as_json else render.info_text(data, failed))


@click.command()
@pass_settings
def path(settings: Settings) -> None:
    """Print the index home directory in use.

    \b
    imgsearch --home ./idx path
    """
    click.echo(str(settings.home))
