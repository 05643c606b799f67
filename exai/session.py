"""One client's MCP session: dispatch, its calls, its limiter. Transport-free.

A transport (WebSocket, Streamable HTTP) opens a session with `open_session`, hands it each
incoming frame, and gives it a `send` for what goes back. The session owns its calls: they
run in the session's nursery, so when the session ends, every call it started has ended.
What differs between protocol eras is asked of the request's era (`exai.eras`), never here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio
from loguru import logger

from exai import metrics
from exai.eras import Era, era_of
from exai.lifecycle import (
    Alive,
    CancelReason,
    InflightCall,
    Services,
    internal_error,
    run_tool_call,
)
from exai.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    META_SUBSCRIPTION,
    METHOD_NOT_FOUND,
    OVERLOADED,
    BadMessage,
    Message,
    Notification,
    Request,
    RequestId,
    Response,
    RpcError,
    ToolCall,
    error_message,
    notification_message,
    parse_cancelled,
    parse_message,
    parse_tool_call,
    result_message,
)
from exai.subscriptions import Subscription
from exai.tools.base import ServedTool

Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE_TIMEOUT_S: Final = 2.0
REASON_SHOWN: Final = 200  # characters of a client's cancel reason that go into the log


def _nothing() -> None:
    pass


def _no_call_ended(request_id: RequestId) -> None:
    pass


@dataclass(frozen=True, slots=True)
class Hooks:
    """What a transport asks to hear from its session; given when the session is built."""

    # Stop taking messages, and end the transport once the calls have ended (shutdown).
    end_transport: Callable[[], None] = _nothing
    # A call is over, answered or not (HTTP closes its stream even when no response is owed).
    call_ended: Callable[[RequestId], None] = _no_call_ended


class Session:
    """The MCP state of one client: initialized or not, and its calls in flight."""

    def __init__(
        self,
        services: Services,
        session_id: str,
        send: Send,
        session_slots: trio.CapacityLimiter,
        nursery: trio.Nursery,
        hooks: Hooks = Hooks(),
    ):
        self.services = services
        self.id = session_id
        self.send = send
        self.session_slots = session_slots
        self.nursery = nursery  # where this session's calls run
        self.hooks = hooks
        self.calls: dict[RequestId, InflightCall] = {}
        self.subscriptions: dict[RequestId, Subscription] = {}
        self.initialized = False
        self.protocol_version: str | None = None
        self.failed = False  # set when an unexpected exception ends the session
        self.log = logger.bind(conn=session_id)

    def end_transport(self) -> None:
        self.hooks.end_transport()

    def cancel_calls(self, reason: CancelReason) -> int:
        """Cancel every call of this session, and end its subscriptions without an answer
        (the client is gone or asked for it); returns how many calls there were."""
        calls = list(self.calls.values())
        for call in calls:
            call.cancel(reason)
        for subscription in self.subscriptions.values():
            subscription.scope.cancel()
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
            return self._request(message)
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
            reason = cancelled.reason[:REASON_SHOWN]
            call = self.calls.get(cancelled.request_id)
            if call is not None:
                self.log.info("call {}/{} cancelled by client: {!r}", self.id, call.id, reason)
                call.cancel(CancelReason.CLIENT)
            subscription = self.subscriptions.get(cancelled.request_id)
            if subscription is not None:
                self.log.info("subscription {}/{} ended by client: {!r}", self.id, subscription.id, reason)
                subscription.scope.cancel()
        # notifications/initialized and others need no answer and change nothing.

    def _request(self, request: Request) -> dict[str, Any] | None:
        """The response to send at once, or None when a call was started (its task answers)."""
        era = era_of(request)
        era.admit(self, request)
        handler = era.methods.get(request.method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {request.method}")
        result = handler(self, request)
        return None if result is None else result_message(request.id, era.finish(result))

    # -- calls ---------------------------------------------------------------------------

    def start_call(self, request: Request) -> None:
        """Start a tools/call in the session's nursery; RpcError when it cannot start."""
        services = self.services
        parsed = parse_tool_call(request.params)
        tool = services.tools.get(parsed.name)
        if tool is None:
            known = ", ".join(sorted(services.tools))
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {parsed.name} (known: {known})")
        self._check_new_id(request.id)
        if services.draining():
            raise RpcError(OVERLOADED, "Server shutting down", {"retry_after_s": 1})
        timeout = float(services.settings.tool_timeout_secs)
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
        services.calls.add((self.id, call.id), call)
        self.nursery.start_soon(self._run_call, call, parsed, tool, era_of(request))

    def _check_new_id(self, request_id: RequestId) -> None:
        if request_id in self.calls or request_id in self.subscriptions:
            raise RpcError(INVALID_REQUEST, f"Invalid Request: id {request_id!r} is already in flight")

    # -- subscriptions -------------------------------------------------------------------

    def start_subscription(self, request: Request, wants_tools: bool, era: Era) -> None:
        """Open a `subscriptions/listen` stream in the session's nursery: acknowledged first,
        then a notification per change asked for, until the client cancels it or it ends."""
        self._check_new_id(request.id)
        if self.services.draining():
            raise RpcError(OVERLOADED, "Server shutting down", {"retry_after_s": 1})
        subscription = Subscription(request.id, wants_tools)
        self.subscriptions[request.id] = subscription
        self.nursery.start_soon(self._run_subscription, subscription, era)

    async def _run_subscription(self, subscription: Subscription, era: Era) -> None:
        tag = {META_SUBSCRIPTION: subscription.id}
        listeners = self.services.listeners
        listeners.subscriptions.add(subscription)
        try:
            with subscription.scope:
                agreed = {"toolsListChanged": True} if subscription.wants_tools else {}
                ack = {"_meta": tag, "notifications": agreed}
                await self.send(notification_message("notifications/subscriptions/acknowledged", ack))
                while True:
                    await subscription.next_change()
                    await self.send(notification_message("notifications/tools/list_changed", {"_meta": tag}))
            if subscription.graceful:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                    await self._send_answer(result_message(subscription.id, era.finish({"_meta": tag})))
        finally:
            listeners.subscriptions.discard(subscription)
            del self.subscriptions[subscription.id]
            self.hooks.call_ended(subscription.id)

    def tools_changed(self) -> None:
        """A session that did `initialize` hears of tool-set changes on its connection."""
        if self.initialized:
            note = notification_message("notifications/tools/list_changed", {})
            self.nursery.start_soon(self._send_answer, note)

    def end_subscriptions(self) -> None:
        for subscription in list(self.subscriptions.values()):
            subscription.end()

    async def _run_call(self, call: InflightCall, parsed: ToolCall, tool: ServedTool, era: Era) -> None:
        try:
            response = await run_tool_call(self.services, call, parsed, tool, self.session_slots, self.send)
            if response is not None:
                if "result" in response:
                    response["result"] = era.finish(response["result"])
                await self._send_answer(response)
        finally:
            del self.calls[call.id]
            self.services.calls.remove((self.id, call.id))
            self.hooks.call_ended(call.id)


