"""The daemon: its shared state, start-up, the transports' accept loops, shutdown."""

from __future__ import annotations

import gc
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from loguru import logger

from exai import __version__
from exai.config import Settings
from exai.lifecycle import Alive, Calls, CancelReason, Services
from exai.limits import ConnectionSlots, Limits
from exai.session import CLOSE_TIMEOUT_S, Session

if TYPE_CHECKING:
    from exai.store import Replica
    from exai.transports.http.sse import Stream


@dataclass(frozen=True)
class Snapshot:
    """The daemon as the monitor's thread sees it: built on the event loop, never changed after.
    The monitor reads the one reference the daemon swaps; it touches no live object."""

    beat: float  # time.monotonic() when it was built: /healthz's proof that the loop runs
    ready: bool
    draining: bool
    status: dict[str, Any]  # the /api/status document, made for this snapshot alone
    limits: dict[str, int]  # the ceilings /api/history draws its gauges against
    store_problem: str | None = None  # why the store does not answer: /readyz is 503 meanwhile


@dataclass
class Bound:
    """Where a started daemon listens."""

    url: str
    monitor_url: str | None
    daemon: Daemon
    http_url: str | None = None


class Daemon:
    """The daemon's shared state: services, connections, readiness."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self.calls = Calls()
        self.connections: Alive[str, Session] = Alive()
        # Modern Streamable HTTP requests being answered: no session, so no connection.
        self.requests: Alive[int, Stream] = Alive()
        self.connection_slots = ConnectionSlots(settings.max_connections)
        self.connection_nursery: trio.Nursery  # set by _serve_clients: where connections run
        self.started_wall = time.time()
        self.snapshot = Snapshot(time.monotonic(), False, False, {}, {})
        self.loop: trio.lowlevel.TrioToken | None = None  # set by serve(): where publish() runs
        self.ready = False
        self.store_problem: str | None = None  # why the store does not answer (watch_store)
        self.replica_id = uuid.uuid4().hex[:12]
        self.replicas: list[Replica] = []  # the deployment's live replicas (watch_store)
        self.draining = False
        self.stopping = trio.Event()
        self.stopped = trio.Event()
        self.services: Services  # set by serve() once the providers are open

    def request_shutdown(self) -> None:
        self.stopping.set()

    def reload(self) -> None:
        """SIGHUP: read EXAI_DISABLED_TOOLS again (environment, then `.env`); when the tool
        set changes, every open session and subscription hears of it. A bad value changes
        nothing and is logged."""
        from exai.config import ConfigError, reread_disabled_tools
        from exai.tools import TOOL_NAMES, all_tools

        try:
            fresh = reread_disabled_tools(self.settings, TOOL_NAMES)
        except ConfigError as exc:
            logger.error("reload: configuration kept as it was: {}", exc)
            return
        tools = all_tools(fresh)
        if list(tools) == list(self.services.tools):
            logger.info("reload: the tool set is unchanged ({} tools)", len(tools))
            return
        self.settings.disabled_tools = fresh.disabled_tools
        self.services.tools = tools
        told = self.services.listeners.tools_changed()
        logger.info("reload: now {} tools ({}); {} listener(s) told", len(tools), ", ".join(tools), told)

    def publish(self) -> None:
        """Build the monitor's next snapshot and swap it in; on the daemon's loop only."""
        status = self.status() | {"threads": self.services.history.threads}
        limits = {"inflight": int(self.limits.global_slots.total_tokens), "queued": self.limits.max_queued}
        self.snapshot = Snapshot(time.monotonic(), self.ready, self.draining, status, limits, self.store_problem)

    def replica(self) -> Replica:
        """This daemon as the deployment's replica registry lists it, as of now."""
        return {
            "id": self.replica_id,
            "started": self.started_wall,
            "inflight": self.limits.global_slots.borrowed_tokens,
            "tasks": 0,  # no tasks yet in this daemon
        }

    def status(self) -> dict[str, Any]:
        """What /api/status and the `status` tool show, as of now; on the daemon's loop only."""
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
            "tasks": self.services.tasks.statistics(),
            "demo": bool(getattr(self.services.gateway, "demo", False)),
            "replica": {"id": self.replica_id, "started": self.started_wall},
            # this one as of now, the others as of their last announcement; the oldest first
            "replicas": sorted(
                [self.replica(), *(r for r in self.replicas if r["id"] != self.replica_id)],
                key=lambda r: (r["started"], r["id"]),
            ),
        }


# -- serving ---------------------------------------------------------------------------


