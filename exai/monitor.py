"""The monitor: health, readiness, Prometheus metrics, JSON status and a live dashboard.

It runs on the daemon's event loop; every answer is a snapshot of in-memory state, so it
stays fast while the daemon is saturated.
"""

from __future__ import annotations

import contextlib
import json
import queue
import time
from functools import partial
from typing import Any, Final

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from exai import metrics
from exai.asgi import lifespan

Headers = list[tuple[bytes, bytes]]

# The daemon's loop beats every HEARTBEAT_S; /healthz fails once it has been silent this long.
HEARTBEAT_S: Final = 0.25
HEALTH_STALL_S: Final = 2.0


async def heartbeat(daemon: Any) -> None:
    """Prove, for /healthz, that the daemon's event loop runs; until cancelled."""
    while True:
        daemon.heartbeat = time.monotonic()
        await trio.sleep(HEARTBEAT_S)


def monitor_app(daemon: Any) -> Any:
    """The ASGI app over a Daemon's state."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, content_type, body = route(daemon, scope["method"], scope["path"])
        headers: Headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def route(daemon: Any, method: str, path: str) -> tuple[int, str, bytes]:
    if method not in ("GET", "HEAD"):
        return 405, "text/plain", b"method not allowed\n"
    if path == "/healthz":
        stalled = time.monotonic() - daemon.heartbeat
        if stalled > HEALTH_STALL_S:
            return 503, "text/plain", f"event loop unresponsive for {stalled:.1f} s".encode()
        return 200, "text/plain", b"ok"
    if path == "/readyz":
        if daemon.ready:
            return 200, "application/json", _json({"ready": True})
        why = "draining: shutting down" if daemon.draining else "starting"
        return 503, "application/json", _json({"ready": False, "reason": why})
    if path == "/metrics":
        refresh_gauges(daemon)
        return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.REGISTRY)
    if path == "/api/status":
        return 200, "application/json", _json(daemon.status())
    if path in ("/", "/index.html"):
        return 200, "text/html; charset=utf-8", DASHBOARD.encode()
    return 404, "text/plain", b"not found\n"


def refresh_gauges(daemon: Any) -> None:
    """Gauges that mirror limiter state are read at scrape time, so they cannot drift."""
    for name, stats in daemon.limits.statistics().items():
        if not name.startswith("session:"):
            metrics.limiter_borrowed.labels(name).set(stats["borrowed"])


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def serve_monitor(
    daemon: Any, host: str, port: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
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


DASHBOARD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>exai</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
.bad{color:#b00}.ok{color:#070}#err{color:#b00}
</style></head><body>
<h1>exai <span id="summary"></span></h1><div id="err"></div>
<h2>Requests</h2><table id="requests"></table>
<h2>Limiters</h2><table id="limiters"></table>
<h2>Providers</h2><table id="providers"></table>
<script>
// Cells are set as text, never as HTML: request ids come from clients.
function row(tag, cells){
  const tr=document.createElement('tr');
  for(const c of cells){const td=document.createElement(tag);td.textContent=String(c);tr.appendChild(td);}
  return tr;
}
function table(id, head, rows){
  document.getElementById(id).replaceChildren(row('th',head),...rows.map(r=>row('td',r)));
}
async function tick(){
  try{
    const s=await (await fetch('/api/status',{cache:'no-store'})).json();
    document.getElementById('err').textContent='';
    document.getElementById('summary').textContent=
      `- ${s.connections} connections, ${s.inflight} in flight, ${s.queued} queued, up ${Math.round(s.uptime_s)} s`+
      (s.demo?' (DEMO: simulated model)':'');
    table('requests',['id','tool','age s','deadline left s'],s.requests.map(r=>[r.id,r.tool,r.age_s,r.deadline_s]));
    table('limiters',['limiter','borrowed','total','waiting'],
      Object.entries(s.limiters).map(([k,v])=>[k,v.borrowed,v.total,v.waiting]));
    table('providers',['provider','circuit','in flight','calls','errors'],
      Object.entries(s.providers).map(([k,v])=>[k,v.circuit,v.inflight,v.calls_total,v.errors_total]));
  }catch(e){document.getElementById('err').textContent='daemon unreachable: '+e;}
}
tick();setInterval(tick,1000);
</script></body></html>
"""
