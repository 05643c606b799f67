"""The monitor: health, readiness, Prometheus metrics, JSON status and history, a live dashboard.

It runs on its own thread and event loop, and answers from the snapshot the daemon's heartbeat
publishes (server.Snapshot: built on the daemon's loop, never changed after), so it stays fast
while the daemon is saturated and never reads the daemon's live objects; the one exception is
the History, a ring made for this with its own lock. Status is at most one beat old.

With EXAI_AUTH_TOKEN set, everything but /healthz and /readyz needs the token: a Bearer
header, or the dashboard's cookie, which `/?token=` sets once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import queue
import time
import uuid
from functools import cache, partial
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_to_bytes

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from exai import metrics
from exai.asgi import lifespan
from exai.store import OpenCircuit, Store, StoreUnavailable

if TYPE_CHECKING:
    from exai.server import Daemon

Headers = list[tuple[bytes, bytes]]
Response = tuple[int, str, bytes, Headers]

# The daemon's loop beats every HEARTBEAT_S, each beat a fresh snapshot; /healthz fails once
# it has been silent this long.
HEARTBEAT_S: Final = 0.1
HEALTH_STALL_S: Final = 2.0
STORE_CHECK_S: Final = 0.5  # how often the store is asked whether it answers (/readyz)
# /api/status and /metrics ask the daemon's loop for a snapshot of this moment and wait this
# long for it; a saturated loop that has not built it by then gets the last beat's.
FRESH_WAIT_S: Final = 0.05
FRESH_PATHS: Final = frozenset({"/api/status", "/metrics"})
THREADS_EVERY: Final = 100  # heartbeats between two counts of the stored threads (10 s)
MAX_SINCE_DIGITS: Final = 12  # /api/history?since= is a Unix second
COOKIE: Final = b"exai_dashboard"
# The dashboard's files, served from the package (no CDN, no build step).
ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
PAGE_HEADERS: Final = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


async def heartbeat(daemon: Daemon, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Publish the monitor's snapshot every beat (its time proves, for /healthz, that the
    daemon's loop runs); feed the history its load gauges and provider totals, and now and
    then the stored threads' count; until cancelled. Started once the first one is out."""
    beats = 0
    while True:
        services = daemon.services
        history = services.history
        history.sample(
            inflight=daemon.limits.global_slots.borrowed_tokens,
            queued=daemon.limits.queued,
            providers=services.gateway.statistics(),
        )
        if beats % THREADS_EVERY == 0:
            history.threads = await _count_threads(services.store)
        daemon.publish()
        if beats == 0:
            task_status.started()
        beats += 1
        await trio.sleep(HEARTBEAT_S)


async def watch_store(daemon: Daemon) -> None:
    """Announce this replica to the store every STORE_CHECK_S (its lease, EXAI_REPLICA_LEASE_SECS)
    with its open provider circuits; keep the deployment's live replicas for /api/status and
    open here every circuit open on another replica; `daemon.store_problem` says why
    the store does not answer (it makes /readyz 503) until it answers again. Runs beside the
    heartbeat, which must never wait for the store."""
    lease_s = daemon.settings.replica_lease_secs
    while True:
        routes = daemon.services.gateway.routes
        open_here = {
            name: OpenCircuit(*opened) for name, route in routes.items() if (opened := route.circuit.open_for())
        }
        try:
            deployment = await daemon.services.store.announce(daemon.replica(), lease_s, open_here)
            daemon.replicas = deployment.replicas
            for name, circuit in deployment.circuits.items():
                if name in routes:
                    routes[name].circuit.open_elsewhere(circuit.seconds, circuit.reason, circuit.failures)
            problem = None
        except StoreUnavailable as exc:
            problem = str(exc)
        if problem != daemon.store_problem:
            if problem is None:
                logger.info("the conversation store answers again")
            else:
                logger.warning("not ready: {}", problem)
            daemon.store_problem = problem
        await trio.sleep(STORE_CHECK_S)


async def _count_threads(store: Store) -> int | None:
    """The store's thread count; None (shown as unknown) when it cannot count. A failing
    store is logged, not fatal: the heartbeat must go on."""
    try:
        return await store.count()
    except Exception as exc:
        logger.warning("the conversation store could not count its threads: {}", exc)
        return None


def monitor_app(daemon: Daemon) -> Any:
    """The ASGI app over a Daemon's state."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            if scope["path"] in FRESH_PATHS:
                await fresh_snapshot(daemon)
            status, content_type, body, extra = route(
                daemon, scope["method"], scope["path"], scope.get("query_string", b""), scope.get("headers", [])
            )
        except Exception:  # one request's bug ends that request only
            error_id = uuid.uuid4().hex[:12]
            logger.exception("monitor {} {} failed unexpectedly, error id {}", scope["method"], scope["path"], error_id)
            status, content_type, body, extra = 500, "text/plain", f"internal error, error id {error_id}\n".encode(), []
        headers: Headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})

    return app


async def fresh_snapshot(daemon: Daemon, wait: float = FRESH_WAIT_S) -> None:
    """On the monitor's loop: have the daemon's loop publish a snapshot of now, waiting at most
    `wait` for it (a call that just ended is not shown as running for a heartbeat). The
    daemon's loop builds it, as every snapshot; this thread still reads only the reference."""
    if daemon.loop is None:
        return
    built = trio.Event()
    monitor = trio.lowlevel.current_trio_token()

    def publish() -> None:  # on the daemon's loop; nothing may escape a run_sync_soon callback
        try:
            daemon.publish()
        except Exception:
            logger.exception("the monitor's snapshot could not be built; the last one is shown")
        with contextlib.suppress(trio.RunFinishedError):
            monitor.run_sync_soon(built.set)

    try:
        daemon.loop.run_sync_soon(publish)
    except trio.RunFinishedError:  # the daemon's loop is gone: its last snapshot stands
        return
    with trio.move_on_after(wait):
        await built.wait()


