"""`imgsearch serve`: a JSON API and a web page over one index home.

Safety. Files are read only through the catalog, by id, and only while they are still the file
that was indexed (same size and mtime, not a symlink): no path in a request reaches the disk.
Requests whose Host is not one this server was bound to are refused (DNS rebinding). Uploads
are refused by Content-Length and cut off while streaming past the cap, and decoded in memory
with the same header pixel limit as `index`; thumbnails are drafted, cached and decoded a few at
a time, so one huge image cannot stall the server. Errors are JSON `{"detail": ...}` with a
status code. Changes (review actions, "not duplicates") go through the one planner and journal
of search/actions/, under the writer lock (search/server/review.py).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from indexer.errors import UnreadableImage
from search import render
from search.query import QueryOptions, by_id, by_path, by_vector
from search.server.review import add_review
from search.server.state import THUMBNAIL_CACHE_BYTES, ServerState
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
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(state.hosts))
    app.middleware("http")(_body_limit(state.max_upload))

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
        vector = _embed_upload(state, data, name)
        with state.current() as store:
            found = by_vector(store, vector, name, QueryOptions(k, min_score, tag))
            return _with_sizes(render.query_json(found), store)

    @app.get("/api/browse")
    def browse(
        folder: Annotated[str | None, Query(description="Only images under this folder.")] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 60,
    ) -> dict[str, Any]:
        """Indexed images, newest first, with the folders that hold them."""
        with state.current() as store:
            records = sorted(
                store.catalog.file_states().values(), key=lambda r: (-r.mtime_ns, r.path)
            )
        folders = sorted({os.path.dirname(r.path) for r in records})
        if folder:
            records = [r for r in records if os.path.dirname(r.path) == folder]
        page = records[offset : offset + limit]
        return {
            "total": len(records),
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
        _check_servable(record)
        data = _thumbnail(state, record, size)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=60"})

    add_review(app, state)
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


def _check_servable(record: ImageRecord) -> None:
    """Only the very file that was indexed: not a symlink now, same size and mtime."""
    try:
        st = os.lstat(record.path)
    except OSError as exc:
        raise HTTPException(404, f"{record.path}: no longer on disk") from exc
    same = (st.st_size, st.st_mtime_ns) == (record.size, record.mtime_ns)
    if not stat.S_ISREG(st.st_mode) or not same:
        raise HTTPException(409, f"{record.path}: changed since it was indexed; index it again")


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


def _embed_upload(state: ServerState, data: bytes, name: str) -> Any:
    """The upload's embedding, decoded from memory with the pixel limit (nothing is written)."""
    from indexer.decode import decode

    embedder = _embedder(state)
    with state.decodes:
        pixels = decode(data, name, embedder.prep, state.max_pixels).pixels  # 415 if unreadable
    return embedder.run(pixels[None]).vectors[0]


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