@asynccontextmanager
async def open_session(
    services: Services,
    session_id: str,
    send: Send,
    *,
    hooks: Hooks = Hooks(),
    close: Callable[[], Awaitable[None]] | None = None,
    registry: Alive[str, Session] | None = None,
    slots: trio.CapacityLimiter | None = None,
) -> AsyncIterator[Session]:
    """A session for the body, counted in `registry` (the daemon's connections) if given; on
    exit, none of its calls runs.

    Its calls take `slots` (a limiter the caller shares between sessions) or, by default, a
    `session:<id>` limiter of their own. Leaving waits for the session's calls (a transport
    that lost its client cancels them first with `cancel_calls`, so the wait is short), then
    awaits `close` (shielded, at most CLOSE_TIMEOUT_S) so the transport is closed before the
    session stops being counted.
    """
    async with _own_slots(services, session_id, slots) as session_slots:
        if registry is not None:
            metrics.connections.inc()
        session: Session | None = None
        try:
            async with trio.open_nursery() as nursery:
                session = Session(services, session_id, send, session_slots, nursery, hooks)
                if registry is not None:
                    registry.add(session_id, session)
                services.listeners.sessions.add(session)
                try:
                    yield session
                except BaseException:
                    # The session ends here, whatever ended it: for its calls, a disconnect.
                    session.cancel_calls(CancelReason.DISCONNECT)
                    raise
                finally:
                    services.listeners.sessions.discard(session)
                session.end_subscriptions()  # a session ended in order answers its subscriptions
        except* Exception:
            if session is not None:
                session.failed = True
            raise
        finally:
            try:
                if close is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                        await close()
            finally:
                if registry is not None:
                    if session is not None:
                        registry.remove(session_id)
                    metrics.connections.dec()


@asynccontextmanager
async def _own_slots(
    services: Services, session_id: str, shared: trio.CapacityLimiter | None
) -> AsyncIterator[trio.CapacityLimiter]:
    if shared is not None:
        yield shared
        return
    async with services.limits.session(session_id) as session_slots:
        yield session_slots
