"""MCP over WebSocket (trio-websocket): the handshake, one task per TCP client.

Only moves frames: each frame goes to the connection's Session, whatever the session sends
goes back as one text frame. Each client's task is its own fault boundary (`serve_stream`):
whatever goes wrong inside it ends that connection only.
"""

from __future__ import annotations

import contextlib
import itertools
from functools import partial
from typing import TYPE_CHECKING, Final

import trio
from loguru import logger
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from exai.auth import bearer_ok
from exai.lifecycle import CancelReason, new_error_id
from exai.protocol import dump
from exai.session import CLOSE_TIMEOUT_S, Hooks, Session, open_session

if TYPE_CHECKING:
    from exai.server import Daemon

WS_PATHS: Final = ("/", "/mcp")
HANDSHAKE_TIMEOUT_S: Final = 10.0  # a client that has not completed its handshake by then is dropped
CLOSE_GOING_AWAY: Final = 1001
CLOSE_INTERNAL_ERROR: Final = 1011

_connection_ids = itertools.count(1)


async def serve_websockets(
    daemon: Daemon, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Accept WebSocket clients until cancelled; task_status gets the URL (real port).

    Connection tasks run in `daemon.connection_nursery`, not here, so cancelling the accept
    loop stops new clients while the connections drain.
    """
    settings = daemon.settings
    listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as accepting:
        await accepting.start(
            partial(
                trio.serve_listeners,
                partial(serve_stream, daemon),
                listeners,
                handler_nursery=daemon.connection_nursery,
            )
        )
        host = settings.host
        shown = f"[{host}]" if ":" in host else host
        task_status.started(f"ws://{shown}:{port}/")


async def serve_stream(daemon: Daemon, stream: trio.SocketStream) -> None:
    """One TCP client, from its first byte to its close: the fault boundary of a connection.

    Any exception in here (handshake, reader, dispatch, a call, a send) ends this connection
    only: an open WebSocket is closed with 1011, a pending handshake is answered 500 (or its
    socket closed), its calls are cancelled as a disconnect, and it is logged once with an
    error id. trio.Cancelled and KeyboardInterrupt pass. On return the socket is closed and
    the connection's slot free.
    """
    connection = Connection(daemon, stream)
    try:
        async with trio.open_nursery() as nursery:  # hosts trio-websocket's reader task
            try:
                await connection.run(nursery)
            except* Exception:
                await connection.close_after_failure()  # while the reader can still see the close
                raise
            finally:
                nursery.cancel_scope.cancel()
    except* (ConnectionClosed, trio.BrokenResourceError):
        connection.log.info("connection {} from {}: the client went away", connection.id, connection.peer)
    except* Exception as failure:
        connection.log_failure(failure)
    finally:
        connection.release_slot()
        await trio.aclose_forcefully(stream)


class Connection:
    """One WebSocket client: its handshake, then its Session. A single task reads it."""

    def __init__(self, daemon: Daemon, stream: trio.SocketStream):
        self.daemon = daemon
        self.stream = stream
        self.id = f"c{next(_connection_ids)}"
        self.peer = _peer(stream)
        self.request: WebSocketRequest | None = None
        self.answered = False  # the handshake was accepted or refused
        self.slot_held = False
        self.ws: WebSocketConnection | None = None
        self.session: Session | None = None
        self.gone = False
        self.close_code = 1000
        self.error_id: str | None = None
        self.reader_scope = trio.CancelScope()
        self.log = logger.bind(conn=self.id)

    async def run(self, nursery: trio.Nursery) -> None:
        """Take the handshake, then serve the client until it leaves or the daemon stops.

        On return no call of this connection is running and its session limiter is gone.
        """
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S) as handshake:
            max_bytes = self.daemon.settings.max_message_bytes
            request = await wrap_server_stream(nursery, self.stream, max_message_size=max_bytes)
            self.request = request
        if handshake.cancelled_caught:
            self.log.info(
                "connection {} from {}: no complete handshake within {:g} s, dropped",
                self.id,
                self.peer,
                HANDSHAKE_TIMEOUT_S,
            )
            return
        self.ws = await self._answer_handshake(request)
        if self.ws is not None:
            await self._serve(self.ws)

    async def _answer_handshake(self, request: WebSocketRequest) -> WebSocketConnection | None:
        """Accept or refuse the handshake; the open WebSocket, or None if refused or gone."""
        refusal = _admit(self.daemon, request, self)
        self.answered = True
        try:
            if refusal is not None:
                status, body = refusal
                self.log.info("handshake from {} refused: {} {}", self.peer, status, body)
                await request.reject(status, body=body.encode())
                return None
            subprotocol = "mcp" if "mcp" in request.proposed_subprotocols else None
            return await request.accept(subprotocol=subprotocol)
        except ConnectionClosed:
            self.log.info("connection {} from {}: the client left during the handshake", self.id, self.peer)
            return None

    async def _serve(self, ws: WebSocketConnection) -> None:
        self.log.info("connection {} open from {}", self.id, self.peer)
        try:
            hooks = Hooks(end_transport=partial(self.close, CLOSE_GOING_AWAY))
            async with open_session(
                self.daemon.services,
                self.id,
                self.send,
                hooks=hooks,
                close=self._close,
                registry=self.daemon.connections,
            ) as session:
                self.session = session
                with self.reader_scope:
                    try:
                        while True:
                            frame = await ws.get_message()
                            await session.dispatch(frame)
                    except ConnectionClosed as closed:
                        self._client_gone(_close_text(closed))
                # Leaving the session waits for its calls; a gone client's are already cancelled.
        finally:
            self.log.info("connection {} ended", self.id)

    async def _close(self) -> None:
        if self.gone or self.ws is None:
            return
        if self.session is not None and self.session.failed:
            await self.ws.aclose(CLOSE_INTERNAL_ERROR, self._failure_text())
        else:
            reason = "server shutting down" if self.close_code == CLOSE_GOING_AWAY else ""
            await self.ws.aclose(self.close_code, reason)

    def _client_gone(self, why: str) -> None:
        """The client left: log it once and cancel everything it started."""
        if self.gone:
            return
        self.gone = True
        what = "closed by the client" if why in ("code 1000", "code 1001") else "client gone"
        count = len(self.session.calls) if self.session else 0
        self.log.info("connection {} {}: {}; cancelling {} call(s)", self.id, what, why, count)
        if self.session is not None:
            self.session.cancel_calls(CancelReason.DISCONNECT)
        self.reader_scope.cancel()

    def close(self, code: int) -> None:
        """Stop reading and close with `code` once the calls have ended (used by shutdown)."""
        self.close_code = code
        self.reader_scope.cancel()

    async def send(self, message: dict[str, object]) -> None:
        """Send one message; a dead client is detected once and ends this connection's work."""
        if self.gone or self.ws is None:
            return
        try:
            await self.ws.send_message(dump(message))
        except ConnectionClosed as closed:
            self._client_gone(f"send failed ({_close_text(closed)})")

    # -- after a bug -----------------------------------------------------------------------

    def _failure_text(self) -> str:
        if self.error_id is None:
            self.error_id = new_error_id()
        return f"internal error, error id {self.error_id}"

    async def close_after_failure(self) -> None:
        """Close the WebSocket with 1011, or answer a pending handshake with 500 (bounded)."""
        text = self._failure_text()
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
            if self.ws is not None:
                await self.ws.aclose(CLOSE_INTERNAL_ERROR, text)
            elif self.request is not None and not self.answered:
                self.answered = True
                with contextlib.suppress(ConnectionClosed):
                    await self.request.reject(500, body=text.encode())

    def log_failure(self, failure: BaseExceptionGroup[Exception]) -> None:
        """The one log event of a connection that failed, with its error id and traceback."""
        if self.ws is not None:
            ending = f"closed with {CLOSE_INTERNAL_ERROR}; its calls cancelled"
        elif self.request is not None:
            ending = "handshake answered 500"
        else:
            ending = "socket closed"
        self.log.opt(exception=_innermost(failure)).error(
            "connection {} from {} failed unexpectedly, {}: {}",
            self.id,
            self.peer,
            self._failure_text().removeprefix("internal error, "),
            ending,
        )

    def release_slot(self) -> None:
        if self.slot_held:
            self.slot_held = False
            self.daemon.connection_slots.release(self)


def _admit(daemon: Daemon, request: WebSocketRequest, connection: Connection) -> tuple[int, str] | None:
    """Refuse the handshake (status, body), or take a connection slot for it.

    Synchronous, so no other handshake can take the slot between the check and the taking.
    """
    path = request.path.split("?", 1)[0]
    if path not in WS_PATHS:
        return 404, f"no WebSocket endpoint at {path}; use / or /mcp"
    token = daemon.settings.auth_token
    if token is not None and not bearer_ok(request.headers, token.get_secret_value()):
        return 401, "missing or wrong Authorization: Bearer token"
    if daemon.draining:
        return 503, "server shutting down"
    if not daemon.connection_slots.take(connection):
        limit = daemon.settings.max_connections
        return 503, f"too many connections: the daemon is at its limit (EXAI_MAX_CONNECTIONS={limit})"
    connection.slot_held = True
    return None


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:  # already disconnected
        return "a client already gone"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _innermost(failure: BaseException) -> BaseException:
    """The exception itself when a group holds just one, however deeply nested."""
    while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
        failure = failure.exceptions[0]
    return failure


def _close_text(closed: ConnectionClosed) -> str:
    reason = closed.reason
    if reason is None:
        return "no close frame"
    return f"code {reason.code}{' ' + reason.reason if reason.reason else ''}"
