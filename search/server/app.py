"""`imgsearch serve`: a JSON API and a web page over one index home.

Safety. Files are read only through the catalog, by id, and only while they are still the file
that was indexed (same size and mtime, not a symlink): no path in a request reaches the disk.
Requests whose Host is not one this server was bound to are refused (DNS rebinding), and so is
any change or upload sent by a page of another origin (a form needs no CORS preflight). Uploads
are refused by Content-Length and cut off while streaming past the cap, and decoded in memory
with the same header pixel limit as `index`; thumbnails are drafted, cached and decoded a few at
a time, so one huge image cannot stall the server. Errors are JSON `{"detail": ...}` with a
status code. Changes (review actions, "not duplicates") go through the one planner and journal
of search/actions/, under the writer lock (search/server/review.py).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from indexer.errors import UnreadableImage
from search import render
from search.query import QueryOptions, QueryResult, by_id, by_images, by_path
from search.server.compare import add_compare
from search.server.review import add_review
from search.server.state import THUMBNAIL_CACHE_BYTES, ServerState, check_servable
from search.thumbnails import TooManyPixels, jpeg_thumbnail
from store import ImageRecord, ImgsearchError, IndexNotFound, InvalidOption, ItemNotFound, Store

PAGE = Path(__file__).resolve().parent / "web" / "index.html"


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(
        title="imgsearch",
        summary="Similar and duplicate images, by embeddings.",
        docs_url=None,
        redoc_url=None,
    )
    app.middleware("http")(_body_limit(state.max_upload))
    app.middleware("http")(_same_site(state.hosts))

    @app.exception_handler(ImgsearchError)
    def library_error(_request: Request, exc: ImgsearchError) -> JSONResponse:
        return JSONResponse({"detail": detail_of(exc)}, status_code=status_of(exc))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """The API, from its OpenAPI schema, as a page that needs nothing from the network."""
        return HTMLResponse(render.api_page(app.openapi()))

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """The index: model, dimension, count, index type; and whether the model is loaded."""
        with state.current() as store:
            failed = sorted(store.catalog.failures().values(), key=lambda f: f.path)
            found = render.info_json(str(state.home), store.meta, store.catalog.count(), failed)
        return {**found, "model_state": state.model_state}

    @app.get("/api/search")
    def search(
        id: Annotated[int | None, Query(description="An indexed image's id.")] = None,
        path: Annotated[str | None, Query(description="An indexed image's path.")] = None,
        k: Annotated[int, Query(ge=1, le=1000)] = 12,
        min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """Neighbours of an indexed image, by id or by path (itself excluded), copies first."""
        if (id is None) == (path is None):
            raise HTTPException(400, "give exactly one of id and path")
        options = QueryOptions(k, min_score, tag)
        with state.current() as store:
            found = (
                by_id(store, id, options) if id is not None else by_path(store, str(path), options)
            )
            return _with_sizes(render.query_json(found), store)

    @app.post("/api/search")
    def search_upload(
        file: Annotated[UploadFile, File(description="An image file.")],
        k: Annotated[int, Query(ge=1, le=1000)] = 12,
        min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """Neighbours of an uploaded image, embedded with the index's model (kept loaded)."""
        data = file.file.read(state.max_upload + 1)
        if len(data) > state.max_upload:
            raise HTTPException(413, f"upload larger than {state.max_upload} bytes")
        name = file.filename or "upload"
        found = _search_upload(state, data, name, QueryOptions(k, min_score, tag))
        with state.current() as store:
            return _with_sizes(render.query_json(found), store)

    @app.get("/api/browse")
    def browse(
        folder: Annotated[str | None, Query(description="Only images under this folder.")] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 60,
    ) -> dict[str, Any]:
        """Indexed images, newest first, with the folders that hold them. A page is read
        from the catalog in index order (no sort of the whole catalog per request)."""
        with state.current() as store:
            total, page = store.catalog.newest(folder or None, offset, limit)
            folders = state.folders(store)
        return {
            "total": total,
            "folders": folders,
            "images": [{**render.record_json(r), "thumbnail": _thumb_url(r.id)} for r in page],
        }

    @app.get(
        "/api/images/{image_id}/thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def thumbnail(image_id: int, size: Annotated[int, Query(ge=16, le=1024)] = 256) -> Response:
        """A JPEG thumbnail of an indexed image."""
        with state.current() as store:
            record = store.catalog.records([image_id]).get(image_id)
        if record is None:
            raise HTTPException(404, f"no image with id {image_id} in the index")
        check_servable(record)
        data = _thumbnail(state, record, size)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=60"})

    add_review(app, state)
    add_compare(app, state)
    return app


def status_of(exc: ImgsearchError) -> int:
    """The HTTP status of a library error: the one place the server maps the root."""
    if isinstance(exc, ItemNotFound):
        return 404
    if isinstance(exc, IndexNotFound):
        return 503
    if isinstance(exc, UnreadableImage):
        return 415
    if isinstance(exc, InvalidOption):
        return 422
    return 400


def detail_of(exc: ImgsearchError) -> str:
    """The error in the API's words: the parameter it is about, by its query name."""
    text = " ".join(str(exc).split())
    return f"{exc.field}: {text}" if exc.field else text


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def _body_limit(limit: int) -> Callable[..., Awaitable[Response]]:
    """Refuse a body larger than `limit` (+ room for the multipart envelope) by its
    Content-Length, and stop reading one that streams past it."""
    cap = limit + (64 << 10)

    async def middleware(
        request: Request, call_next: Callable[..., Awaitable[Response]]
    ) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            return JSONResponse({"detail": f"upload larger than {limit} bytes"}, status_code=413)
        received = 0
        upstream: Receive = request.receive

        async def limited() -> MutableMapping[str, Any]:
            nonlocal received
            message = await upstream()
            received += len(message.get("body", b""))
            if received > cap:
                raise _TooLarge
            return message

        request._receive = limited  # the body is read through this from here on
        try:
            return await call_next(request)
        except _TooLarge:
            return JSONResponse({"detail": f"upload larger than {limit} bytes"}, status_code=413)

    return middleware


class _TooLarge(Exception):
    pass


def host_name(header: str) -> str:
    """The name in a Host or Origin header without scheme and port: `[::1]:8000` is `::1`."""
    name = header.split("://", 1)[-1].split("/", 1)[0]
    if name.startswith("["):  # an IPv6 address
        return name[1 : name.find("]")] if "]" in name else name
    return name.rsplit(":", 1)[0] if name.count(":") == 1 else name


def _same_site(hosts: tuple[str, ...]) -> Callable[..., Awaitable[Response]]:
    """Refuse a request whose Host is not one this server was bound to (DNS rebinding), and a
    change (any method but GET and HEAD) sent by a page of another origin: a form on another
    site can post an upload or an action without the preflight a JSON request would need."""

    def allowed(name: str) -> bool:
        return "*" in hosts or name.lower() in hosts

    async def middleware(
        request: Request, call_next: Callable[..., Awaitable[Response]]
    ) -> Response:
        if not allowed(host_name(request.headers.get("host", ""))):
            return JSONResponse({"detail": "Invalid host header"}, status_code=400)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            host = request.headers.get("host", "").lower()
            cross = request.headers.get("sec-fetch-site") == "cross-site"
            if cross or (origin is not None and origin.split("://", 1)[-1].lower() != host):
                return JSONResponse(
                    {"detail": "a change sent by a page of another origin is refused"},
                    status_code=403,
                )
        return await call_next(request)

    return middleware


def _thumbnail(state: ServerState, record: ImageRecord, size: int) -> bytes:
    key = (record.id, record.size, record.mtime_ns, size)
    with state.lock:
        cached = state.thumbnails.get(key)
        if cached is not None:
            state.thumbnails.move_to_end(key)
            return cached
    with state.decodes:
        try:
            data = jpeg_thumbnail(record.path, size, state.max_pixels)
        except TooManyPixels as exc:
            raise HTTPException(
                415, f"{record.path}: too many pixels for a thumbnail ({exc}; see --max-pixels)"
            ) from exc
        except Exception as exc:  # PIL raises many kinds for a damaged file
            raise HTTPException(422, f"{record.path}: cannot be read as an image") from exc
    with state.lock:
        state.thumbnails[key] = data
        state.thumbnail_bytes += len(data)
        while state.thumbnail_bytes > THUMBNAIL_CACHE_BYTES and state.thumbnails:
            _, dropped = state.thumbnails.popitem(last=False)
            state.thumbnail_bytes -= len(dropped)
    return data


def _search_upload(
    state: ServerState, data: bytes, name: str, options: QueryOptions
) -> QueryResult:
    """The query `imgsearch query IMAGE` runs (views, verification, verified copies first), on
    the upload written to a private temporary file for as long as the query takes. Its pixels
    are checked from the header first (415), and decoded within the server's pixel budget."""
    from indexer.decode import open_rgb

    pixels = _header_pixels(data)
    if pixels > state.max_pixels or pixels == 0:
        open_rgb(data, name, (1, 1), state.max_pixels)  # raises the reason (415), unread
    embedder = _embedder(state)
    suffix = os.path.splitext(name)[1].lower()
    with state.budget.taking(pixels), tempfile.TemporaryDirectory(prefix="imgsearch-") as tmp:
        path = os.path.join(tmp, "upload" + (suffix if suffix.isascii() else ""))
        with open(path, "xb") as handle:
            handle.write(data)
        try:
            with state.current() as store:
                found = by_images(store, [path], options, embedder)[0]
        except UnreadableImage as exc:
            raise UnreadableImage(name, exc.reason) from exc
    return dataclasses.replace(found, query=name)


def _header_pixels(data: bytes) -> int:
    """Width x height as the file's header says (0 when it says nothing readable)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.width * image.height)
    except Exception:  # unreadable: decode() says why, with the file's name
        return 0


def _embedder(state: ServerState) -> Any:
    if state.embedder is None:
        from indexer.runtime import load_embedder
        from indexer.spec import resolve_model

        with state.current() as store:
            spec = resolve_model(state.embedding, store.meta)
        state.model_state = "loading"
        try:
            state.embedder = load_embedder(spec)
        except ImgsearchError as exc:
            state.model_state = f"failed: {exc}"
            raise
        state.model_state = "ready"
    return state.embedder


def _thumb_url(image_id: int) -> str:
    return f"/api/images/{image_id}/thumbnail"


def _with_sizes(result: dict[str, Any], store: Store) -> dict[str, Any]:
    """Results with each image's pixel size and thumbnail URL, for the page."""
    records = store.catalog.records(r["id"] for r in result["results"])
    for r in result["results"]:
        record = records.get(r["id"])
        r["width"], r["height"] = (record.width, record.height) if record else (None, None)
        r["thumbnail"] = _thumb_url(r["id"])
    return result
