"""Uploads: the request-size limit, and images decoded from their bytes with Pillow, whatever
their name or content type.

`UploadLimit` refuses a body over the limit (413, JSON) from its Content-Length, or as soon as
the bytes streamed without one pass the limit. Like nginx's `lingering_close`, it reads and
discards the rest of the body (up to `DRAIN_BYTES`, 4x the limit or 64 MB, whichever is more, for
at most `DRAIN_SECONDS`) before it answers, so that a client that sends its whole body before
reading (urllib, requests, browsers) reads the 413 instead of a reset; a body past that bound is
cut off. A client that asks `Expect: 100-continue` and waits (curl) gets the 413 before it sends
anything. When the body that made a request too large is a text field over its own limit, the
413 names that field.
Every problem with an image is an HTTPException with a 4xx status and a message that names the item: not an
image (415), empty, damaged or truncated (422), more pixels than Pillow's decompression-bomb
limit, `PIL.Image.MAX_IMAGE_PIXELS` (422). A client's string is never used as a path.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
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


DRAIN_MIN_BYTES = 64 * 2**20  # the least an over-limit body is read (and discarded) before a 413
DRAIN_SECONDS = 10.0  # the longest it is read for


class UploadLimit:
    """ASGI middleware: at most `max_bytes` of request body, else a 413 with a JSON message
    that the client can read. A text field over `max_field_bytes` is named in that message."""

    def __init__(self, app: ASGIApp, max_bytes: int, message: str, max_field_bytes: int = 0):
        self.app, self.max_bytes, self.message = app, max_bytes, message
        self.max_field_bytes = max_field_bytes
        self.drain_bytes = max(4 * max_bytes, DRAIN_MIN_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        body = _Body(receive, headers.get("expect", "").lower() == "100-continue")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            fields = _TextFieldSizes(headers.get("content-type", ""))
            await body.drain(self.drain_bytes, fields.feed)
            response = JSONResponse({"detail": self._refusal(fields)}, 413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)

        async def counted() -> Message:
            message = await body.receive()
            if body.received > self.max_bytes:
                raise HTTPException(413, self.message)
            return message

        async def send_after_the_body(message: Message) -> None:
            if message["type"] == "http.response.start" and not body.done:
                await body.drain(self.drain_bytes)
                if not body.done:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, send_after_the_body)

    def _refusal(self, fields: "_TextFieldSizes") -> str:
        name, size = fields.largest()
        if self.max_field_bytes and size > self.max_field_bytes:
            return (f"{name}: {size / 2**20:.1f} MB of text, over the "
                    f"{self.max_field_bytes // 1000} KB limit for a text field; {self.message}")
        return self.message


@dataclass
class _Body:
    """A request's body as it arrives: bytes received so far, and whether it has all come."""

    _receive: Receive
    client_waits: bool  # Expect: 100-continue: the client sends nothing until it is asked to
    received: int = 0
    done: bool = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
        else:  # http.disconnect
            self.done = True
        return message

    async def drain(self, max_bytes: int, feed=None) -> None:
        """Read and discard the rest of the body, up to `max_bytes` in all or `DRAIN_SECONDS`;
        each piece goes to `feed` first."""
        if self.client_waits and self.received == 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while not self.done and self.received <= max_bytes and loop.time() < deadline:
            try:
                message = await asyncio.wait_for(self.receive(), deadline - loop.time())
            except TimeoutError:
                return
            if feed is not None:
                feed(message.get("body", b""))


@dataclass
class _TextFieldSizes:
    """The size of each text field (a part without a filename) of a multipart body fed to it
    piece by piece; nothing for a body that is not multipart or that it cannot parse."""

    content_type: str
    sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        kind, options = parse_options_header(self.content_type)
        self._part, self._field, self._value = None, b"", b""
        self._parser = None
        if kind == b"multipart/form-data" and options.get(b"boundary"):
            self._parser = MultipartParser(options[b"boundary"], {
                "on_part_begin": self._begin, "on_header_value": self._header_value,
                "on_header_field": self._header_field, "on_header_end": self._header_end,
                "on_part_data": self._data})

    def feed(self, data: bytes) -> None:
        if self._parser is not None and data:
            try:
                self._parser.write(data)
            except FormParserError:  # a malformed body: the sizes stop where it went wrong
                self._parser = None

    def largest(self) -> tuple[str, int]:
        """The name and size of the largest text field ("", 0 when there is none)."""
        return max(self.sizes.items(), key=lambda item: item[1], default=("", 0))

    def _begin(self) -> None:
        self._part, self._field, self._value = None, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._field.lower() == b"content-disposition":
            _, options = parse_options_header(self._value)
            if b"filename" not in options:
                self._part = options.get(b"name", b"").decode("latin-1")
                self.sizes.setdefault(self._part, 0)
        self._field, self._value = b"", b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part is not None:
            self.sizes[self._part] += end - start
