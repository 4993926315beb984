"""`imgsearch serve`: the HTTP API and the web page, on loopback unless asked otherwise."""

from __future__ import annotations

import ipaddress

import click

from indexer.options import ModelOptions
from search.cli_common import ByteSize, domain_errors, model_options


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback exposes your photos' paths "
                   "and thumbnails to the network.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-upload", type=ByteSize(), default="20M", show_default=True,
              help="Largest image a search may upload.")  # fmt: skip
@model_options
@click.pass_context
@domain_errors
def serve(ctx: click.Context, host: str, port: int, max_upload: int,
          embedding: ModelOptions) -> None:  # fmt: skip
    """Serve the index: a web page to search by image and review duplicates, and a JSON API
    (OpenAPI docs at /docs).

    \b
    imgsearch serve                      # http://127.0.0.1:8000
    imgsearch serve --port 9000
    imgsearch serve --host 0.0.0.0       # reachable from the network: only if you mean it
    """
    import uvicorn

    from search.server import ServerState, create_app
    from store import Store

    Store.open(ctx.obj).close()  # no index: one line and exit 1 now, not on the first request
    if not is_loopback(host):
        click.echo(f"imgsearch: serving on {host}: anyone who can reach it sees the index",
                   err=True)  # fmt: skip
    state = ServerState(ctx.obj, embedding, max_upload)
    quiet = bool(ctx.find_root().meta.get("quiet"))
    uvicorn.run(create_app(state), host=host, port=port,
                log_level="warning" if quiet else "info")  # fmt: skip