def route(daemon: Daemon, method: str, path: str, query: bytes = b"", headers: Headers | None = None) -> Response:
    """(status, content type, body, extra headers) for one monitor request."""
    if method not in ("GET", "HEAD"):
        return 405, "text/plain", b"method not allowed\n", [(b"allow", b"GET, HEAD")]
    snapshot = daemon.snapshot  # one read: every answer below is of the same moment
    if path == "/healthz":
        stalled = time.monotonic() - snapshot.beat
        if stalled > HEALTH_STALL_S:
            return 503, "text/plain", f"event loop unresponsive for {stalled:.1f} s".encode(), []
        return 200, "text/plain", b"ok", []
    if path == "/readyz":
        if snapshot.ready and snapshot.store_problem is not None:
            return 503, "application/json", _json({"ready": False, "reason": snapshot.store_problem}), []
        if snapshot.ready:
            return 200, "application/json", _json({"ready": True}), []
        why = "draining: shutting down" if snapshot.draining else "starting"
        return 503, "application/json", _json({"ready": False, "reason": why}), []
    secret = daemon.settings.auth_token
    if secret is not None:
        token = secret.get_secret_value().encode()
        refused = _refusal(token, path, query, headers or [])
        if refused is not None:
            return refused
    if path == "/metrics":
        refresh_gauges(snapshot.status)
        return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.REGISTRY), []
    if path == "/api/status":
        return 200, "application/json", _json(snapshot.status), []
    if path == "/api/history":
        since = _query(query, b"since")
        if since is not None and not (since.isdigit() and len(since) <= MAX_SINCE_DIGITS):
            return 400, "text/plain", b"since must be a whole number of seconds (a Unix time)\n", []
        history = daemon.services.history.snapshot(int(since) if since is not None else None)
        history["limits"] = snapshot.limits
        return 200, "application/json", _json(history), []
    if path in ASSETS:
        name, content_type = ASSETS[path]
        return 200, content_type, _asset(name), list(PAGE_HEADERS)
    return 404, "text/plain", b"not found\n", []


def _refusal(token: bytes, path: str, query: bytes, headers: Headers) -> Response | None:
    """None when the request carries the token (header or cookie); else the answer: 401, or
    for `/?token=<right token>` a redirect to `/` that sets the dashboard's cookie."""
    cookie = hmac.new(token, b"exai dashboard cookie", hashlib.sha256).hexdigest().encode()
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, bearer = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(bearer.strip(), token):
                return None
        elif name.lower() == b"cookie":
            for pair in value.split(b";"):
                key, _, sent = pair.strip().partition(b"=")
                if key == COOKIE and hmac.compare_digest(sent, cookie):
                    return None
    given = _query(query, b"token")
    if path == "/" and given is not None and hmac.compare_digest(given, token):
        set_cookie = COOKIE + b"=" + cookie + b"; Path=/; HttpOnly; SameSite=Strict"
        extra = [(b"location", b"/"), (b"set-cookie", set_cookie), (b"referrer-policy", b"no-referrer")]
        return 303, "text/plain", b"authorized; continue to /\n", extra
    why = b"wrong token" if given is not None else b"missing or wrong Authorization: Bearer token"
    body = why + b" (EXAI_AUTH_TOKEN is set; a browser may open /?token=TOKEN once)\n"
    return 401, "text/plain", body, [(b"www-authenticate", b'Bearer realm="exai"')]


def _query(query: bytes, key: bytes) -> bytes | None:
    """The first value of `key` in a query string, percent-decoded to bytes; never raises."""
    for pair in query.split(b"&"):
        name, sep, value = pair.partition(b"=")
        if sep and unquote_to_bytes(name) == key:
            return unquote_to_bytes(value.replace(b"+", b" "))
    return None


@cache
def _asset(name: str) -> bytes:
    return files("exai.dashboard").joinpath(name).read_bytes()


def refresh_gauges(status: dict[str, Any]) -> None:
    """Gauges that mirror limiter state are set from the snapshot at scrape time, so they cannot drift."""
    for name, stats in status.get("limiters", {}).items():
        if not name.startswith("session:"):
            metrics.limiter_borrowed.labels(name).set(stats["borrowed"])


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def serve_monitor(
    daemon: Daemon, host: str, port: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the monitor until cancelled; task_status gets its base URL (real port).

    The monitor runs on its own thread and event loop, so it answers at once even while the
    daemon's loop is saturated; it only reads snapshots. On cancellation it is stopped and
    its thread joined (within the hypercorn graceful timeout) before this returns.
    """
    config = Config()
    shown = f"[{host}]" if ":" in host else host
    config.bind = [f"{shown}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    handoff: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.Event] | BaseException] = queue.Queue()

    def run_in_thread() -> None:
        async def main() -> None:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                serve = partial(hypercorn_serve, monitor_app(daemon), config, mode="asgi", shutdown_trigger=stop.wait)
                binds = await nursery.start(serve)
                handoff.put((binds[0].rstrip("/"), trio.lowlevel.current_trio_token(), stop))

        try:
            trio.run(main)
        except BaseException as exc:  # reaches the daemon's loop through the handoff
            handoff.put(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.to_thread.run_sync, run_in_thread))
        started = await trio.to_thread.run_sync(handoff.get)
        if isinstance(started, BaseException):
            raise started
        url, token, stop = started
        task_status.started(url)
        try:
            await trio.sleep_forever()
        finally:
            with contextlib.suppress(trio.RunFinishedError):  # its loop may have died already
                token.run_sync_soon(stop.set)
