"""One client's MCP session: dispatch, its calls, its limiter. Transport-free.

A transport (WebSocket, Streamable HTTP) opens a session with `open_session`, hands it each
incoming frame, and gives it a `send` for what goes back. The session owns its calls: they
run in the session's nursery, so when the session ends, every call it started has ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import trio
from loguru import logger

from exai import __version__, metrics
from exai.lifecycle import CancelReason, InflightCall, internal_error, run_tool_call
from exai.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    BadMessage,
    Notification,
    Request,
    RequestId,
    RpcError,
    error_message,
    negotiate_version,
    parse_message,
    parse_tool_call,
    result_message,
)

Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE_TIMEOUT_S: Final = 2.0


class Session:
    """The MCP state of one client: initialized or not, and its calls in flight."""

    def __init__(
        self,
        daemon: Any,
        session_id: str,
        send: Send,
        session_slots: trio.CapacityLimiter,
    ):
        self.daemon = daemon
        self.id = session_id
        self.send = send
        self.session_slots = session_slots
        self.nursery: trio.Nursery  # set by open_session: where this session's calls run
        self.calls: dict[Any, InflightCall] = {}
        self.initialized = False
        self.protocol_version: str | None = None
        # Set by the transport: stop taking messages, and end the transport once the calls
        # have ended (shutdown uses it after the grace period).
        self.end_transport: Callable[[], None] = lambda: None
        # Set by a transport that must know when a call is over, answered or not (HTTP
        # closes the call's stream even when no response is owed).
        self.call_ended: Callable[[RequestId], None] = lambda request_id: None
        self.log = logger.bind(conn=session_id)

    def cancel_calls(self, reason: CancelReason) -> int:
        """Cancel every call of this session; returns how many there were."""
        calls = list(self.calls.values())
        for call in calls:
            call.cancel(reason)
        return len(calls)

    # -- dispatch ----------------------------------------------------------------------

    async def dispatch(self, frame: str | bytes) -> None:
        """Handle one incoming frame; answers go through `send`."""
        try:
            message = parse_message(frame)
        except BadMessage as bad:
            await self.send(error_message(bad.id, bad.code, bad.message))
            return
        if isinstance(message, Notification):
            self._notification(message)
        elif isinstance(message, Request):
            try:
                result = self._request(message)
            except RpcError as exc:
                await self.send(error_message(message.id, exc.code, exc.message, exc.data))
                return
            except Exception:
                await self.send(internal_error(message.id, f"request {self.id}/{message.id} {message.method}", self.log))
                return
            if result is not None:
                await self.send(result_message(message.id, result))

    def _notification(self, note: Notification) -> None:
        if note.method == "notifications/initialized":
            return
        if note.method == "notifications/cancelled":
            call = self.calls.get(note.params.get("requestId"))
            if call is not None:
                self.log.info("call {}/{} cancelled by client: {}", self.id, call.id, note.params.get("reason", ""))
                call.cancel(CancelReason.CLIENT)
        # Other notifications need no answer and change nothing.

    def _request(self, request: Request) -> Any:
        """Answer a request at once, or start a call and return None (its task answers)."""
        method = request.method
        if method == "initialize":
            return self._initialize(request)
        if not self.initialized:
            raise RpcError(INVALID_REQUEST, f"Invalid Request: {method} before initialize")
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": [tool.describe() for tool in self.daemon.services.tools.values()]}
        if method == "tools/call":
            self._start_call(request)
            return None
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    def _initialize(self, request: Request) -> dict[str, Any]:
        if self.initialized:
            raise RpcError(INVALID_REQUEST, "Invalid Request: initialize was already done")
        version = request.params.get("protocolVersion")
        if version is not None and not isinstance(version, str):
            raise RpcError(INVALID_PARAMS, 'Invalid params: "protocolVersion" must be a string')
        self.initialized = True
        self.protocol_version = negotiate_version(version)
        return {
            "protocolVersion": self.protocol_version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "exai", "version": __version__},
            "instructions": "exai serves AI workflow tools backed by GLM and Kimi; see tools/list.",
        }

    def _start_call(self, request: Request) -> None:
        daemon = self.daemon
        parsed = parse_tool_call(request.params)
        tool = daemon.services.tools.get(parsed.name)
        if tool is None:
            known = ", ".join(sorted(daemon.services.tools))
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {parsed.name} (known: {known})")
        if request.id in self.calls:
            raise RpcError(INVALID_REQUEST, f"Invalid Request: id {request.id!r} is already in flight")
        if daemon.draining:
            raise RpcError(-32000, "Server shutting down", {"retry_after_s": 1})
        timeout = float(daemon.settings.tool_timeout_secs)
        if parsed.timeout is not None:
            timeout = min(timeout, parsed.timeout)
        now = trio.current_time()
        call = InflightCall(
            id=request.id,
            connection_id=self.id,
            tool=parsed.name,
            arrived=now,
            deadline=now + timeout,
            scope=trio.CancelScope(deadline=now + timeout),
        )
        self.calls[request.id] = call
        daemon.calls.add((self.id, call.id), call)
        self.nursery.start_soon(self._run_call, call, parsed, tool)

    async def _run_call(self, call: InflightCall, parsed: Any, tool: Any) -> None:
        try:
            response = await run_tool_call(
                self.daemon.services, call, parsed, tool, self.session_slots, self.send
            )
            if response is not None:
                await self.send(response)
        finally:
            del self.calls[call.id]
            self.daemon.calls.remove((self.id, call.id))
            self.call_ended(call.id)


@asynccontextmanager
async def open_session(
    daemon: Any, session_id: str, send: Send, close: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[Session]:
    """A session registered with the daemon for the body; on exit, none of its calls runs.

    Leaving waits for the session's calls (a transport that lost its client cancels them
    first with `cancel_calls`, so the wait is short), then awaits `close` (shielded, at most
    CLOSE_TIMEOUT_S) so the transport is closed before the session stops being counted.
    """
    async with daemon.limits.session(session_id) as session_slots:
        session = Session(daemon, session_id, send, session_slots)
        daemon.connections.add(session_id, session)
        metrics.connections.inc()
        try:
            async with trio.open_nursery() as session.nursery:
                yield session
        finally:
            try:
                if close is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                        await close()
            finally:
                daemon.connections.remove(session_id)
                metrics.connections.dec()
