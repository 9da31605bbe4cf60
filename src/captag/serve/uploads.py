"""Uploads: the request-size limit, and images decoded from their bytes with Pillow, whatever
their name or content type.

`UploadLimit` refuses a body over the limit (413, JSON) from its Content-Length before reading
it, and counts the bytes of a body streamed without one, stopping as soon as they pass the limit.
Every problem with an image is an HTTPException with a 4xx status and a message that names the item: not an
image (415), empty, damaged or truncated (422), more pixels than Pillow's decompression-bomb
limit, `PIL.Image.MAX_IMAGE_PIXELS` (422). A client's string is never used as a path.
"""

from __future__ import annotations

import io

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from captag.data.images import open_image


def decode_image(data: bytes, name: str = "image") -> Image.Image:
    """The RGB image in `data`, fully decoded; HTTPException (4xx) naming `name` otherwise."""
    if not data:
        raise HTTPException(422, f"{name}: the file is empty; upload a photo (JPEG, PNG, ...).")
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(image, name)
            image.load()
            return open_image(image, name)
    except UnidentifiedImageError:
        raise HTTPException(415, f"{name}: not an image that Pillow can read; upload a photo "
                                 "(JPEG, PNG, WebP, ...).") from None
    except Image.DecompressionBombError as error:
        raise HTTPException(422, f"{name}: too large to decode ({error}).") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise HTTPException(422, f"{name}: the image is damaged or truncated ({error}).") from None


def _check_pixels(image: Image.Image, name: str) -> None:
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise HTTPException(422, f"{name}: {width} x {height} pixels, more than the {limit:,} "
                                 "this server decodes (a decompression bomb?).")


class UploadLimit:
    """ASGI middleware: at most `max_bytes` of request body, else 413 with a JSON message."""

    def __init__(self, app: ASGIApp, max_bytes: int, message: str):
        self.app, self.max_bytes, self.message = app, max_bytes, message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": self.message}, 413, headers={"Connection": "close"})
            return await response(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)
