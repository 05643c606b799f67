"""The trio client library for the exai daemon: MCP (JSON-RPC 2.0) over one WebSocket.

One reader task per connection dispatches every frame: responses go to the caller waiting
on that id, progress notifications to the call that registered the progressToken, and
everything else to the `receive_raw` queue. Many calls may share one connection.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import trio
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
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
CONNECT_TIMEOUT_SECS: Final = 10.0
DISCONNECT_TIMEOUT_SECS: Final = 2.0
# Sending one frame is shielded (a half-sent frame would corrupt the stream for every other
# call on the connection); a peer that cannot take it within this bound is treated as gone.
SEND_TIMEOUT_SECS: Final = 10.0
CANCEL_NOTIFY_TIMEOUT_SECS: Final = 1.0
RAW_QUEUE_SIZE: Final = 10_000

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


class ExaiClient:
    """One MCP session with the daemon. Obtain it from `connect`; safe to share among tasks."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        # request id -> channel receiving ("progress", params) and ("response", message)
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
        await self._send_text(json.dumps(frame))
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
        """Round-trip a JSON-RPC `ping`."""
        await self.request("ping")

    async def send_raw(self, text: str) -> None:
        """Send an arbitrary text frame (for protocol tests)."""
        await self._send_text(text)
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
        """Drop the TCP connection with no close handshake, as a crashed client would."""
        # trio-websocket has no public abort; its stream is the socket underneath.
        await self._ws._stream.aclose()

    @property
    def closed_reason(self) -> str | None:
        """Why the connection is gone, or None while it is open."""
        return self._lost

    # -- internals ---------------------------------------------------------------------

    async def _initialize(self, protocol_version: str) -> None:
        result = await self.request(
            "initialize",
            {
                "protocolVersion": protocol_version,
                "capabilities": {},
                "clientInfo": {"name": "exai-client", "version": __version__},
            },
        )
        if not isinstance(result, dict):
            raise RpcError(-32603, f"malformed initialize result: {result!r}")
        self.protocol_version = result.get("protocolVersion")
        self.server_info = result.get("serverInfo") or {}
        self.capabilities = result.get("capabilities") or {}
        self.instructions = result.get("instructions")
        await self.notify("notifications/initialized")

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
            await self._send_text(json.dumps(frame))
            sent = True
            await trio.lowlevel.checkpoint_if_cancelled()
            async with recv:
                async for kind, message in recv:
                    if kind == "response":
                        answered = True
                        return _unwrap_response(message)
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

    async def _notify_cancelled(self, request_id: int, reason: str) -> None:
        """Tell the daemon to stop a request; shielded and bounded, never raises."""
        frame = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": reason},
        }
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_NOTIFY_TIMEOUT_SECS):
            try:
                await self._ws.send_message(json.dumps(frame))
            except ConnectionClosed:
                pass

    async def _send_text(self, text: str) -> None:
        """Send one frame whole: shielded against cancellation, bounded by SEND_TIMEOUT_SECS.
        Not a cancel point: callers deliver a pending cancellation after noting the send."""
        if self._lost is not None:
            raise ConnectionLost(self._lost)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(SEND_TIMEOUT_SECS) as send_deadline:
                try:
                    await self._ws.send_message(text)
                except ConnectionClosed as exc:
                    self._connection_lost(
                        f"daemon closed the connection ({describe_close(exc.reason)})"
                    )
                    raise ConnectionLost(self._lost) from None
            if send_deadline.cancelled_caught:
                self._connection_lost(
                    f"sending to the daemon timed out after {SEND_TIMEOUT_SECS} s"
                )
                raise ConnectionLost(self._lost)

    async def _read_loop(self) -> None:
        """Dispatch frames until the connection closes; then fail every waiting caller."""
        reason = "connection closed by the client"
        try:
            while True:
                text = await self._ws.get_message()
                self._dispatch(text)
        except ConnectionClosed as exc:
            reason = f"daemon closed the connection ({describe_close(exc.reason)})"
        finally:
            self._connection_lost(reason)

    def _dispatch(self, text: str | bytes) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            logger.warning("daemon sent a frame that is not JSON ({} chars)", len(text))
            self._to_raw(text)
            return
        if isinstance(message, dict):
            if "method" not in message and ("result" in message or "error" in message):
                response_id = message.get("id")
                waiter = (
                    self._pending.get(response_id)
                    if isinstance(response_id, int) and not isinstance(response_id, bool)
                    else None
                )
                if waiter is not None:
                    waiter.send_nowait(("response", message))
                    return
            elif message.get("method") == "notifications/progress":
                params = message.get("params")
                token = params.get("progressToken") if isinstance(params, dict) else None
                waiter = self._progress.get(token) if _hashable(token) else None
                if waiter is not None and isinstance(params, dict):
                    waiter.send_nowait(("progress", params))
                    return
        self._to_raw(message)

    def _to_raw(self, message: Any) -> None:
        try:
            self._raw_send.send_nowait(message)
        except trio.WouldBlock:
            logger.warning("dropping an unclaimed message from the daemon: raw queue is full")
        except trio.ClosedResourceError:
            pass

    def _connection_lost(self, reason: str) -> None:
        """Mark the connection gone: every waiting caller and receive_raw get ConnectionLost."""
        if self._lost is not None:
            return
        self._lost = reason
        for waiter in list(self._pending.values()):
            waiter.close()
        self._raw_send.close()


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
    hint = {
        401: " (wrong or missing token: set EXAI_AUTH_TOKEN or pass --token)",
        503: " (the daemon is at its connection limit or not ready)",
    }.get(exc.status_code, "")
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
async def connect(
    url: str,
    *,
    token: str | None = None,
    initialize: bool = True,
    protocol_version: str = DEFAULT_PROTOCOL_VERSION,
    subprotocols: Iterable[str] = ("mcp",),
    connect_timeout: float = CONNECT_TIMEOUT_SECS,
) -> AsyncIterator[ExaiClient]:
    """Open an MCP session with the daemon at `url` (`ws://host:port/`).

    Raises CannotConnect when the connection or handshake fails, RpcError if `initialize`
    is refused. On leaving, the reader task is cancelled and the WebSocket closed with code
    1000; callers still waiting get ConnectionLost.
    """
    async with open_websocket(
        url, token=token, subprotocols=subprotocols, connect_timeout=connect_timeout
    ) as ws:
        client = ExaiClient(ws)
        with _unwrap_single():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._read_loop)
                if initialize:
                    await client._initialize(protocol_version)
                yield client
                nursery.cancel_scope.cancel()
