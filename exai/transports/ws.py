"""MCP over WebSocket (trio-websocket): the handshake, one task reading each connection.

Only moves frames: each text frame goes to the connection's Session, whatever the session
sends goes back as one text frame.
"""

from __future__ import annotations

import hmac
import itertools
from typing import Any, Final

import trio
from loguru import logger
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from exai.lifecycle import CancelReason
from exai.protocol import dump
from exai.session import CLOSE_TIMEOUT_S, Session, open_session

WS_PATHS: Final = ("/", "/mcp")
HANDSHAKE_TIMEOUT_S: Final = 10.0
CLOSE_GOING_AWAY: Final = 1001

_connection_ids = itertools.count(1)


async def handle(daemon: Any, request: WebSocketRequest) -> None:
    """trio-websocket handler: check the handshake, then run the connection."""
    refusal = _refusal(daemon, request)
    if refusal is not None:
        status, body = refusal
        logger.info("handshake refused from {}: {} {}", _peer(request), status, body)
        await request.reject(status, body=body.encode())
        return
    subprotocol = "mcp" if "mcp" in request.proposed_subprotocols else None
    ws = await request.accept(subprotocol=subprotocol)
    connection = Connection(daemon, ws, f"c{next(_connection_ids)}")
    await connection.run()


def _refusal(daemon: Any, request: WebSocketRequest) -> tuple[int, str] | None:
    path = request.path.split("?", 1)[0]
    if path not in WS_PATHS:
        return 404, f"no WebSocket endpoint at {path}; use / or /mcp"
    token = daemon.settings.auth_token
    if token is not None and not _bearer_matches(request, token.get_secret_value()):
        return 401, "missing or wrong Authorization: Bearer token"
    if daemon.draining:
        return 503, "server shutting down"
    if len(daemon.connections) >= daemon.settings.max_connections:
        return 503, f"too many connections (EXAI_MAX_CONNECTIONS={daemon.settings.max_connections})"
    return None


def _bearer_matches(request: WebSocketRequest, token: str) -> bool:
    for name, value in request.headers:
        if name.lower() == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
                return True
    return False


def _peer(request: WebSocketRequest) -> str:
    remote = request.remote
    return f"{getattr(remote, 'address', remote)}:{getattr(remote, 'port', '')}"


class Connection:
    """One WebSocket client. A single task reads it; its Session runs the calls."""

    def __init__(self, daemon: Any, ws: WebSocketConnection, connection_id: str):
        self.daemon = daemon
        self.ws = ws
        self.id = connection_id
        self.session: Session | None = None
        self.gone = False
        self.close_code = 1000
        self.reader_scope = trio.CancelScope()
        self.log = logger.bind(conn=connection_id)

    async def run(self) -> None:
        """Serve the connection until the client leaves or the daemon stops.

        On return no call of this connection is running and its session limiter is gone.
        """
        self.log.info("connection {} open from {}", self.id, self.ws.remote)
        try:
            async with open_session(self.daemon, self.id, self.send, self._close) as session:
                self.session = session
                session.end_transport = lambda: self.close(CLOSE_GOING_AWAY)
                with self.reader_scope:
                    try:
                        while True:
                            frame = await self.ws.get_message()
                            await session.dispatch(frame)
                    except ConnectionClosed as closed:
                        self._client_gone(_close_text(closed))
                # Leaving the session waits for its calls; a gone client's are already cancelled.
        finally:
            self.log.info("connection {} ended", self.id)

    async def _close(self) -> None:
        if not self.gone:
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

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message; a dead client is detected once and ends this connection's work."""
        if self.gone:
            return
        try:
            await self.ws.send_message(dump(message))
        except ConnectionClosed as closed:
            self._client_gone(f"send failed ({_close_text(closed)})")


def _close_text(closed: ConnectionClosed) -> str:
    reason = closed.reason
    if reason is None:
        return "no close frame"
    return f"code {reason.code}{' ' + reason.reason if reason.reason else ''}"


async def serve_websockets(
    daemon: Any, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Accept WebSocket clients until cancelled; task_status gets the URL (real port).

    Connection tasks run in `daemon.connection_nursery`, not here, so cancelling the accept
    loop stops new clients while the connections drain.
    """
    settings = daemon.settings
    listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
    server = WebSocketServer(
        lambda request: handle(daemon, request),
        listeners,
        handler_nursery=daemon.connection_nursery,
        max_message_size=settings.max_message_bytes,
        connect_timeout=HANDSHAKE_TIMEOUT_S,
        disconnect_timeout=CLOSE_TIMEOUT_S,
    )
    async with trio.open_nursery() as accepting:
        await accepting.start(server.run)
        host = settings.host
        shown = f"[{host}]" if ":" in host else host
        task_status.started(f"ws://{shown}:{server.port}/")
        await trio.sleep_forever()
