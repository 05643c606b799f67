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
    Message,
    Notification,
    Request,
    RequestId,
    Response,
    RpcError,
    error_message,
    negotiate_version,
    parse_cancelled,
    parse_initialize,
    parse_message,
    parse_tool_call,
    result_message,
)

Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE_TIMEOUT_S: Final = 2.0
REASON_SHOWN: Final = 200  # characters of a client's cancel reason that go into the log


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
        self.failed = False  # set when an unexpected exception ends the session
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

    async def dispatch(self, frame: str | bytes | Message) -> None:
        """Handle one incoming frame, or a message the transport has parsed already (HTTP
        parses each POST to route its answer); answers go through `send`.

        Bad input is answered with the contract's code; a bug while handling this one frame
        is answered with -32603 and an error id, and the session goes on.
        """
        answer = self._answer(frame)
        if answer is not None:
            await self._send_answer(answer)

    async def _send_answer(self, answer: dict[str, Any]) -> None:
        """Send an answer; if sending it fails unexpectedly (say it cannot be serialized),
        send -32603 with an error id instead. A second failure ends the session."""
        try:
            await self.send(answer)
        except Exception:
            await self.send(internal_error(answer.get("id"), f"answer on connection {self.id}", self.log))

    def _answer(self, frame: str | bytes | Message) -> dict[str, Any] | None:
        message: Message | None = None
        try:
            message = parse_message(frame) if isinstance(frame, str | bytes) else frame
            if isinstance(message, Notification):
                self._notification(message)
                return None
            if isinstance(message, Response):
                self.log.debug("ignoring a response from the client (id {!r}): exai sends no requests", message.id)
                return None
            result = self._request(message)
            return None if result is None else result_message(message.id, result)
        except BadMessage as bad:
            return error_message(bad.id, bad.code, bad.message)
        except RpcError as exc:
            request_id = message.id if isinstance(message, Request) else None
            return error_message(request_id, exc.code, exc.message, exc.data)
        except Exception:
            if isinstance(message, Request):
                return internal_error(message.id, f"request {self.id}/{message.id} {message.method!r}", self.log)
            if isinstance(message, Notification):
                internal_error(None, f"notification {message.method!r} on connection {self.id}", self.log)
                return None  # a notification gets no answer, even this one
            return internal_error(None, f"a frame on connection {self.id}", self.log)

    def _notification(self, note: Notification) -> None:
        if note.method == "notifications/cancelled":
            try:
                cancelled = parse_cancelled(note.params)
            except RpcError as exc:
                self.log.debug("ignoring notifications/cancelled on {}: {}", self.id, exc.message)
                return
            call = self.calls.get(cancelled.request_id)
            if call is not None:
                reason = cancelled.reason[:REASON_SHOWN]
                self.log.info("call {}/{} cancelled by client: {!r}", self.id, call.id, reason)
                call.cancel(CancelReason.CLIENT)
        # notifications/initialized and others need no answer and change nothing.

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
        version = parse_initialize(request.params)
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
                await self._send_answer(response)
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
                try:
                    yield session
                except BaseException:
                    # The session ends here, whatever ended it: for its calls, a disconnect.
                    session.cancel_calls(CancelReason.DISCONNECT)
                    raise
        except* Exception:
            session.failed = True
            raise
        finally:
            try:
                if close is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                        await close()
            finally:
                daemon.connections.remove(session_id)
                metrics.connections.dec()
