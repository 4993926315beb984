"""Commands that read the catalog as data: `tags` and `export`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from search.cli_common import DomainError, domain_errors
from store import Store


@click.command()
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.0,
              help="Only count tags the model gave at least this probability.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@domain_errors
def tags(ctx: click.Context, min_score: float, as_json: bool) -> None:
    """List the class tags of the indexed images with how many images carry each.

    Tags are each image's top-5 classes, stored when the index's model has a classification
    head with named classes (effnet-lite0: ImageNet-1k; capi-b14-in21k: ImageNet-21k).

    \b
    imgsearch tags --min-score 0.3
    imgsearch query photo.jpg --tag retriever
    """
    with Store.open(ctx.obj) as store:
        counts = store.tag_counts(min_score)
    if as_json:
        click.echo(json.dumps([{"tag": label, "images": n} for label, n in counts]))
        return
    if not counts:
        click.echo("no tags: the index's model has no named classification head", err=True)
    for label, n in counts:
        click.echo(f"{n:>7}  {label}")


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
@domain_errors
def export(ctx: click.Context, out: Path) -> None:
    """Write ids, paths, vectors and metadata to OUT.npz or OUT.parquet.

    \b
    imgsearch export embeddings.parquet
    python -c "import numpy as np; d = np.load('embeddings.npz'); print(d['vectors'].shape)"
    """
    from search.export_vectors import ExportError
    from search.export_vectors import export as write

    with Store.open(ctx.obj) as store:
        try:
            count = write(store, out)
        except ExportError as exc:
            raise DomainError(str(exc)) from exc
    click.echo(f"exported {count} images to {out}", err=True)