async def serve(
    settings: Settings,
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


async def _serve(daemon: Daemon, demo: bool, task_status: trio.TaskStatus[Bound]) -> None:
    from exai.monitor import heartbeat, serve_monitor, watch_store
    from exai.providers.gateway import ModelGateway
    from exai.providers.simulator import serve_simulator
    from exai.stalls import watch_stalls
    from exai.store import open_store
    from exai.tasks import open_task_runner
    from exai.tools import all_tools

    settings = daemon.settings
    no_keys = settings.kimi_api_key is None and settings.glm_api_key is None
    async with trio.open_nursery() as background:
        background.start_soon(watch_stalls)
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
        async with open_store(settings) as store:
            # The store chooses the provider slots: shared by replicas on Redis, none on SQLite.
            gateway = ModelGateway.from_settings(
                settings, daemon.limits.providers, simulator_url=simulator_url, slots=store
            )
            async with gateway:
                daemon.services = Services(
                    settings=settings,
                    limits=daemon.limits,
                    gateway=gateway,
                    tools=all_tools(settings),
                    store=store,
                    calls=daemon.calls,
                    status=daemon.status,
                    draining=lambda: daemon.draining,
                )
                async with open_task_runner(daemon.services) as tasks:
                    daemon.services.tasks = tasks
                    daemon.loop = trio.lowlevel.current_trio_token()
                    await background.start(heartbeat, daemon)
                    background.start_soon(watch_store, daemon)
                    monitor_url = None
                    if settings.monitor_port is not None and settings.monitor_port >= 0:
                        monitor_url = await background.start(serve_monitor, daemon, settings.host, settings.monitor_port)
                    await _serve_clients(daemon, monitor_url, task_status)
        background.cancel_scope.cancel()


async def _serve_clients(daemon: Daemon, monitor_url: str | None, task_status: trio.TaskStatus[Bound]) -> None:
    """Accept clients until shutdown is requested; then stop accepting, drain, close."""
    from exai.transports.http import serve_http
    from exai.transports.ws import serve_websockets

    async with trio.open_nursery() as connections:
        daemon.connection_nursery = connections
        async with trio.open_nursery() as accepting:
            url = await accepting.start(serve_websockets, daemon)
            # HTTP keeps answering while the daemon drains (new sessions get 503), so calls
            # finishing within the grace period still reach their clients; it stops last.
            http_url = await connections.start(serve_http, daemon)
            daemon.ready = True
            daemon.publish()  # readiness reaches the monitor at once, not a beat later
            task_status.started(Bound(url, monitor_url, daemon, http_url))
            await daemon.stopping.wait()
            daemon.ready = False
            daemon.draining = True
            daemon.publish()
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
    daemon.services.listeners.end_subscriptions()
    for session in list(daemon.connections.active.values()):
        session.end_transport()
    with trio.move_on_after(CLOSE_TIMEOUT_S):
        await daemon.connections.wait_empty()
        await daemon.requests.wait_empty()


def run_serve(
    *,
    host: str | None,
    port: int | None,
    monitor_port: int | None,
    demo: bool,
    http_port: int | None = None,
) -> int:
    """`exai serve`: 0 after a clean shutdown, 2 on invalid configuration."""
    from exai.config import ConfigError, load_settings
    from exai.logs import setup_logging
    from exai.providers.catalog import ModelsFileError, catalog
    from exai.tools import TOOL_NAMES

    given = {"host": host, "port": port, "monitor_port": monitor_port, "http_port": http_port}
    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        settings = load_settings(known_tools=TOOL_NAMES, **overrides)
        catalog(demo, settings.models_file)  # the models file is read here, once, before anything starts
    except (ConfigError, ModelsFileError) as exc:
        print(f"exai: invalid configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            bound: Bound = await nursery.start(partial(serve, settings, demo=demo))
            # What start-up built (modules, models, settings: about 60,000 objects) lives as long
            # as the process. Frozen out of the collector's sight, a full collection walks only
            # what calls left behind, instead of stopping the loop for ~40 ms every few seconds.
            gc.collect()
            gc.freeze()
            print(f"exai listening on {bound.url.rstrip('/')}", flush=True)
            if bound.monitor_url and settings.monitor_port == 0:
                print(f"exai monitor on {bound.monitor_url}", flush=True)
            if bound.http_url:
                print(f"exai http on {bound.http_url}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        logger.info("received SIGHUP, reloading EXAI_DISABLED_TOOLS")
                        bound.daemon.reload()
                        continue
                    logger.info("received {}, shutting down", signal.Signals(signum).name)
                    bound.daemon.request_shutdown()
                    break

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        from exai.store import StoreUnavailable

        store_error = _find(exc, StoreUnavailable)
        if store_error is not None:
            print(f"exai: {store_error}", file=sys.stderr)
            return 1
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
