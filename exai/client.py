"""The trio client library for the exai daemon: MCP (JSON-RPC 2.0) over a WebSocket or
Streamable HTTP, one API for both (`connect` picks the transport by the URL's scheme).

Three rooms, each one idea:
- `ExaiClient`: the session as a caller sees it (ids, waiting calls, progress, cancellation).
  Every message from the daemon goes through `_dispatch`: responses to the caller waiting on
  that id, progress notifications to the call that registered the progressToken, everything
  else to the `receive_raw` queue. Many calls may share one client.
- The era: what differs between MCP protocol revisions, in one place: the opening
  handshake, how a message is framed, and the HTTP headers, session and cancellation it
  implies. `LegacyEra` (2025-11-25: `initialize`, a session), `ModernEra` (2026-07-28: each
  request states its era in `_meta`, no session, closing a request's stream cancels it),
  `Negotiated` (modern first, legacy when the daemon is older: `connect`'s default) and
  `PerMessage` (a raw client's own messages, each sent as its era requires: the bridge).
- The wire (`WebSocketWire`, `HttpWire`): moves whole messages; knows nothing of ids except
  that an HTTP response stream belongs to one request (so a dropped stream is resumed with
  Last-Event-ID until that request's response has come).
"""

from __future__ import annotations

import base64
import inspect
import itertools
import json
import math
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn, Protocol

import httpx
import trio
from httpx_sse import EventSource
from loguru import logger
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from exai import __version__

DEFAULT_PROTOCOL_VERSION: Final = "2025-11-25"
MODERN_PROTOCOL_VERSION: Final = "2026-07-28"
META_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_SERVER: Final = "io.modelcontextprotocol/serverInfo"
UNSUPPORTED_VERSION: Final = -32022
BASE64_SENTINEL: Final = ("=?base64?", "?=")
MODERN_ROUTING: Final = "Mcp-Method"  # the header only a modern request carries
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
CONNECT_TIMEOUT_SECS: Final = 10.0
DISCONNECT_TIMEOUT_SECS: Final = 2.0
# Sending one frame is shielded (a half-sent frame would corrupt the stream for every other
# call on the connection); a peer that cannot take it within this bound is treated as gone.
SEND_TIMEOUT_SECS: Final = 10.0
CANCEL_NOTIFY_TIMEOUT_SECS: Final = 1.0
RAW_QUEUE_SIZE: Final = 10_000
# A dropped SSE stream is resumed with Last-Event-ID at most this many times in a row (a
# resumed stream that brings a new event resets the count).
RESUME_ATTEMPTS: Final = 3
ACCEPT_BOTH: Final = "application/json, text/event-stream"

ProgressCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class RpcError(Exception):
    """A JSON-RPC error response from the daemon."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})"


class ConnectionLost(Exception):
    """The connection to the daemon closed or dropped; the message says how."""


class CannotConnect(ConnectionLost):
    """The connection could not be opened (refused, rejected at the handshake, timed out)."""


@dataclass
class ToolResult:
    """The result of one `tools/call`."""

    content: list[dict[str, Any]]
    is_error: bool
    structured: dict[str, Any] | None
    meta: dict[str, Any] | None
    raw: dict[str, Any]

    @property
    def text(self) -> str:
        """The text parts of the content, joined by newlines."""
        return "\n".join(
            str(part.get("text", "")) for part in self.content if part.get("type") == "text"
        )

    @classmethod
    def from_result(cls, result: Any) -> ToolResult:
        if not isinstance(result, dict):
            raise RpcError(-32603, f"malformed tools/call result: {result!r}")
        content = result.get("content")
        structured = result.get("structuredContent")
        meta = result.get("_meta")
        return cls(
            content=[part for part in content if isinstance(part, dict)]
            if isinstance(content, list)
            else [],
            is_error=bool(result.get("isError", False)),
            structured=structured if isinstance(structured, dict) else None,
            meta=meta if isinstance(meta, dict) else None,
            raw=result,
        )


def describe_close(reason: CloseReason | None) -> str:
    """Human words for a WebSocket close reason."""
    if reason is None:
        return "connection closed"
    text = f"code {reason.code} {reason.name}"
    if reason.reason:
        text += f": {reason.reason}"
    return text


RequestId = str | int


class WireClosed(Exception):
    """A wire can carry no more messages; the message says why (raised by `Wire.send`)."""


class Inbox(Protocol):
    """Where a wire puts what it receives (the client)."""

    def deliver(self, text: str | bytes) -> Any:
        """Route one message from the daemon; returns it parsed."""

    def connection_lost(self, reason: str) -> None:
        """The wire is gone for good."""

    def request_lost(self, request_id: RequestId, reason: str, *, owed: bool) -> None:
        """This one request gets no answer (the connection lives on): `owed` when one was
        due and the wire could not bring it, else the daemon owes none (cancelled, ended)."""


class Wire(Protocol):
    """Moves whole JSON-RPC messages to and from the daemon."""

    async def run(
        self, inbox: Inbox, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Carry messages into `inbox` until cancelled."""

    async def send(self, text: str, request_id: RequestId | None) -> None:
        """Send one message (`request_id` when it is a request). Raises WireClosed."""

    def done(self, request_id: RequestId) -> None:
        """The caller no longer waits for `request_id`: stop carrying its answer."""

    async def abort(self) -> None:
        """Drop the connection with no goodbye, as a crashed client would."""


