"""What the ASGI apps (MCP Streamable HTTP, monitor, simulator) share: lifespan, headers,
the request body, and a reply that knows whether it has started."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from functools import lru_cache
from typing import Any

from exai.protocol import INVALID_REQUEST, dump, error_message

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer hypercorn's lifespan protocol: nothing to start, nothing to stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


Headers = list[tuple[bytes, bytes]]


@lru_cache(maxsize=64)  # a client sends the same Accept with every request
def accepts(accept: str, media_type: str) -> bool:
    """Whether an Accept header value admits `media_type` (wildcards included)."""
    kind = media_type.split("/")[0]
    ranges = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(ranges & {media_type, f"{kind}/*", "*/*"})


def header_map(raw_headers: Headers) -> dict[str, str]:
    """The request's headers by lower-case name; repeated ones joined with ", " (RFC 9110)."""
    raw: dict[bytes, bytes] = {}
    for name, value in raw_headers:
        raw[name] = raw[name] + b", " + value if name in raw else value
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw.items()}


class ClientGone(Exception):
    """The client disconnected while sending its request."""


async def read_body(headers: dict[str, str], receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it exceeds `limit` bytes; ClientGone if the client left."""
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise ClientGone
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)


class Reply:
    """One ASGI response; knows whether it has started (an error after that cannot be sent)."""

    def __init__(self, send: Send):
        self._send = send
        self.started = False
        # hypercorn closes a connection whose request body was not read to its end; an answer
        # sent before then says so, or a keep-alive client sends its next request into it.
        self.body_unread = False

    async def start(self, status: int, headers: Headers) -> None:
        self.started = True
        if self.body_unread:
            headers = [*headers, (b"connection", b"close")]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = False) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, body: bytes, headers: Headers | None = None) -> None:
        await self.start(status, [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *(headers or []),
        ])
        await self.body(body)

    async def empty(self, status: int) -> None:
        await self.start(status, [(b"content-length", b"0")])
        await self.body(b"")

    async def refuse(
        self,
        status: int,
        message: str,
        code: int = INVALID_REQUEST,
        data: Any = None,
        headers: Headers | None = None,
    ) -> None:
        """An HTTP error whose body is a JSON-RPC error without an id (the spec's form)."""
        body = dump(error_message(None, code, message, data)).encode()
        await self.json(status, body, headers)
