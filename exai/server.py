"""The WebSocket daemon: accept, one task reading each connection, dispatch, shutdown."""

from __future__ import annotations

import hmac
import itertools
import signal
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import trio
from loguru import logger
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from exai import __version__, metrics
from exai.lifecycle import (
    Alive,
    Calls,
    CancelReason,
    InflightCall,
    Services,
    internal_error,
    run_tool_call,
)
from exai.limits import Limits
from exai.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    BadMessage,
    Notification,
    Request,
    RpcError,
    dump,
    error_message,
    negotiate_version,
    parse_message,
    parse_tool_call,
    result_message,
)

WS_PATHS: Final = ("/", "/mcp")
HANDSHAKE_TIMEOUT_S: Final = 10.0
CLOSE_TIMEOUT_S: Final = 2.0
CLOSE_GOING_AWAY: Final = 1001

_connection_ids = itertools.count(1)


@dataclass
class Bound:
    """Where a started daemon listens."""

    url: str
    monitor_url: str | None
    daemon: Daemon


class Daemon:
    """The daemon's shared state: services, connections, readiness."""

    def __init__(self, settings: Any):
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self.calls = Calls()
        self.connections: Alive[str, Connection] = Alive()
        self.started_wall = time.time()
        self.heartbeat = time.monotonic()
        self.ready = False
        self.draining = False
        self.stopping = trio.Event()
        self.stopped = trio.Event()
        self.services: Services  # set by serve() once the providers are open

    def request_shutdown(self) -> None:
        self.stopping.set()

    def status(self) -> dict[str, Any]:
        """The snapshot behind /api/status and the `status` tool."""
        return {
            "version": __version__,
            "ready": self.ready,
            "draining": self.draining,
            "connections": len(self.connections),
            "inflight": self.limits.global_slots.borrowed_tokens,
            "queued": self.limits.queued,
            "uptime_s": round(time.time() - self.started_wall, 3),
            "limiters": self.limits.statistics(),
            "providers": self.services.gateway.statistics(),
            "requests": self.calls.snapshot(),
            "demo": bool(getattr(self.services.gateway, "demo", False)),
        }

    # -- accepting ---------------------------------------------------------------------

    async def handle(self, request: WebSocketRequest) -> None:
        """trio-websocket handler: check the handshake, then run the connection."""
        refusal = self._refusal(request)
        if refusal is not None:
            status, body = refusal
            logger.info("handshake refused from {}: {} {}", _peer(request), status, body)
            await request.reject(status, body=body.encode())
            return
        subprotocol = "mcp" if "mcp" in request.proposed_subprotocols else None
        ws = await request.accept(subprotocol=subprotocol)
        connection = Connection(self, ws, f"c{next(_connection_ids)}")
        await connection.run()

    def _refusal(self, request: WebSocketRequest) -> tuple[int, str] | None:
        path = request.path.split("?", 1)[0]
        if path not in WS_PATHS:
            return 404, f"no WebSocket endpoint at {path}; use / or /mcp"
        token = self.settings.auth_token
        if token is not None and not _bearer_matches(request, token.get_secret_value()):
            return 401, "missing or wrong Authorization: Bearer token"
        if self.draining:
            return 503, "server shutting down"
        if len(self.connections) >= self.settings.max_connections:
            return 503, f"too many connections (EXAI_MAX_CONNECTIONS={self.settings.max_connections})"
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
    """One client. A single task reads it; each call runs in its own task and scope."""

    def __init__(self, daemon: Daemon, ws: WebSocketConnection, connection_id: str):
        self.daemon = daemon
        self.ws = ws
        self.id = connection_id
        self.calls: dict[Any, InflightCall] = {}
        self.initialized = False
        self.gone = False
        self.close_code = 1000
        self.reader_scope = trio.CancelScope()
        self.log = logger.bind(conn=connection_id)

    async def run(self) -> None:
        """Serve the connection until the client leaves or the daemon stops.

        On return no call of this connection is running and its session limiter is gone.
        """
        daemon = self.daemon
        daemon.connections.add(self.id, self)
        metrics.connections.inc()
        self.log.info("connection {} open from {}", self.id, self.ws.remote)
        try:
            async with daemon.limits.session(self.id) as session_slots, trio.open_nursery() as calls:
                self.session_slots = session_slots
                self.nursery = calls
                with self.reader_scope:
                    try:
                        while True:
                            frame = await self.ws.get_message()
                            await self.dispatch(frame)
                    except ConnectionClosed as closed:
                        self._client_gone(_close_text(closed))
                # Leaving the nursery waits for the calls; a gone client's calls are already cancelled.
        finally:
            if not self.gone:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                    reason = "server shutting down" if self.close_code == CLOSE_GOING_AWAY else ""
                    await self.ws.aclose(self.close_code, reason)
            daemon.connections.remove(self.id)
            metrics.connections.dec()
            self.log.info("connection {} ended", self.id)

    def _client_gone(self, why: str) -> None:
        """The client left: log it once and cancel everything it started."""
        if self.gone:
            return
        self.gone = True
        what = "closed by the client" if why in ("code 1000", "code 1001") else "client gone"
        self.log.info("connection {} {}: {}; cancelling {} call(s)", self.id, what, why, len(self.calls))
        for call in list(self.calls.values()):
            call.cancel(CancelReason.DISCONNECT)
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

    # -- dispatch ----------------------------------------------------------------------

    async def dispatch(self, frame: str | bytes) -> None:
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
        return {
            "protocolVersion": negotiate_version(version),
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


def _close_text(closed: ConnectionClosed) -> str:
    reason = closed.reason
    if reason is None:
        return "no close frame"
    return f"code {reason.code}{' ' + reason.reason if reason.reason else ''}"


# -- serving ---------------------------------------------------------------------------


async def serve(
    settings: Any,
    *,
    demo: bool = False,
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until `daemon.request_shutdown()`; then drain and return.

    Started with `nursery.start(serve, settings)`, it hands back a Bound with the real URLs.
    On return every connection is closed and every call has ended.
    """
    daemon = Daemon(settings)
    try:
        await _serve(daemon, demo, task_status)
    finally:
        daemon.stopped.set()


async def _serve(daemon: Daemon, demo: bool, task_status: Any) -> None:
    from exai.monitor import heartbeat, serve_monitor
    from exai.providers.gateway import ModelGateway
    from exai.providers.simulator import serve_simulator
    from exai.store import open_store
    from exai.tools import all_tools

    settings = daemon.settings
    no_keys = settings.kimi_api_key is None and settings.glm_api_key is None
    async with trio.open_nursery() as background:
        simulator_url = None
        if demo or no_keys:
            simulator = await background.start(serve_simulator, "127.0.0.1", 0)
            simulator_url = simulator.url
            why = "--demo" if demo else "no KIMI_API_KEY or GLM_API_KEY is set"
            logger.warning(
                "DEMO MODE ({}): answers come from the built-in simulator at {}, not a real model",
                why,
                simulator_url,
            )
        gateway = ModelGateway.from_settings(settings, daemon.limits.providers, simulator_url=simulator_url)
        async with open_store(settings) as store:
            async with gateway:
                daemon.services = Services(
                    settings=settings,
                    limits=daemon.limits,
                    gateway=gateway,
                    tools=all_tools(settings),
                    store=store,
                    calls=daemon.calls,
                    status=daemon.status,
                )
                background.start_soon(heartbeat, daemon)
                monitor_url = None
                if settings.monitor_port is not None and settings.monitor_port >= 0:
                    monitor_url = await background.start(serve_monitor, daemon, settings.host, settings.monitor_port)
                await _serve_websockets(daemon, monitor_url, task_status)
        background.cancel_scope.cancel()


async def _serve_websockets(daemon: Daemon, monitor_url: str | None, task_status: Any) -> None:
    settings = daemon.settings
    async with trio.open_nursery() as connections:
        listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
        server = WebSocketServer(
            daemon.handle,
            listeners,
            handler_nursery=connections,
            max_message_size=settings.max_message_bytes,
            connect_timeout=HANDSHAKE_TIMEOUT_S,
            disconnect_timeout=CLOSE_TIMEOUT_S,
        )
        async with trio.open_nursery() as accepting:
            await accepting.start(server.run)
            port = server.port
            host = settings.host
            shown = f"[{host}]" if ":" in host else host
            url = f"ws://{shown}:{port}/"
            daemon.ready = True
            task_status.started(Bound(url, monitor_url, daemon))
            await daemon.stopping.wait()
            daemon.ready = False
            daemon.draining = True
            accepting.cancel_scope.cancel()
        await _drain(daemon)
        connections.cancel_scope.cancel()


async def _drain(daemon: Daemon) -> None:
    """Let calls finish within the grace period, cancel the rest, close every client with 1001."""
    grace = float(daemon.settings.shutdown_grace_secs)
    logger.info("shutting down: {} call(s) in flight, grace {:g} s", len(daemon.calls), grace)
    with trio.move_on_after(grace):
        await daemon.calls.wait_empty()
    for call in list(daemon.calls.active.values()):
        call.cancel(CancelReason.SHUTDOWN)
    with trio.move_on_after(CLOSE_TIMEOUT_S):
        await daemon.calls.wait_empty()
    for connection in list(daemon.connections.active.values()):
        connection.close(CLOSE_GOING_AWAY)
    with trio.move_on_after(CLOSE_TIMEOUT_S):
        await daemon.connections.wait_empty()


def run_serve(*, host: str | None, port: int | None, monitor_port: int | None, demo: bool) -> int:
    """`exai serve`: 0 after a clean shutdown, 2 on invalid configuration."""
    from exai.config import ConfigError, load_settings
    from exai.logs import setup_logging

    overrides = {k: v for k, v in {"host": host, "port": port, "monitor_port": monitor_port}.items() if v is not None}
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"exai: invalid configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            bound: Bound = await nursery.start(partial(serve, settings, demo=demo))
            print(f"exai listening on {bound.url.rstrip('/')}", flush=True)
            if bound.monitor_url and settings.monitor_port == 0:
                print(f"exai monitor on {bound.monitor_url}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    logger.info("received {}, shutting down", signal.Signals(signum).name)
                    bound.daemon.request_shutdown()
                    break

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        bind_error = _find(exc, OSError)
        if bind_error is None:
            raise
        print(f"exai: cannot listen: {bind_error}", file=sys.stderr)
        return 1
    return 0


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first `kind` exception in `exc` or, for a group, anywhere inside it."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None
