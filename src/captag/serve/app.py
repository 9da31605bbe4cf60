"""The FastAPI app: POST /predict and /predict/batch, GET /health and /info, the page at /, /docs.

Requests are multipart forms; images are only ever uploaded bytes, decoded with Pillow. A body
over the upload limit, or a caption over its own limit, is refused with a 413 that the client can
read (`uploads.UploadLimit`). Every refusal is JSON `{"detail": "what was wrong"}`.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError, StarletteHTTPException
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from captag import __version__
from captag.data.labels import LabelMap
from captag.errors import CaptagError
from captag.serve.batcher import MicroBatcher
from captag.serve.model import ServedModel
from captag.serve.schemas import ERRORS, BatchResponse, Health, Info, PredictResponse
from captag.serve.uploads import UploadLimit, decode_image

STATIC = Path(__file__).parent / "static"
MAX_ITEMS = 64  # items in one /predict/batch request
MAX_CAPTION_BYTES = 100_000  # a longer caption is refused (413), naming its field
DECODE_THREADS = min(4, os.cpu_count() or 1)  # photos decoded at once (bounds their memory)
FIELDS = {"/predict": "send the photo in the multipart field 'image' and its caption in 'caption'",
          "/predict/batch": "send each photo in a multipart field 'images' and each caption in a "
                            "field 'captions', in the same order"}


@dataclass(frozen=True)
class Settings:
    max_upload_mb: float = 10.0
    max_batch_wait_ms: float = 5.0
    max_batch_size: int = 16


def create_app(model: ServedModel, settings: Settings = Settings()) -> FastAPI:
    """The app serving `model` (loaded once, shared by every request)."""
    batcher = MicroBatcher(model.predict, settings.max_batch_size, settings.max_batch_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()

    max_bytes = int(settings.max_upload_mb * 2**20)
    app = FastAPI(title="captag", version=__version__, lifespan=lifespan,
                  description=f"Labels for a photo and its caption: {label_summary(model.labels)}.",
                  form_limits={"max_part_size": max_bytes})  # captions: `_check_captions`
    app.state.model, app.state.batcher, app.state.settings = model, batcher, settings
    app.state.decoder = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="captag-decode")
    app.add_middleware(UploadLimit, max_bytes=max_bytes, max_field_bytes=MAX_CAPTION_BYTES,
                       message=f"The request is over the {settings.max_upload_mb:g} MB upload "
                               "limit: send a smaller photo.")
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(CaptagError, _input_error)
    app.add_exception_handler(Exception, _server_error)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


router = APIRouter()


@router.post("/predict", response_model=PredictResponse, responses=ERRORS)
async def predict(request: Request,
                  image: Annotated[UploadFile, File(description="the photo (any format Pillow reads)")],
                  caption: Annotated[str, Form(description="its caption")]) -> dict:
    """Labels and every label's probability for one photo and its caption."""
    start = time.perf_counter()
    results = await _predict(request, [await image.read()], [caption], [("image", "caption")])
    return {**results[0], "time_ms": _ms_since(start)}


@router.post("/predict/batch", response_model=BatchResponse, responses=ERRORS)
async def predict_batch(
        request: Request,
        images: Annotated[list[UploadFile], File(description=f"1 to {MAX_ITEMS} photos, one "
                                                             "multipart field 'images' each")],
        captions: Annotated[list[str], Form(description="their captions, one field 'captions' "
                                                        "each, in the same order")]) -> dict:
    """Up to 64 photos with their captions in one multipart request (fields `images` and
    `captions`, repeated, paired in order); one result per item, in that order."""
    start = time.perf_counter()
    if len(images) > MAX_ITEMS:
        raise HTTPException(422, f"{len(images)} images: send at most {MAX_ITEMS} per batch.")
    if len(images) != len(captions):
        raise HTTPException(422, f"{len(images)} images but {len(captions)} captions: send one "
                                 "caption per image, in the same order.")
    data = [await image.read() for image in images]
    names = [(f"images[{i}]", f"captions[{i}]") for i in range(len(data))]
    return {"results": await _predict(request, data, captions, names), "time_ms": _ms_since(start)}


@router.get("/health", response_model=Health)
async def health(request: Request) -> dict:
    """The server is up; how many model calls it made, for how many items."""
    batcher: MicroBatcher = request.app.state.batcher
    return {"status": "ok", "batches": batcher.batches, "items": batcher.items}


@router.get("/info", response_model=Info)
async def info(request: Request) -> dict:
    """The model, its labels, thresholds, sizes and where it came from; the server's limits."""
    limits = {"max_upload_mb": request.app.state.settings.max_upload_mb,
              "max_batch_items": MAX_ITEMS, "max_caption_bytes": MAX_CAPTION_BYTES}
    return {**request.app.state.model.info(), "limits": limits}


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


async def _predict(request: Request, data: list[bytes], captions: list[str],
                   names: list[tuple[str, str]]) -> list[dict]:
    """Decode and check the items off the event loop, then predict them through the batcher."""
    _check_captions(captions, [caption_name for _, caption_name in names])
    state = request.app.state
    items = await asyncio.get_running_loop().run_in_executor(
        state.decoder, _prepare, state.model, data, captions, names)
    images, truncated = [i for i, _ in items], [t for _, t in items]
    results = await state.batcher.submit(images, [c.strip() for c in captions])
    return [{**result, "caption_truncated": cut} for result, cut in zip(results, truncated)]


def label_summary(labels: LabelMap, shown: int = 12) -> str:
    """The model's labels in a few words: '18 COCO labels (person, ...)', '4 labels (...)'."""
    kind = "COCO labels" if labels == LabelMap.default() else "labels"
    names = ", ".join(labels.names[:shown]) + (", ..." if len(labels) > shown else "")
    return f"{len(labels)} {kind} ({names})"


def _check_captions(captions: list[str], names: list[str]) -> None:
    for caption, name in zip(captions, names):
        size = len(caption.encode())
        if size > MAX_CAPTION_BYTES:
            raise HTTPException(413, f"{name}: {size / 1000:,.0f} KB, over the "
                                     f"{MAX_CAPTION_BYTES // 1000} KB limit for a caption: send "
                                     "a shorter one.")


def _prepare(model: ServedModel, data: list[bytes], captions: list[str],
             names: list[tuple[str, str]]) -> list[tuple]:
    """(decoded image, caption truncated?) per item; HTTPException naming the first bad field."""
    items = []
    for blob, caption, (image_name, caption_name) in zip(data, captions, names):
        if not caption.strip():
            raise HTTPException(422, f"{caption_name}: the caption is empty; describe the photo "
                                     "in a few words.")
        items.append((decode_image(blob, image_name), model.caption_truncated(caption.strip())))
    return items


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": str(error.detail)}, error.status_code, headers=error.headers)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = [_problem(e) for e in error.errors()]
    hint = FIELDS.get(request.url.path, "")
    return JSONResponse({"detail": "; ".join(problems) + (f" ({hint})." if hint else ".")}, 422)


async def _input_error(request: Request, error: CaptagError) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, 422)


async def _server_error(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"The server failed on this request ({type(error).__name__}); "
                                   "this is a bug in captag, not in the request."}, 500)


def _problem(error: dict) -> str:
    field = error["loc"][-1] if error.get("loc") else "request"
    if error.get("type") == "missing":
        return f"field '{field}' is missing"
    return f"field '{field}': {error.get('msg', 'wrong value')}"