class LegacyEra:
    """MCP 2025-11-25 (and the older revisions it negotiates down to): `initialize` opens a
    session; over HTTP the session is the `Mcp-Session-Id` header, ended by DELETE."""

    def __init__(self, version: str = DEFAULT_PROTOCOL_VERSION) -> None:
        self.version = version
        self.session_id: str | None = None
        self.negotiated: str | None = None

    async def open(self, client: ExaiClient) -> None:
        """The opening handshake: initialize, then notifications/initialized."""
        result = await client.request(
            "initialize",
            {
                "protocolVersion": self.version,
                "capabilities": {},
                "clientInfo": {"name": "exai-client", "version": __version__},
            },
        )
        if not isinstance(result, dict):
            raise RpcError(-32603, f"malformed initialize result: {result!r}")
        self.negotiated = result.get("protocolVersion")
        client.protocol_version = self.negotiated
        client.server_info = result.get("serverInfo") or {}
        client.capabilities = result.get("capabilities") or {}
        client.instructions = result.get("instructions")
        await client.notify("notifications/initialized")

    def frame(self, message: dict[str, Any]) -> dict[str, Any]:
        """The message as this era sends it (legacy: as it is)."""
        return message

    def http_headers(self, text: str | None = None) -> dict[str, str]:
        """Headers an HTTP request of this era carries (for the message `text`, when it sends
        one), beyond Accept and the token."""
        headers: dict[str, str] = {}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.negotiated is not None:
            headers["MCP-Protocol-Version"] = self.negotiated
        return headers

    def http_answered(self, headers: httpx.Headers) -> None:
        """Note what an HTTP answer says about the session (initialize's answer names it)."""
        if self.session_id is None and "mcp-session-id" in headers:
            self.session_id = headers["mcp-session-id"]

    @property
    def http_session(self) -> bool:
        """Whether there is a session to end with DELETE when the client closes."""
        return self.session_id is not None

    def ping(self) -> str:
        """The method of a liveness round trip."""
        return "ping"


class ModernEra:
    """MCP 2026-07-28: no handshake and no session. Every request carries the version, the
    client and its capabilities in `_meta`; over HTTP its routing headers mirror the body, it
    is answered on a stream of its own, and closing that stream is its cancellation."""

    def __init__(self, version: str = MODERN_PROTOCOL_VERSION) -> None:
        self.version = version
        self.session_id: str | None = None  # never one: kept so a client reads it as legacy's
        self.negotiated: str | None = None
        self.envelope = {
            META_VERSION: version,
            "io.modelcontextprotocol/clientInfo": {"name": "exai-client", "version": __version__},
            "io.modelcontextprotocol/clientCapabilities": {},
        }

    async def open(self, client: ExaiClient) -> None:
        """Learn the server with `server/discover`; RpcError -32022 if it serves not our version."""
        result = await client.request("server/discover")
        if not isinstance(result, dict):
            raise RpcError(-32603, f"malformed server/discover result: {result!r}")
        supported = result.get("supportedVersions")
        if not isinstance(supported, list) or self.version not in supported:
            raise RpcError(UNSUPPORTED_VERSION, "Unsupported protocol version", {"supported": supported})
        self.negotiated = self.version
        client.protocol_version = self.version
        meta = result.get("_meta")
        server = meta.get(META_SERVER) if isinstance(meta, dict) else None
        client.server_info = server if isinstance(server, dict) else {}
        client.capabilities = result.get("capabilities") or {}
        client.instructions = result.get("instructions")

    def frame(self, message: dict[str, Any]) -> dict[str, Any]:
        """A request gets the envelope in its `_meta` (its own keys kept); a notification is
        sent as it is (only `notifications/cancelled` exists, and it needs none)."""
        if "id" not in message or "method" not in message:
            return message
        params = dict(message.get("params") or {})
        params["_meta"] = {**self.envelope, **(params.get("_meta") or {})}
        return {**message, "params": params}

    def http_headers(self, text: str | None = None) -> dict[str, str]:
        message = _json_or_none(text) if text is not None else None
        return modern_routing(message, self.version)

    def http_answered(self, headers: httpx.Headers) -> None:
        """A modern answer says nothing about a session: there is none."""

    @property
    def http_session(self) -> bool:
        return False

    def ping(self) -> str:
        return "server/discover"  # the modern revision has no ping


