"""`imgsearch serve`: a JSON API (FastAPI, OpenAPI at /docs) and a web page over one index home.

Safety: files are only ever read, never written, and only files the catalog lists, by id;
a file that is no longer the one indexed (size or mtime changed) or has become a symlink is
refused, so neither `..` nor a swapped-in link can reach anything else. Uploads are size-capped
and must decode as images; they are decoded and embedded in memory, never written. Errors are JSON
`{"detail": ...}` with a proper status code. The model is loaded once, on the first upload.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from indexer.errors import UnreadableImage
from indexer.options import ModelOptions
from search import render
from search.dupes import DupeOptions, find_duplicates
from search.keep import KEEP_HELP, parse_keep
from search.query import QueryOptions, by_id, by_path, by_vector
from search.thumbnails import jpeg_thumbnail
from store import ImageRecord, ImgsearchError, IndexNotFound, InvalidOption, ItemNotFound, Store

PAGE = Path(__file__).resolve().parent / "web" / "index.html"
DEFAULT_MAX_UPLOAD = 20 << 20  # bytes


@dataclass
class ServerState:
    """One open store (reopened when an index run changed the catalog) and the loaded model."""

    home: Path
    embedding: ModelOptions
    max_upload: int = DEFAULT_MAX_UPLOAD
    lock: threading.Lock = field(default_factory=threading.Lock)
    store: Store | None = None
    embedder: Any = None  # indexer.embed.Embedder, loaded on the first upload

    @contextmanager
    def current(self) -> Iterator[Store]:
        """The store, up to date with the catalog; one request at a time."""
        with self.lock:
            if self.store is not None and not self.store.is_current():
                self.store.close()
                self.store = None
            if self.store is None:
                self.store = Store.open(self.home)
            yield self.store


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="imgsearch", summary="Similar and duplicate images, by embeddings.")

    @app.exception_handler(ImgsearchError)
    def library_error(_request: Request, exc: ImgsearchError) -> JSONResponse:
        return JSONResponse({"detail": detail_of(exc)}, status_code=status_of(exc))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """The index: model, dimension, count, index type."""
        with state.current() as store:
            failed = sorted(store.failures().values(), key=lambda f: f.path)
            return render.info_json(str(state.home), store.meta, store.count(), failed)

    @app.get("/api/search")
    def search(
        id: Annotated[int | None, Query(description="An indexed image's id.")] = None,
        path: Annotated[str | None, Query(description="An indexed image's path.")] = None,
        k: Annotated[int, Query(ge=1, le=1000)] = 12,
        min_score: float | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """Neighbours of an indexed image, by id or by path (itself excluded)."""
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
        min_score: float | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """Neighbours of an uploaded image, embedded with the index's model (kept loaded)."""
        data = file.file.read(state.max_upload + 1)
        if len(data) > state.max_upload:
            raise HTTPException(413, f"upload larger than {state.max_upload} bytes")
        name = file.filename or "upload"
        with state.current() as store:
            vector = _embed_upload(state, store, data, name)
            found = by_vector(store, vector, name, QueryOptions(k, min_score, tag))
            return _with_sizes(render.query_json(found), store)

    @app.get("/api/dupes")
    def dupes(
        threshold: Annotated[float | None, Query(ge=-1, le=1)] = None,
        keep: Annotated[str, Query(description=KEEP_HELP)] = "largest",
        exact_only: bool = False,
    ) -> dict[str, Any]:
        """Duplicate groups, each with the copy to keep."""
        policy = parse_keep(keep)  # InvalidOption: 400
        with state.current() as store:
            found = find_duplicates(store, DupeOptions(threshold, None, exact_only, policy))
            return render.dupes_json(found, policy.name)

    @app.post("/api/dupes/ignore")
    def ignore(ids: list[int]) -> dict[str, int]:
        """Remember that these images are not duplicates of each other (in the catalog only)."""
        with state.current() as store:
            records = store.records(ids)
            if len(records) != len(set(ids)) or len(records) < 2:
                raise HTTPException(400, "give at least two ids of indexed images")
            if len({r.content_hash for r in records.values()}) < 2:
                raise HTTPException(400, "identical files are always duplicates")
            return {"remembered": store.ignore_pairs([r.content_hash for r in records.values()])}

    @app.get("/api/images/{image_id}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})  # fmt: skip
    def thumbnail(image_id: int, size: Annotated[int, Query(ge=16, le=1024)] = 256) -> Response:
        """A JPEG thumbnail of an indexed image."""
        with state.current() as store:
            record = store.records([image_id]).get(image_id)
        if record is None:
            raise HTTPException(404, f"no image with id {image_id} in the index")
        _check_servable(record)
        try:
            data = jpeg_thumbnail(record.path, size)
        except Exception as exc:  # PIL raises many kinds for a damaged file
            raise HTTPException(422, f"{record.path}: cannot be read as an image") from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=60"})

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


def _check_servable(record: ImageRecord) -> None:
    """Only the very file that was indexed: not a symlink now, same size and mtime."""
    try:
        st = os.lstat(record.path)
    except OSError as exc:
        raise HTTPException(404, f"{record.path}: no longer on disk") from exc
    if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (
        record.size,
        record.mtime_ns,
    ):
        raise HTTPException(409, f"{record.path}: changed since it was indexed; index it again")


def _embed_upload(state: ServerState, store: Store, data: bytes, name: str) -> Any:
    """The upload's embedding, decoded from memory (nothing is written to disk)."""
    from indexer.decode import decode
    from indexer.runtime import load_embedder
    from indexer.spec import resolve_model

    if state.embedder is None:
        state.embedder = load_embedder(resolve_model(state.embedding, store.meta))
    pixels = decode(data, name, state.embedder.prep).pixels  # UnreadableImage: 415
    return state.embedder.run(pixels[None]).vectors[0]


def _with_sizes(result: dict[str, Any], store: Store) -> dict[str, Any]:
    """Results with each image's pixel size and thumbnail URL, for the page."""
    records = store.records(r["id"] for r in result["results"])
    for r in result["results"]:
        record = records.get(r["id"])
        r["width"], r["height"] = (record.width, record.height) if record else (None, None)
        r["thumbnail"] = f"/api/images/{r['id']}/thumbnail"
    return result
