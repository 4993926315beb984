"""`imgsearch models` and `imgsearch models download NAME`: the model cards and their weights."""

from __future__ import annotations

import json

import click

from indexer.errors import UnknownModel
from indexer.models import CARDS, cache_dir, find_card, is_present, weights_file
from search import render
from search.cli.common import current_settings, domain_errors


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the backbones by short name, with their weights and whether those are here.

    \b
    imgsearch models
    imgsearch models download pe-core-s16
    imgsearch index ./photos --model pe-core-s16 --weights ./rope_i_vit_s16_pn_aps_c1_pe-core.pt
    """
    if ctx.invoked_subcommand is not None:
        return
    rows = [render.model_json(card, is_present(card), weights_file(card)) for card in CARDS]
    click.echo(json.dumps(rows) if as_json else render.models_text(rows, cache_dir()))


@models.command()
@click.argument("name")
@click.pass_context
@domain_errors
def download(ctx: click.Context, name: str) -> None:
    """Download NAME's weights into the cache dir (sha256-verified; no partial file is kept).

    A file already there is checked against Birder's sha256 instead.

    \b
    imgsearch models download capi-b14-in21k
    """
    from indexer.weights import download as fetch  # imports birder: only when asked

    card = find_card(name)
    if card is None:
        raise UnknownModel(f"unknown model {name!r}: see `imgsearch models`")
    if card.weights is None:
        click.echo(f"{card.name}: its weights ship inside a Python package; nothing to download")
        return
    quiet = current_settings(ctx).quiet
    path = fetch(card, progress=not quiet)
    click.echo(f"{card.name}: {path}")
