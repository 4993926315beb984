"""The `imgsearch` group: global options, then one line per command group, as birder's tools do.

Only the CLI modules (search/cli/) print or exit. stdout carries results; progress, notices and
errors go to stderr. Exit codes: 0 success, 1 a domain error, 2 a usage error or a value a
command cannot use.
"""

from __future__ import annotations

import click

from search.cli import catalog, dupes, index, models, orient, query, serve
from search.cli.common import (
    HOME_HELP,
    OneLineGroup,
    Settings,
    add_common_options,
    configure_logging,
    verbosity_options,
)
from store import resolve_home


@click.group(cls=OneLineGroup)
@click.option("--home", envvar="IMGSEARCH_HOME", type=click.Path(file_okay=False), help=HOME_HELP)
@click.version_option(package_name="imgsearch-engine")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """Find similar and duplicate images with vision-model embeddings.

    \b
    imgsearch index ~/Pictures
    imgsearch query photo.jpg -k 5
    imgsearch dupes
    """
    given = ctx.find_object(Settings)
    ctx.obj = given.with_home(home) if given else Settings(resolve_home(home))
    configure_logging(ctx.obj)


cli.params.extend(verbosity_options())
cli.add_command(index.index)
cli.add_command(index.reindex)
cli.add_command(query.query)
cli.add_command(dupes.dupes)
cli.add_command(dupes.apply_command)
cli.add_command(dupes.undo_command)
cli.add_command(catalog.info)
cli.add_command(catalog.path)
cli.add_command(catalog.tags)
cli.add_command(catalog.export)
cli.add_command(catalog.check)
cli.add_command(models.models)
cli.add_command(orient.orient)
cli.add_command(serve.serve)
for _command in cli.commands.values():
    add_common_options(_command)