class Negotiated:
    """Modern first; the legacy handshake when the daemon is older (any answer to the probe
    that is not a modern one: an older exai says -32600 "before initialize", or over HTTP
    that the session id is missing). Afterwards every member is the chosen era's."""

    def __init__(self, legacy_version: str = DEFAULT_PROTOCOL_VERSION) -> None:
        self.modern = ModernEra()
        self.legacy = LegacyEra(legacy_version)
        self.current: LegacyEra | ModernEra = self.modern

    async def open(self, client: ExaiClient) -> None:
        try:
            await self.modern.open(client)
            return
        except RpcError as exc:
            data = exc.data if isinstance(exc.data, dict) else {}
            if exc.code == UNSUPPORTED_VERSION and self.legacy.version not in (data.get("supported") or ()):
                raise  # a modern daemon that serves neither of our versions
            logger.debug("the daemon does not serve MCP {} ({}): falling back to initialize", self.modern.version, exc)
        self.current = self.legacy
        await self.legacy.open(client)

    @property
    def session_id(self) -> str | None:
        return self.current.session_id

    @session_id.setter
    def session_id(self, value: str | None) -> None:
        self.current.session_id = value

    @property
    def negotiated(self) -> str | None:
        return self.current.negotiated

    def frame(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.current.frame(message)

    def http_headers(self, text: str | None = None) -> dict[str, str]:
        return self.current.http_headers(text)

    def http_answered(self, headers: httpx.Headers) -> None:
        self.current.http_answered(headers)

    @property
    def http_session(self) -> bool:
        return self.current.http_session

    def ping(self) -> str:
        return self.current.ping()


class PerMessage:
    """A raw client's messages (the stdio bridge's): each sent as its own era requires. A
    request whose `_meta` states a version goes with the modern routing headers (and its
    cancel closes its stream, see HttpWire); anything else with the legacy session's."""

    def __init__(self) -> None:
        self.legacy = LegacyEra()
        self.negotiated: str | None = None

    @property
    def session_id(self) -> str | None:
        return self.legacy.session_id

    @session_id.setter
    def session_id(self, value: str | None) -> None:
        self.legacy.session_id = value

    async def open(self, client: ExaiClient) -> None:
        """No handshake of its own: the raw client sends its own."""

    def frame(self, message: dict[str, Any]) -> dict[str, Any]:
        return message

    def http_headers(self, text: str | None = None) -> dict[str, str]:
        message = _json_or_none(text) if text is not None else None
        params = message.get("params") if isinstance(message, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        version = meta.get(META_VERSION) if isinstance(meta, dict) else None
        if not isinstance(version, str):
            return self.legacy.http_headers(text)
        return modern_routing(message, version)

    def http_answered(self, headers: httpx.Headers) -> None:
        self.legacy.http_answered(headers)

    @property
    def http_session(self) -> bool:
        return self.legacy.http_session

    def ping(self) -> str:
        return "ping"


Era = LegacyEra | ModernEra | Negotiated | PerMessage


def modern_routing(message: Any, version: str) -> dict[str, str]:
    """The headers a modern POST mirrors from its body: version, method and, for the methods
    that name something, that name (base64-encoded when it is no plain header value)."""
    headers = {"MCP-Protocol-Version": version}
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return headers
    method = message["method"]
    headers["Mcp-Method"] = method
    params = message.get("params")
    field = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}.get(method)
    name = params.get(field) if field is not None and isinstance(params, dict) else None
    if isinstance(name, str):
        headers["Mcp-Name"] = _header_value(name)
    return headers


def _header_value(value: str) -> str:
    """`value` as it is when it is a plain header value, else in the `=?base64?...?=` form."""
    plain = all(" " <= ch <= "~" for ch in value) and value == value.strip()
    if plain and not (value.startswith(BASE64_SENTINEL[0]) and value.endswith(BASE64_SENTINEL[1])):
        return value
    return BASE64_SENTINEL[0] + base64.b64encode(value.encode()).decode() + BASE64_SENTINEL[1]


def _cancelled_id(text: str) -> RequestId | None:
    """The request a `notifications/cancelled` names, or None for any other message."""
    message = _json_or_none(text)
    if not isinstance(message, dict) or message.get("method") != "notifications/cancelled":
        return None
    params = message.get("params")
    request_id = params.get("requestId") if isinstance(params, dict) else None
    if isinstance(request_id, str | int) and not isinstance(request_id, bool):
        return request_id
    return None


class ExaiClient:
    """One MCP session with the daemon. Obtain it from `connect`; safe to share among tasks."""

    def __init__(self, wire: Wire, era: Era) -> None:
        self._wire = wire
        self.era = era
        self._ids = itertools.count(1)
        # request id -> channel receiving ("progress", params), ("response", message) or
        # ("lost", {"reason": ...}) when the wire could not bring this one answer
        self._pending: dict[int, trio.MemorySendChannel[tuple[str, dict[str, Any]]]] = {}
        self._progress: dict[Any, trio.MemorySendChannel[tuple[str, dict[str, Any]]]] = {}
        self._raw_send, self._raw_recv = trio.open_memory_channel[Any](RAW_QUEUE_SIZE)
        self._lost: str | None = None
        self.server_info: dict[str, Any] = {}
        self.protocol_version: str | None = None
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None

    # -- public API --------------------------------------------------------------------

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result, or raise RpcError / ConnectionLost.

        If the caller is cancelled while waiting, the daemon is sent `notifications/cancelled`
        (shielded, at most 1 s) before the cancellation propagates.
        """
        message = await self._roundtrip(method, params, None)
        return message.get("result")

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send one notification. Raises ConnectionLost if the connection is gone."""
        frame: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            frame["params"] = params
        await self._send_text(json.dumps(self.era.frame(frame)), None)
        await trio.lowlevel.checkpoint_if_cancelled()

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ToolResult:
        """Call a tool and wait for its result (an `isError` result is returned, not raised).

        `timeout` asks the daemon for a shorter deadline (`_meta["exai/timeout"]`); the client
        does not enforce it. `on_progress` (sync or async) gets each progress notification's
        params in arrival order, always before the call returns. Cancellation: as `request`.
        """
        request_id = next(self._ids)
        params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
        meta: dict[str, Any] = {}
        if on_progress is not None:
            meta["progressToken"] = request_id
        if timeout is not None:
            meta["exai/timeout"] = timeout
        if meta:
            params["_meta"] = meta
        message = await self._roundtrip("tools/call", params, on_progress, request_id)
        return ToolResult.from_result(message.get("result"))

    async def list_tools(self) -> list[dict[str, Any]]:
        """All tools the daemon offers, following `nextCursor` pages."""
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            result = await self.request("tools/list", {"cursor": cursor} if cursor else None)
            tools.extend(result.get("tools", []))
            cursor = result.get("nextCursor")
            if not cursor:
                return tools

    async def ping(self) -> None:
        """A liveness round trip: `ping` (legacy), `server/discover` (modern, which has no ping)."""
        await self.request(self.era.ping())

    async def send_raw(self, text: str) -> None:
        """Send an arbitrary message as it is (for protocol tests and the stdio bridge);
        what the daemon answers arrives on `receive_raw`."""
        await self._send_text(text, _request_id_of(text))
        await trio.lowlevel.checkpoint_if_cancelled()

    async def receive_raw(self) -> Any:
        """The next message no pending request claimed, parsed from JSON (the text itself if
        it is not JSON). Raises ConnectionLost once the connection is gone and the queue is
        drained."""
        try:
            return await self._raw_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionLost(self._lost or "connection closed") from None

    async def close_abruptly(self) -> None:
        """Drop the connection with no goodbye (no close handshake, no DELETE), as a crashed
        client would."""
        await self._wire.abort()

    @property
    def closed_reason(self) -> str | None:
        """Why the connection is gone, or None while it is open."""
        return self._lost

    @property
    def session_id(self) -> str | None:
        """The Streamable HTTP session (`Mcp-Session-Id`), if this client has one."""
        return self.era.session_id

    # -- internals ---------------------------------------------------------------------

    async def _roundtrip(
        self,
        method: str,
        params: dict[str, Any] | None,
        on_progress: ProgressCallback | None,
        request_id: int | None = None,
    ) -> dict[str, Any]:
        """Send a request and return its response message (whose `result` is the answer)."""
        await trio.lowlevel.checkpoint_if_cancelled()  # an already-cancelled call sends nothing
        if self._lost is not None:
            raise ConnectionLost(self._lost)
        if request_id is None:
            request_id = next(self._ids)
        frame: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            frame["params"] = params
        send, recv = trio.open_memory_channel[tuple[str, dict[str, Any]]](math.inf)
        self._pending[request_id] = send
        if on_progress is not None:
            self._progress[request_id] = send
        sent = answered = False
        reason = "client cancelled"
        try:
            # Counted as sent once begun: a send cut short may still have reached the daemon
            # (over HTTP), and a cancel for an id it never saw is ignored.
            sent = True
            await self._send_text(json.dumps(self.era.frame(frame)), request_id)
            await trio.lowlevel.checkpoint_if_cancelled()
            with recv:  # closed without a checkpoint: no message can come to a closed channel
                async for kind, message in recv:
                    if kind == "response":
                        answered = True
                        return _unwrap_response(message)
                    if kind == "lost":
                        answered = True
                        raise ConnectionLost(message["reason"])
                    if on_progress is not None:
                        outcome = on_progress(message)
                        if inspect.isawaitable(outcome):
                            await outcome
            raise ConnectionLost(self._lost or "connection closed")
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled | KeyboardInterrupt):
                reason = f"client stopped waiting: {type(exc).__name__}"
            raise
        finally:
            self._pending.pop(request_id, None)
            self._progress.pop(request_id, None)
            send.close()
            if sent and not answered and self._lost is None:
                await self._notify_cancelled(request_id, reason)
            self._wire.done(request_id)

    async def _notify_cancelled(self, request_id: int, reason: str) -> None:
        """Tell the daemon to stop a request; shielded and bounded, never raises."""
        frame = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": reason},
        }
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_NOTIFY_TIMEOUT_SECS):
            try:
                await self._wire.send(json.dumps(self.era.frame(frame)), None)
            except WireClosed:
                pass

    async def _send_text(self, text: str, request_id: RequestId | None) -> None:
        """Send one message, or raise ConnectionLost (and mark the client lost)."""
        if self._lost is not None:
            raise ConnectionLost(self._lost)
        try:
            await self._wire.send(text, request_id)
        except WireClosed as exc:
            self.connection_lost(str(exc))
            raise ConnectionLost(self._lost) from None

    # -- the Inbox its wire fills ---------------------------------------------------------

    def deliver(self, text: str | bytes) -> Any:
        """Route one message from the daemon; returns it parsed (the text if not JSON)."""
        try:
            message = json.loads(text)
        except ValueError:
            logger.warning("daemon sent a message that is not JSON ({} chars)", len(text))
            self._to_raw(text)
            return text
        if isinstance(message, dict):
            if "method" not in message and ("result" in message or "error" in message):
                response_id = message.get("id")
                waiter = (
                    self._pending.get(response_id)
                    if isinstance(response_id, int) and not isinstance(response_id, bool)
                    else None
                )
                if waiter is not None:
                    _hand(waiter, ("response", message))
                    return message
            elif message.get("method") == "notifications/progress":
                params = message.get("params")
                token = params.get("progressToken") if isinstance(params, dict) else None
                waiter = self._progress.get(token) if _hashable(token) else None
                if waiter is not None and isinstance(params, dict):
                    _hand(waiter, ("progress", params))
                    return message
        self._to_raw(message)
        return message

    def request_lost(self, request_id: RequestId, reason: str, *, owed: bool) -> None:
        """This one request gets no answer. A caller waiting for it gets ConnectionLost; a
        raw request (send_raw) whose owed answer cannot come gets a -32603 on receive_raw, so
        that a bridge's client is answered; one owed nothing gets nothing, as on a WebSocket."""
        waiter = self._pending.get(request_id) if isinstance(request_id, int) else None
        if waiter is not None:
            _hand(waiter, ("lost", {"reason": reason}))
        elif owed:
            self._to_raw({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32603, "message": reason}})

    def _to_raw(self, message: Any) -> None:
        try:
            self._raw_send.send_nowait(message)
        except trio.WouldBlock:
            logger.warning("dropping an unclaimed message from the daemon: raw queue is full")
        except trio.ClosedResourceError:
            pass

    def connection_lost(self, reason: str) -> None:
        """Mark the connection gone: every waiting caller and receive_raw get ConnectionLost."""
        if self._lost is not None:
            return
        self._lost = reason
        for waiter in list(self._pending.values()):
            waiter.close()
        self._raw_send.close()


