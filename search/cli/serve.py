"""`imgsearch serve`: the HTTP API and the web page, on loopback unless asked otherwise."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import click

from indexer.options import ModelOptions
from search.cli.common import ByteSize, DomainError, current_settings, domain_errors, model_options

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> tuple[str, ...]:
    """The Host headers a request may carry: the loopback names, or the address served on."""
    if is_loopback(host):
        return LOOPBACK_NAMES
    if host in ("0.0.0.0", "::"):
        return ("*",)  # every interface: the user named none (a notice says so)
    return (host, *LOOPBACK_NAMES)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one line saying why not (a busy port, say)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DomainError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback exposes your photos' paths "
    "and thumbnails to the network.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--max-upload",
    type=ByteSize(),
    default="20M",
    show_default=True,
    help="Largest image a search may upload.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=100_000_000,
    show_default=True,
    help="Refuse larger uploads and thumbnails from their header.",
)
@click.option(
    "--keep-in",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A reference folder for the review (repeatable): its files are kept, never acted on.",
)
@model_options
@click.pass_context
@domain_errors
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    max_upload: int,
    max_pixels: int,
    keep_in: tuple[Path, ...],
    embedding: ModelOptions,
) -> None:
    """Serve the index: a web page to search, browse and review duplicates, and a JSON API
    (its endpoints at /docs, the schema at /openapi.json).

    \b
    imgsearch serve                      # http://127.0.0.1:8000
    imgsearch serve --port 9000
    imgsearch serve --host 0.0.0.0       # reachable from the network: only if you mean it
    """
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from search.server.app import create_app
    from search.server.state import ServerState
    from search.sets import Sets
    from store import Store

    home = current_settings(ctx).home
    Store.open(home).close()  # no index: one line and exit 1 now, not on the first request
    if not is_loopback(host):
        click.echo(
            f"imgsearch: serving on {host}: anyone who can reach it sees the index", err=True
        )
    sock = bind(host, port)
    state = ServerState(home, embedding, max_upload, max_pixels, allowed_hosts(host))
    state.sets = Sets.of([str(f) for f in keep_in])
    state.warm()  # the review's groups, found while the page loads
    quiet = current_settings(ctx).quiet
    logging = {
        **LOGGING_CONFIG,
        "handlers": {
            name: {**handler, "stream": "ext://sys.stderr"}  # stdout is for results
            for name, handler in LOGGING_CONFIG["handlers"].items()
        },
    }
    config = uvicorn.Config(
        create_app(state), log_level="warning" if quiet else "info", log_config=logging
    )
    click.echo(f"imgsearch: serving {home} on http://{host}:{sock.getsockname()[1]}/", err=True)
    uvicorn.Server(config).run(sockets=[sock])
