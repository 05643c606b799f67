"""Streamable HTTP as MCP 2026-07-28 serves it: no session, each POST stands alone.

The routing headers must mirror the body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`);
every check is done here, before anything starts. A request is answered on its own response
(JSON, or an SSE stream of its progress, then its response), and the client closing that
response is the request's cancellation: its call is cancelled at once, as for a WebSocket
disconnect. Calls of one client (`clientInfo.name` at one peer address) share the
`client:<name>@<address>` limiter.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from typing import TYPE_CHECKING, Final

from exai.asgi import Receive, Reply
from exai.eras import MODERN
from exai.lifecycle import CancelReason
from exai.protocol import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    META_VERSION,
    METHOD_NOT_FOUND,
    MODERN_VERSIONS,
    UNSUPPORTED_VERSION,
    Message,
    Request,
    RpcError,
    error_message,
    is_modern,
    meta_of,
    parse_envelope,
)
from exai.protocol import dump as dump_message
from exai.session import Hooks, open_session
from exai.transports.http.sse import Event, Stream, write_events

if TYPE_CHECKING:
    from exai.server import Daemon

KEEP_ALIVE_S: Final = 10.0  # a subscriptions/listen stream silent this long gets an SSE comment
NAMED: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}  # Mcp-Name mirrors
STREAM_HEADERS: Final = [(b"x-accel-buffering", b"no")]
# HTTP status of a request refused before it starts, by JSON-RPC error code.
REFUSED_STATUS: Final = {HEADER_MISMATCH: 400, UNSUPPORTED_VERSION: 400, INVALID_PARAMS: 400, METHOD_NOT_FOUND: 404}
HEADER_NAMES: Final = {"mcp-protocol-version": "MCP-Protocol-Version", "mcp-method": "Mcp-Method", "mcp-name": "Mcp-Name"}
BASE64_PREFIX: Final = "=?base64?"
BASE64_SUFFIX: Final = "?="

_request_numbers = itertools.count(1)


def is_modern_post(message: Message, headers: dict[str, str]) -> bool:
    """A POST is modern when its body's `_meta` states a version, or (a notification, which
    has none) when its MCP-Protocol-Version header names a modern revision."""
    if isinstance(message, Request):
        return is_modern(message.params)
    return headers.get("mcp-protocol-version") in MODERN_VERSIONS


def header_value(headers: dict[str, str], name: str) -> str:
    """A routing header, decoded from `=?base64?...?=` when so encoded; RpcError -32020 when it
    is missing, malformed or holds characters a header may not."""
    raw = headers.get(name)
    shown = HEADER_NAMES[name]
    if raw is None:
        raise RpcError(HEADER_MISMATCH, f"HeaderMismatch: the {shown} header is missing")
    if not all(" " <= ch <= "~" or ch == "\t" for ch in raw):
        raise RpcError(HEADER_MISMATCH, f"HeaderMismatch: the {shown} header holds characters a header may not")
    if name == "mcp-name" and raw.startswith(BASE64_PREFIX) and raw.endswith(BASE64_SUFFIX):
        payload = raw[len(BASE64_PREFIX) : len(raw) - len(BASE64_SUFFIX)]
        try:
            return base64.b64decode(payload, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise RpcError(HEADER_MISMATCH, "HeaderMismatch: the Mcp-Name header is not valid base64 UTF-8") from None
    return raw


def check_request(request: Request, headers: dict[str, str]) -> str:
    """Every check a modern POST passes before it starts; the client's name, or RpcError."""
    meta = meta_of(request.params) or {}
    version = meta.get(META_VERSION)
    if header_value(headers, "mcp-protocol-version") != version:
        raise RpcError(HEADER_MISMATCH, "HeaderMismatch: MCP-Protocol-Version does not match the body's _meta version")
    if header_value(headers, "mcp-method") != request.method:
        raise RpcError(HEADER_MISMATCH, "HeaderMismatch: Mcp-Method does not match the body's method")
    field = NAMED.get(request.method)
    if field is not None and header_value(headers, "mcp-name") != request.params.get(field):
        raise RpcError(HEADER_MISMATCH, f"HeaderMismatch: Mcp-Name does not match the body's params.{field}")
    envelope = parse_envelope(request.params)
    if request.method not in MODERN.methods:
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {request.method}")
    return envelope.client_name


class ModernHttp:
    """The modern requests of one Streamable HTTP endpoint."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    async def post(
        self,
        message: Message,
        headers: dict[str, str],
        peer: str,
        receive: Receive,
        reply: Reply,
        json_ok: bool,
        sse_ok: bool,
    ) -> None:
        if not isinstance(message, Request):  # this revision defines none over HTTP
            await reply.empty(202)
            return
        try:
            client = check_request(message, headers)
        except RpcError as refused:
            body = dump_message(error_message(message.id, refused.code, refused.message, refused.data)).encode()
            await reply.json(REFUSED_STATUS[refused.code], body)
            return
        if message.method == "subscriptions/listen" and not sse_ok:
            await reply.refuse(406, "subscriptions/listen answers with a stream: Accept must include text/event-stream")
            return
        stream = Stream(next(_request_numbers), message.id, resumable=False)
        self.daemon.requests.add(stream.number, stream)  # shutdown waits for its last write
        try:
            await self._serve(message, client, peer, stream, receive, reply, json_ok, sse_ok)
        finally:
            self.daemon.requests.remove(stream.number)

    async def _serve(
        self,
        message: Request,
        client: str,
        peer: str,
        stream: Stream,
        receive: Receive,
        reply: Reply,
        json_ok: bool,
        sse_ok: bool,
    ) -> None:
        """Run the request in a session of its own until it is answered or its client leaves."""
        services = self.daemon.services
        async with services.limits.client(f"{client}@{peer}") as slots:
            seqs = itertools.count(1)
            answer: list[str] = []  # the response, once sent

            async def send(out: dict[str, object]) -> None:
                data = dump_message(out)
                stream.push(Event(next(seqs), stream, data))
                if "method" not in out and out.get("id") == message.id:
                    answer.append(data)
                    stream.finish()

            hooks = Hooks(call_ended=lambda request_id: stream.finish())
            async with open_session(services, f"m{stream.number}", send, hooks=hooks, slots=slots) as session:
                await session.dispatch(message)
                streaming = message.method in ("tools/call", "subscriptions/listen")
                if sse_ok and (streaming or not json_ok):
                    keep_alive = KEEP_ALIVE_S if message.method == "subscriptions/listen" else float("inf")
                    gone = await write_events(stream, 0, reply, receive, STREAM_HEADERS, keep_alive)
                else:
                    gone = await self._json(stream, answer, receive, reply)
                if gone:
                    if session.cancel_calls(CancelReason.DISCONNECT):
                        session.log.info("request {} of {}: stream closed by the client; call cancelled", message.id, client)

    async def _json(self, stream: Stream, answer: list[str], receive: Receive, reply: Reply) -> bool:
        """Answer with the response as JSON once there is one; True if the client left first."""
        while not stream.done:
            if await stream.wait(receive):
                return True
        if answer:
            await reply.json(200, answer[0].encode())
        else:  # cancelled before it answered: no response is owed
            await reply.empty(202)
        return False