# -- WebSocket -------------------------------------------------------------------------------


class WebSocketWire:
    """Messages as text frames on one WebSocket, read by one task."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def run(
        self, inbox: Inbox, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver frames until the connection closes; then report it lost."""
        reason = "connection closed by the client"
        task_status.started()
        try:
            while True:
                inbox.deliver(await self.ws.get_message())
        except ConnectionClosed as exc:
            reason = f"daemon closed the connection ({describe_close(exc.reason)})"
        finally:
            inbox.connection_lost(reason)

    async def send(self, text: str, request_id: RequestId | None) -> None:
        """Send one frame whole: shielded against cancellation (a half-sent frame would
        corrupt the stream for every other call), bounded by SEND_TIMEOUT_SECS."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(SEND_TIMEOUT_SECS) as send_deadline:
                try:
                    await self.ws.send_message(text)
                except ConnectionClosed as exc:
                    raise WireClosed(
                        f"daemon closed the connection ({describe_close(exc.reason)})"
                    ) from None
            if send_deadline.cancelled_caught:
                raise WireClosed(f"sending to the daemon timed out after {SEND_TIMEOUT_SECS} s")

    def done(self, request_id: RequestId) -> None:
        """Nothing to do: answers share the one connection."""

    async def abort(self) -> None:
        # trio-websocket has no public abort; its stream is the socket underneath.
        await self.ws._stream.aclose()


# -- Streamable HTTP -------------------------------------------------------------------------


@dataclass
class _Exchange:
    """One POST and what its answer has brought so far."""

    request_id: RequestId | None
    task_status: trio.TaskStatus[None]
    started: bool = False
    streamed: bool = False  # the answer is an SSE stream
    broken: bool = False  # ... cut short by the network, not ended by the daemon
    answered: bool = False  # ... and it brought the response to request_id
    last_event: str | None = None

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.task_status.started()


class HttpWire:
    """Messages as POSTs to the daemon's /mcp endpoint (MCP Streamable HTTP).

    Each POST runs in a task of its own: `send` returns once the daemon has taken the
    message (the answer's status line is in), and that task goes on reading the answer, JSON
    or an SSE stream. An SSE stream that drops before its request's response is resumed
    with GET and Last-Event-ID. All HTTP is httpx and httpx-sse.
    """

    def __init__(self, http: httpx.AsyncClient, url: str, era: Era) -> None:
        self.http = http
        self.url = url
        self.era = era
        self._nursery: trio.Nursery | None = None
        self._inbox: Inbox | None = None
        self._streams: dict[RequestId, trio.CancelScope] = {}
        self._modern: set[RequestId] = set()  # in-flight requests sent as modern (routing headers)
        self.closed: str | None = None

    async def run(
        self, inbox: Inbox, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Host the POST tasks until cancelled."""
        self._inbox = inbox
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._close("connection closed by the client")

    async def send(self, text: str, request_id: RequestId | None) -> None:
        if self.closed is not None or self._nursery is None:
            raise WireClosed(self.closed or "connection closed by the client")
        cancelled = _cancelled_id(text) if request_id is None else None
        if cancelled is not None and cancelled in self._modern:
            self.done(cancelled)  # a modern request's cancel is closing its stream, not a message
            return
        try:
            await self._nursery.start(self._post, text, request_id)
        except WireClosed as exc:
            if self.era.http_session:
                raise
            raise CannotConnect(str(exc)) from None

    def done(self, request_id: RequestId) -> None:
        scope = self._streams.pop(request_id, None)
        if scope is not None:
            scope.cancel()

    async def abort(self) -> None:
        self.era.session_id = None  # a crashed client says no goodbye: no DELETE
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self.http.aclose()
        self._close("connection dropped by the client")

    async def end_session(self) -> None:
        """DELETE the session, if there is one; shielded, bounded, never raises."""
        if not self.era.http_session or self.http.is_closed:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(DISCONNECT_TIMEOUT_SECS):
            try:
                await self.http.delete(self.url, headers=self._headers())
            except httpx.HTTPError:
                pass

    # -- internals ---------------------------------------------------------------------

    def _close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            if self._inbox is not None:
                self._inbox.connection_lost(reason)

    def _request_lost(self, request_id: RequestId | None, reason: str, *, owed: bool = True) -> None:
        if request_id is not None and self._inbox is not None:
            self._inbox.request_lost(request_id, reason, owed=owed)

    def _headers(self, text: str | None = None, **extra: str) -> dict[str, str]:
        return {"Accept": ACCEPT_BOTH, **self.era.http_headers(text), **extra}

    async def _post(
        self, text: str, request_id: RequestId | None, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """POST one message; started once the daemon answered with a status line. After
        that, a failure loses this request's answer only, never the client."""
        exchange = _Exchange(request_id, task_status)
        with trio.CancelScope() as scope:
            if request_id is not None:
                self._streams[request_id] = scope
            try:
                headers = self._headers(text, **{"Content-Type": "application/json"})
                if request_id is not None and MODERN_ROUTING in headers:
                    self._modern.add(request_id)
                async with self._request("POST", headers, text) as response:
                    await self._answer(response, exchange)
                if exchange.broken and not exchange.answered:
                    await self._resume(exchange)
                elif exchange.streamed and not exchange.answered:
                    self._request_lost(request_id, NOT_OWED, owed=False)
            except WireClosed as exc:
                if not exchange.started:
                    raise
                self._request_lost(request_id, str(exc))
            finally:
                if request_id is not None:
                    self._modern.discard(request_id)
                    if self._streams.get(request_id) is scope:
                        del self._streams[request_id]

    @asynccontextmanager
    async def _request(
        self, method: str, headers: dict[str, str], body: str | None = None
    ) -> AsyncIterator[httpx.Response]:
        """One HTTP exchange; httpx's failures to reach the daemon become WireClosed."""
        try:
            async with self.http.stream(method, self.url, headers=headers, content=body) as response:
                yield response
        except httpx.TransportError as exc:
            raise WireClosed(f"cannot connect to {self.url}: {exc or type(exc).__name__}") from None

    async def _answer(self, response: httpx.Response, exchange: _Exchange) -> None:
        """Deliver what one answer to a POST carries."""
        self.era.http_answered(response.headers)
        if response.status_code >= 400:
            await self._refused(response, exchange.request_id)
            exchange.start()
            return
        exchange.start()
        if _is_sse(response):
            exchange.streamed = True
            await self._read_events(response, exchange)
            return
        body = await response.aread()
        if body:
            self._deliver(body)
        elif exchange.request_id is not None:  # 202 to a request: cancelled, or its session ended
            self._request_lost(exchange.request_id, NOT_OWED, owed=False)

    def _deliver(self, text: str | bytes) -> Any:
        return self._inbox.deliver(text) if self._inbox is not None else None

    async def _read_events(self, response: httpx.Response, exchange: _Exchange) -> None:
        """Deliver an SSE stream's messages; note in `exchange.broken` whether the stream was
        cut short (a network error) rather than ended by the daemon."""
        exchange.broken = False
        try:
            async with aclosing(EventSource(response).aiter_sse()) as events:
                async for event in events:
                    if event.id:
                        exchange.last_event = event.id
                    if event.data:
                        message = self._deliver(event.data)
                        exchange.answered = exchange.answered or _answers(message, exchange.request_id)
        except httpx.TransportError as exc:
            exchange.broken = True
            logger.debug("an SSE stream from the daemon dropped: {}", exc or type(exc).__name__)

    async def _resume(self, exchange: _Exchange) -> None:
        """GET with Last-Event-ID until the response to the exchange's request has come."""
        attempts = 0
        while attempts < RESUME_ATTEMPTS and exchange.last_event is not None:
            attempts += 1
            last = exchange.last_event
            headers = self._headers(Accept="text/event-stream", **{"Last-Event-ID": last})
            async with self._request("GET", headers) as response:
                if response.status_code == 404:
                    await response.aread()
                    self._close("the daemon ended the session (HTTP 404)")
                    return
                if response.status_code != 200 or not _is_sse(response):
                    await response.aread()
                    break
                await self._read_events(response, exchange)
            if exchange.answered:
                return
            if not exchange.broken:
                self._request_lost(exchange.request_id, NOT_OWED, owed=False)
                return
            if exchange.last_event != last:
                attempts = 0  # it brought something: the stream is alive, keep following it
        self._request_lost(exchange.request_id, "the answer's SSE stream dropped and could not be resumed")

    async def _refused(self, response: httpx.Response, request_id: RequestId | None) -> None:
        """An HTTP error. 401, 403 or 5xx with no session yet: the daemon turned the client
        away, raises CannotConnect. 404 in a session: the session is over, raises WireClosed.
        Else the JSON-RPC error in the body answers this request (it gets the request's id)."""
        body = (await response.aread()).decode("utf-8", errors="replace")
        message = _json_or_none(body)
        error = message.get("error") if isinstance(message, dict) else None
        why = str(error.get("message", "")) if isinstance(error, dict) else body.strip()[:300]
        status = response.status_code
        if not self.era.http_session and (status in (401, 403) or status >= 500):
            hint = HINTS.get(status, "")
            raise CannotConnect(f"daemon at {self.url} rejected the connection: HTTP {status}: {why}{hint}")
        unknown_method = isinstance(error, dict) and error.get("code") == -32601  # modern: 404 -32601
        if status == 404 and not unknown_method:
            reason = f"the daemon ended the session (HTTP 404: {why})"
            self._close(reason)
            raise WireClosed(reason)
        if isinstance(message, dict) and isinstance(error, dict):
            if message.get("id") is None and request_id is not None:
                message["id"] = request_id
            self._deliver(json.dumps(message))
        else:
            self._request_lost(request_id, f"the daemon answered HTTP {status}: {why}")


NOT_OWED: Final = "the daemon ended this request's answer without a response (cancelled, or its session ended)"
HINTS: Final = {
    401: " (wrong or missing token: set EXAI_AUTH_TOKEN or pass --token)",
    503: " (the daemon is at its connection limit or not ready)",
}


def _is_sse(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")


def _answers(message: Any, request_id: RequestId | None) -> bool:
    return (
        request_id is not None
        and isinstance(message, dict)
        and "method" not in message
        and message.get("id") == request_id
    )


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # send_raw may carry anything, 100 000 "[" too
        return None


def _request_id_of(text: str) -> RequestId | None:
    """The id of a request given as text (None for a notification, a response or junk)."""
    message = _json_or_none(text)
    if isinstance(message, dict) and "method" in message:
        request_id = message.get("id")
        if isinstance(request_id, str | int) and not isinstance(request_id, bool):
            return request_id
    return None


def _hand(waiter: trio.MemorySendChannel[tuple[str, dict[str, Any]]], item: tuple[str, dict[str, Any]]) -> None:
    """Give a waiting caller its message; one that just stopped waiting needs none."""
    try:
        waiter.send_nowait(item)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | None)


def _unwrap_response(message: dict[str, Any]) -> dict[str, Any]:
    error = message.get("error")
    if "error" in message:
        if not isinstance(error, dict):
            raise RpcError(-32603, f"malformed error response: {error!r}")
        code = error.get("code")
        raise RpcError(
            code if isinstance(code, int) else -32603,
            str(error.get("message", "")),
            error.get("data"),
        )
    return message


def _reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the only exception of a nursery's group as itself, keeping its context."""
    exc = group.exceptions[0]
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


@contextmanager
def _unwrap_single() -> Iterator[None]:
    """Callers see the one exception a nursery raised, not a group around it."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            _reraise_single(group)
        raise


def _rejection(url: str, exc: ConnectionRejected) -> CannotConnect:
    body = (exc.body or b"").decode("utf-8", errors="replace").strip()[:300]
    hint = HINTS.get(exc.status_code, "")
    detail = f": {body}" if body else ""
    return CannotConnect(
        f"daemon at {url} rejected the connection: HTTP {exc.status_code}{detail}{hint}"
    )


def _split_url(url: str) -> tuple[str, int, str, bool]:
    """(host, port, resource, tls) of a ws:// or wss:// URL; ValueError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError("the scheme must be ws:// or wss://")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    tls = parts.scheme == "wss"
    port = parts.port if parts.port is not None else (443 if tls else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return parts.hostname, port, resource, tls


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    token: str | None = None,
    subprotocols: Iterable[str] = ("mcp",),
    connect_timeout: float = CONNECT_TIMEOUT_SECS,
) -> AsyncIterator[WebSocketConnection]:
    """A raw WebSocket to the daemon, with the bearer token when given.

    Raises CannotConnect (never a trio-websocket or OS error) when the URL is invalid, the
    TCP connection fails or the handshake is rejected or times out. On leaving, the socket
    is closed with code 1000 (bounded by DISCONNECT_TIMEOUT_SECS) and the TCP stream closed
    on every path. (trio-websocket's own opener leaks the socket of a rejected handshake.)
    """
    try:
        host, port, resource, tls = _split_url(url)
    except ValueError as exc:
        raise CannotConnect(f"invalid daemon URL {url!r}: {exc}") from None
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    host_header = f"[{host}]" if ":" in host else host
    if port not in (80, 443):
        host_header += f":{port}"
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    try:
        with trio.fail_after(connect_timeout):
            if tls:
                stream = await trio.open_ssl_over_tcp_stream(host, port, https_compatible=True)
            else:
                stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise CannotConnect(
            f"cannot connect to {url}: timed out after {connect_timeout} s"
        ) from None
    except OSError as exc:
        raise CannotConnect(f"cannot connect to {url}: {exc}") from None
    opened = False
    try:
        with _unwrap_single():
            async with trio.open_nursery() as nursery:  # hosts trio-websocket's reader task
                with trio.move_on_after(connect_timeout) as handshake:
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        host_header,
                        resource,
                        subprotocols=list(subprotocols),
                        extra_headers=headers,
                        max_message_size=MAX_MESSAGE_BYTES,
                    )
                if handshake.cancelled_caught:
                    raise CannotConnect(
                        f"cannot connect to {url}: no WebSocket handshake within {connect_timeout} s"
                    )
                opened = True
                try:
                    yield ws
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(DISCONNECT_TIMEOUT_SECS):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
    except ConnectionRejected as exc:
        if opened:
            raise
        raise _rejection(url, exc) from None
    except (OSError, trio.BrokenResourceError) as exc:
        if opened:
            raise
        raise CannotConnect(f"cannot connect to {url}: {exc or type(exc).__name__}") from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(DISCONNECT_TIMEOUT_SECS):
            await stream.aclose()


@asynccontextmanager
async def _websocket_wire(
    url: str, era: Era, *, token: str | None, subprotocols: Iterable[str], connect_timeout: float
) -> AsyncIterator[WebSocketWire]:
    async with open_websocket(
        url, token=token, subprotocols=subprotocols, connect_timeout=connect_timeout
    ) as ws:
        yield WebSocketWire(ws)


@asynccontextmanager
async def _http_wire(
    url: str, era: Era, *, token: str | None, subprotocols: Iterable[str], connect_timeout: float
) -> AsyncIterator[HttpWire]:
    """An httpx client for the daemon's /mcp URL. Reading has no timeout of its own (an SSE
    stream lasts as long as its call); connecting and writing do."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(None, connect=connect_timeout, write=SEND_TIMEOUT_SECS)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=HTTP_KEEPALIVE_CONNECTIONS)
    async with httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits) as http:
        wire = HttpWire(http, url, era)
        try:
            yield wire
        finally:
            await wire.end_session()


HTTP_KEEPALIVE_CONNECTIONS: Final = 32
WireOpener = Callable[..., AbstractAsyncContextManager[Wire]]
WIRES: Final[dict[str, WireOpener]] = {"ws": _websocket_wire, "wss": _websocket_wire, "http": _http_wire, "https": _http_wire}


@asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    initialize: bool = True,
    era: Literal["auto", "modern", "legacy"] = "auto",
    protocol_version: str | None = None,
    subprotocols: Iterable[str] = ("mcp",),
    connect_timeout: float = CONNECT_TIMEOUT_SECS,
) -> AsyncIterator[ExaiClient]:
    """Open an MCP session with the daemon at `url`: `ws://host:port/` (WebSocket) or
    `http://host:port/mcp` (Streamable HTTP); the same client either way.

    The protocol era: "auto" speaks MCP 2026-07-28 (`server/discover`, then every request
    stateless) and falls back to `initialize` when the daemon is older; "modern" and "legacy"
    speak only that one. A `protocol_version` (a legacy revision) means legacy. With
    `initialize=False` the client opens nothing: it is a raw client (the bridge), and each
    message it sends goes as its own era requires.

    Raises CannotConnect when the connection or handshake fails (over HTTP: when the daemon
    refuses `initialize` with an HTTP error), RpcError if `initialize` is refused. On
    leaving, the wire's tasks are cancelled and the connection closed (WebSocket: code 1000;
    HTTP: the session is ended with DELETE); callers still waiting get ConnectionLost.
    """
    opener = WIRES.get(urllib.parse.urlsplit(url).scheme)
    if opener is None:
        raise CannotConnect(
            f"invalid daemon URL {url!r}: the scheme must be ws://, wss://, http:// or https://"
        )
    chosen = _era(initialize, era, protocol_version)
    async with opener(
        url, chosen, token=token, subprotocols=subprotocols, connect_timeout=connect_timeout
    ) as wire:
        client = ExaiClient(wire, chosen)
        with _unwrap_single():
            async with trio.open_nursery() as nursery:
                await nursery.start(wire.run, client)
                await chosen.open(client)
                yield client
                nursery.cancel_scope.cancel()


def _era(initialize: bool, era: str, protocol_version: str | None) -> Era:
    if not initialize:
        return PerMessage()
    if era == "modern":
        return ModernEra()
    if era == "legacy" or protocol_version is not None:
        return LegacyEra(protocol_version or DEFAULT_PROTOCOL_VERSION)
    if era != "auto":
        raise ValueError(f"era must be auto, modern or legacy, not {era!r}")
    return Negotiated()
