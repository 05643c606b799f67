"""exai benchmark: prints one JSON object of numbers, or writes docs/performance.md (--report).

Four processes on loopback: the provider simulator (`scripts/h11sim.py`, raw h11 on trio,
canned answers; `--simulator exai` uses `exai mock-provider` instead), the daemon
(`exai serve`, WebSocket and Streamable HTTP at once), the floor (`scripts/floor_relay.py`:
the same libraries relaying with no exai logic; `--no-floor` leaves it out), and this driver
(the load generator). A second h11sim runs inside this driver, behind the GLM provider, so
that disconnect-to-abort is timed on one clock. Every figure comes with each process's CPU
share over its run (from /proc/<pid>/stat), and server CPU milliseconds per call, which
stays meaningful when the machine is shared.

`--transport ws|http|modern|both` says how the loads reach the daemon; with `both` (the default
of --report) each load runs over WebSocket, then over Streamable HTTP as a legacy session
(2025-11-25), then as modern stateless requests (2026-07-28), then through the floor where it
applies, and one call at a time interleaves them call by call. Results keep WebSocket's plain
load names; the others get `_http`, `_modern` and `_floor` (`sequential_http`, ...).

Daemon calls ask for progress, so the daemon streams from the provider (its hot path); the
direct baseline streams too, over the daemon's own transport, so the difference is the daemon.

    python scripts/bench.py                 # one run of every load over WebSocket, about a minute
    python scripts/bench.py --quick         # a smoke run, a few seconds
    python scripts/bench.py --quick --only sequential --transport both   # HTTP and the floor beside WebSocket
    python scripts/bench.py --report        # 5 runs, both transports + a profile -> docs/performance.md and plots
    python scripts/bench.py --only sequential throughput --profile daemon.txt
    python scripts/bench.py --workflow      # the workflow tools: the seed replayed, consensus, tools/list
    python scripts/bench.py --monitor       # only the monitor: answer times, a dashboard's CPU
"""

from __future__ import annotations

import argparse
import codecs
import inspect
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import h11
import httpx
import trio
from httpx_sse import aconnect_sse
from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # the decoder aiter_sse uses, fed by h11

from exai.client import ExaiClient, RpcError, ToolResult
from exai.client import connect as connect_any_era
from exai.config import Settings
from exai.providers.simulator import Simulator, serve_simulator
from exai.providers.transport import TrioH11Transport
from exai.store import read_thread

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from h11sim import H11Sim
from harness import read_until, rss_kib

ROOT = Path(__file__).resolve().parent.parent
# The WebSocket rows measure what they always did, a legacy session (the floor relay speaks
# only that); modern Streamable HTTP has rows of its own ("modern").
connect = partial(connect_any_era, era="legacy")
EXAI = [sys.executable, "-c", "from exai.cli import main; main()"]
H11SIM = [sys.executable, str(ROOT / "scripts" / "h11sim.py")]
FLOOR = [sys.executable, str(ROOT / "scripts" / "floor_relay.py")]
MESSAGES = [{"role": "user", "content": "benchmark"}]
CONCURRENCY = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> float:
    return round(value * 1000, 3)


def compared(direct: list[float], through: list[float], added: str = "added") -> dict[str, float]:
    """p50/p99 of both paths and of their difference (the daemon's own share)."""
    return {
        "direct_p50_ms": ms(pct(direct, 0.5)),
        "direct_p99_ms": ms(pct(direct, 0.99)),
        "daemon_p50_ms": ms(pct(through, 0.5)),
        "daemon_p99_ms": ms(pct(through, 0.99)),
        f"{added}_p50_ms": ms(pct(through, 0.5) - pct(direct, 0.5)),
        f"{added}_p99_ms": ms(pct(through, 0.99) - pct(direct, 0.99)),
    }


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime (fields 14 and 15)


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def run_seconds(pid: int) -> float:
    """CPU seconds of a process to the nanosecond (/proc/<pid>/task/*/schedstat), for short
    windows where /proc/<pid>/stat's 10 ms ticks would be mostly rounding."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


async def _ignore_progress(params: dict[str, Any]) -> None:
    pass


class _Socket:
    """One kept-alive HTTP/1.1 connection of the benchmark's HTTP client."""

    __slots__ = ("parser", "stream")

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.parser = h11.Connection(h11.CLIENT)

    async def next_event(self) -> Any:
        while True:
            event = self.parser.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.parser.receive_data(await self.stream.receive_some(65536))

    async def next_data(self) -> bytes | None:
        """The next piece of the answer's body; None at its end."""
        event = await self.next_event()
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return None
        raise RuntimeError(f"the daemon's answer broke off: {event!r}")


class HttpMcpClient:
    """The benchmark's lean load generator for MCP Streamable HTTP (CONTRACT §3b): POST /mcp,
    one session. Not a client library: the one client is `exai.client` (`connect("http://...")`,
    httpx + httpx-sse), which the tests, the CLI, the bridge and the soak use; this one exists
    only so the load generator does not measure itself, for this reason:

    h11 on kept-alive trio sockets (HTTP/1.1 carries one POST at a time, so a socket per call
    in flight, pooled), SSE events cut by httpx-sse's decoder. httpx.AsyncClient + aconnect_sse
    cost this process about 1.6 ms of CPU per call, three times the WebSocket client's 0.5 ms,
    and would have measured the client rather than the transport; this one costs about what
    the WebSocket client does. Any failure or cancellation closes the socket it happened on.
    """

    def __init__(self, url: str, modern: bool = False):
        parsed = httpx.URL(url)
        # Modern (MCP 2026-07-28): no session; each request states its era in _meta and mirrors
        # its method (and tool) in headers, and closing its stream is its cancellation.
        self.modern = modern
        self.origin = (parsed.host, parsed.port or 80)
        self.target = parsed.raw_path
        self.base_headers = [
            (b"host", f"{parsed.host}:{parsed.port}".encode()),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-type", b"application/json"),
            (b"mcp-protocol-version", MODERN_VERSION.encode() if modern else b"2025-11-25"),
        ]
        self.session = b""
        self._ids = 0
        self._idle: list[_Socket] = []
        self._open: set[_Socket] = set()

    async def _socket(self) -> _Socket:
        if self._idle:
            return self._idle.pop()
        sock = _Socket(await trio.open_tcp_stream(*self.origin))
        self._open.add(sock)
        return sock

    def _drop(self, sock: _Socket) -> None:
        self._open.discard(sock)
        sock.stream.socket.close()

    async def _exchange(self, method: str, body: bytes, on_message: Callable[[dict[str, Any]], Awaitable[None]],
                        routing: list[tuple[bytes, bytes]] | None = None) -> None:
        """Send one request and read its whole answer: `on_message` gets each JSON-RPC message
        in it (an SSE event's, or the JSON body). RuntimeError for a status of 300 or more."""
        sock = await self._socket()
        parser = sock.parser
        headers = [*self.base_headers, *(routing or []), (b"content-length", str(len(body)).encode())]
        if self.session:
            headers.append((b"mcp-session-id", self.session))
        try:
            out = parser.send(h11.Request(method=method, target=self.target, headers=headers))
            if body:
                out += parser.send(h11.Data(data=body))
            await sock.stream.send_all(out + parser.send(h11.EndOfMessage()))
            head = await sock.next_event()
            if not isinstance(head, h11.Response):
                raise RuntimeError(f"unexpected answer to {method}: {head!r}")
            kind = b""
            for name, value in head.headers:
                if name == b"mcp-session-id":
                    self.session = value
                elif name == b"content-type":
                    kind = value
            if kind.startswith(b"text/event-stream"):
                lines, events, text = SSELineDecoder(), SSEDecoder(), codecs.getincrementaldecoder("utf-8")()
                while (data := await sock.next_data()) is not None:
                    for line in lines.decode(text.decode(data)):
                        sse = events.decode(line)
                        if sse is not None and sse.data:
                            await on_message(json.loads(sse.data))
            else:
                chunks: list[bytes] = []
                while (data := await sock.next_data()) is not None:
                    chunks.append(data)
                if chunks and head.status_code < 300:
                    await on_message(json.loads(b"".join(chunks)))
        except BaseException:
            self._drop(sock)
            raise
        if parser.our_state is h11.DONE and parser.their_state is h11.DONE:
            parser.start_next_cycle()
            self._idle.append(sock)
        else:
            self._drop(sock)
        if head.status_code >= 300:
            raise RuntimeError(f"{method} {self.target.decode()} answered {head.status_code}")

    async def request(self, method: str, params: dict[str, Any], on_progress: Any = None) -> dict[str, Any]:
        self._ids += 1
        request_id = self._ids
        answer: dict[str, Any] = {}

        async def on_message(message: dict[str, Any]) -> None:
            if message.get("id") == request_id and "method" not in message:
                answer.update(message)
            elif message.get("method") == "notifications/progress" and on_progress is not None:
                outcome = on_progress(message["params"])
                if inspect.isawaitable(outcome):
                    await outcome

        routing = None
        if self.modern:
            params = {**params, "_meta": {**params.get("_meta", {}), **MODERN_META}}
            routing = [(b"mcp-method", method.encode())]
            if method == "tools/call":
                routing.append((b"mcp-name", params["name"].encode()))
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
        await self._exchange("POST", body, on_message, routing)
        if "error" in answer:
            raise RpcError(answer["error"]["code"], answer["error"]["message"], answer["error"].get("data"))
        if "result" not in answer:
            raise RuntimeError(f"{method}: the answer ended without the response")
        return answer["result"]

    async def open(self) -> None:
        if self.modern:  # no handshake: a modern client learns the server once, then calls
            await self.request("server/discover", {})
            return
        await self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                          "clientInfo": {"name": "exai-bench", "version": "0"}})
        await self._exchange("POST", b'{"jsonrpc":"2.0","method":"notifications/initialized"}', _ignore_message)

    async def call_tool(self, name: str, arguments: dict[str, Any], *, timeout: float | None = None,
                        on_progress: Any = None) -> Any:
        meta: dict[str, Any] = {}
        if on_progress is not None:
            meta["progressToken"] = self._ids + 1
        if timeout is not None:
            meta["exai/timeout"] = timeout
        result = await self.request("tools/call", {"name": name, "arguments": arguments, "_meta": meta}, on_progress)
        return ToolResult.from_result(result)

    async def end(self) -> None:
        """DELETE /mcp: the daemon ends the session and cancels its calls (modern: no session)."""
        if not self.modern:
            await self._exchange("DELETE", b"", _ignore_message)

    def close(self) -> None:
        for sock in list(self._open):
            self._drop(sock)
        self._idle.clear()


async def _ignore_message(message: dict[str, Any]) -> None:
    pass


MODERN_VERSION = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "exai-bench", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
HTTP_WAYS = ("http", "modern")  # Streamable HTTP, legacy sessions and modern requests


class Bench:
    """The loads. `via` names the way a load reaches a server: "ws" (the daemon's WebSocket),
    "http" (its Streamable HTTP, a legacy session), "modern" (the same endpoint, MCP 2026-07-28
    requests) or "floor" (scripts/floor_relay.py, WebSocket)."""

    def __init__(self, sim_url: str, daemon: dict[str, Any], local_sim: H11Sim, floor: dict[str, Any] | None = None):
        self.sim_url = sim_url
        self.daemon_url = daemon["url"]
        self.monitor_url = daemon["monitor"]
        self.daemon_pid = daemon["pid"]
        self.urls = {"ws": daemon["url"], "http": daemon["http"], "modern": daemon["http"]}
        self.server_pids = {"ws": daemon["pid"], "http": daemon["pid"], "modern": daemon["pid"]}
        if floor is not None:
            self.urls["floor"] = floor["url"]
            self.server_pids["floor"] = floor["pid"]
        self.local_sim = local_sim
        self.calls = 0  # calls that completed through a server, for CPU per call
        self.sim_pid = 0
        self.fresh_daemon: Callable[[], Any] = lambda: None
        # The direct baseline uses the daemon's own transport, so the difference is the daemon.
        self.http = httpx.AsyncClient(
            transport=TrioH11Transport(max_keepalive=1024),
            base_url=sim_url,
            headers={"Authorization": "Bearer bench"},
            timeout=30,
        )

    @asynccontextmanager
    async def client(self, via: str = "ws") -> AsyncIterator[Any]:
        """One client of a server: a WebSocket connection, a Streamable HTTP session (ended
        with DELETE on the way out), or a modern Streamable HTTP client."""
        if via not in HTTP_WAYS:
            async with connect(self.urls[via]) as client:
                yield client
            return
        mcp = HttpMcpClient(self.urls[via], modern=via == "modern")
        try:
            await mcp.open()
            yield mcp
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await mcp.end()
                except (OSError, RuntimeError, trio.BrokenResourceError):
                    pass  # already ended (disconnect_to_abort), or the daemon is gone
            mcp.close()

    async def sim_config(self, **behaviour: Any) -> None:
        admin = self.sim_url.rsplit("/v1", 1)[0]
        defaults = {"latency_s": 0.0, "chunks": 5, "chunk_delay_s": 0.0, "hang": False}
        response = await self.http.post(f"{admin}/_sim/config", json=defaults | behaviour)
        response.raise_for_status()

    async def direct_call(self) -> float:
        started = trio.current_time()
        body = {"model": "kimi-k2-0905-preview", "messages": MESSAGES, "stream": True}
        async with self.http.stream("POST", "/chat/completions", json=body) as response:
            response.raise_for_status()
            await response.aread()
        return trio.current_time() - started

    async def daemon_call(self, client: Any) -> float:
        started = trio.current_time()
        result = await client.call_tool("chat", {"prompt": "benchmark"}, on_progress=_ignore_progress)
        if result.is_error:
            raise RuntimeError(result.text)
        self.calls += 1
        return trio.current_time() - started

    async def simulator_cost(self, rates: list[float], seconds: float) -> dict[str, Any]:
        """The simulator alone, driven directly at each rate (open loop, streaming): its CPU share."""
        await self.sim_config()
        out = {}
        for rate in rates:
            n = int(rate * seconds)
            before, started = cpu_seconds(self.sim_pid), time.monotonic()
            async with trio.open_nursery() as nursery:
                start = trio.current_time()
                for i in range(n):
                    await trio.sleep_until(start + i / rate)
                    nursery.start_soon(self.direct_call)
            share = (cpu_seconds(self.sim_pid) - before) / (time.monotonic() - started)
            out[f"simulator_cpu_share_at_{rate:g}_per_s"] = round(share, 3)
        return out

    async def sequential(self, n: int, vias: list[str]) -> dict[str, dict[str, Any]]:
        """One call at a time, each round a direct call then one call by each way, in a rotating
        order: latency minus direct latency per way, from the same moments of the machine.

        {"sequential": ws, "sequential_http": ..., "sequential_floor": ...}, each with the
        server's and this driver's CPU per call (summed over each call's own window) and, for
        HTTP beside WebSocket, its p50/p99 over WebSocket's."""
        await self.sim_config()
        warmup = 20
        direct: list[float] = []
        through: dict[str, list[float]] = {via: [] for via in vias}
        server_cpu = dict.fromkeys(vias, 0.0)
        driver_cpu = dict.fromkeys(vias, 0.0)
        async with AsyncExitStack() as stack:
            clients = {via: await stack.enter_async_context(self.client(via)) for via in vias}
            for i in range(warmup + n):
                took = await self.direct_call()
                if i >= warmup:
                    direct.append(took)
                for via in vias[i % len(vias):] + vias[: i % len(vias)]:
                    pid = self.server_pids[via]
                    cpu, mine = run_seconds(pid), time.process_time()
                    took = await self.daemon_call(clients[via])
                    if i >= warmup:
                        through[via].append(took)
                        server_cpu[via] += run_seconds(pid) - cpu
                        driver_cpu[via] += time.process_time() - mine
        out = {}
        for via in vias:
            entry = {"calls": n, **compared(direct, through[via]),
                     "daemon_cpu_ms_per_call": round(server_cpu[via] * 1000 / n, 3),
                     "driver_cpu_ms_per_call": round(driver_cpu[via] * 1000 / n, 3)}
            if via == "http" and "ws" in vias:
                entry["over_ws_p50_ms"] = ms(pct(through["http"], 0.5) - pct(through["ws"], 0.5))
                entry["over_ws_p99_ms"] = ms(pct(through["http"], 0.99) - pct(through["ws"], 0.99))
            if via == "modern" and "http" in vias:
                entry["over_http_p50_ms"] = ms(pct(through["modern"], 0.5) - pct(through["http"], 0.5))
                entry["over_http_p99_ms"] = ms(pct(through["modern"], 0.99) - pct(through["http"], 0.99))
            out[load_key("sequential", via)] = entry
        return out

    async def open_loop(self, rate: float, seconds: float, latency: float, connections: int, via: str = "ws") -> dict[str, Any]:
        """Calls start on schedule whatever the server is doing; the same schedule direct."""
        await self.sim_config(latency_s=latency)
        n = int(rate * seconds)

        async def schedule(call: Callable[[int], Awaitable[float]]) -> list[float]:
            out: list[float] = []
            start = trio.current_time()

            async def one(i: int) -> None:
                out.append(await call(i))

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    await trio.sleep_until(start + i / rate)
                    nursery.start_soon(one, i)
            return out

        direct = await schedule(lambda i: self.direct_call())
        async with self.clients(connections, via) as clients:
            through = await schedule(lambda i: self.daemon_call(clients[i % connections]))
        return {"rate_per_s": rate, "calls": n, "provider_latency_ms": ms(latency), **compared(direct, through)}

    @asynccontextmanager
    async def clients(self, connections: int, via: str = "ws") -> AsyncIterator[list[Any]]:
        async with trio.open_nursery() as opener:
            clients: list[Any] = []
            ready = trio.Event()
            done = trio.Event()

            async def hold() -> None:
                async with self.client(via) as client:
                    clients.append(client)
                    if len(clients) == connections:
                        ready.set()
                    await done.wait()

            for _ in range(connections):
                opener.start_soon(hold)
            await ready.wait()
            try:
                yield clients
            finally:
                done.set()

    async def closed_loop(self, inflight: int, seconds: float, connections: int, warmup: float = 0.0,
                          via: str = "ws") -> tuple[list[float], int, int]:
        """`inflight` calls at all times for `seconds` after `warmup`: (latencies of the calls that
        started in that window, calls that finished in it, errors)."""
        latencies: list[float] = []
        finished = errors = 0
        async with self.clients(connections, via) as clients:
            start = trio.current_time()
            measure_from, deadline = start + warmup, start + warmup + seconds

            async def worker(client: Any) -> None:
                nonlocal errors, finished
                while trio.current_time() < deadline:
                    began = trio.current_time()
                    try:
                        took = await self.daemon_call(client)
                    except Exception:
                        errors += 1
                        continue
                    if began >= measure_from:
                        latencies.append(took)
                    finished += measure_from <= trio.current_time() <= deadline

            async with trio.open_nursery() as nursery:
                for i in range(inflight):
                    nursery.start_soon(worker, clients[i % connections])
        return latencies, finished, errors

    async def throughput(self, inflight: int, seconds: float, connections: int, via: str = "ws") -> dict[str, Any]:
        """Closed loop against a zero-latency simulator; the daemon's /healthz and /api/status
        polled meanwhile (not for the floor, which has no monitor)."""
        await self.sim_config()
        polled: dict[str, list[float]] = {"healthz": [], "api_status": []} if via != "floor" else {}

        async def poll_monitor(path: str, into: list[float]) -> None:
            async with httpx.AsyncClient(transport=TrioH11Transport(), timeout=10) as http:
                await trio.sleep(0.5)
                while trio.current_time() < stop_at:
                    started = trio.current_time()
                    (await http.get(f"{self.monitor_url}{path}")).raise_for_status()
                    into.append(trio.current_time() - started)
                    await trio.sleep(0.05)

        stop_at = trio.current_time() + seconds
        async with trio.open_nursery() as nursery:
            for name, into in polled.items():
                nursery.start_soon(poll_monitor, "/" + name.replace("api_", "api/"), into)
            _, finished, errors = await self.closed_loop(inflight, seconds, connections, via=via)
        out = {"inflight": inflight, "seconds": seconds, "calls": finished, "errors": errors,
               "calls_per_s": round(finished / seconds, 1)}
        for name, values in polled.items():
            if values:
                out[f"{name}_p50_ms"] = ms(pct(values, 0.5))
                out[f"{name}_max_ms"] = ms(max(values))
        return out

    async def concurrency(self, levels: list[int], seconds: float, via: str = "ws") -> dict[str, Any]:
        """Latency p50/p99 and calls/s, closed loop, zero-latency provider, per concurrency level."""
        await self.sim_config()
        points = []
        for level in levels:
            latencies, finished, errors = await self.closed_loop(level, seconds, min(level, 16), warmup=0.3, via=via)
            points.append({"concurrency": level, "p50_ms": ms(pct(latencies, 0.5)), "p99_ms": ms(pct(latencies, 0.99)),
                           "calls_per_s": round(finished / seconds, 1), "errors": errors})
        return {"provider_latency_ms": 0, "seconds_per_level": seconds, "points": points}

    async def first_progress(self, n: int, via: str = "ws") -> dict[str, Any]:
        """Streaming: first progress notification through the daemon vs first SSE chunk direct."""
        await self.sim_config(chunks=3, chunk_delay_s=0.01)
        direct, through = [], []
        body = {"model": "kimi-k2-0905-preview", "messages": MESSAGES, "stream": True}
        async with self.client(via) as client:
            for i in range(n + 10):
                started = trio.current_time()
                async with aconnect_sse(self.http, "POST", "/chat/completions", json=body) as source:
                    first = None
                    async for _event in source.aiter_sse():
                        first = first or trio.current_time() - started
                direct.append(first or 0.0)
                started = trio.current_time()
                seen: list[float] = []

                def on_progress(params: dict[str, Any], started: float = started, seen: list[float] = seen) -> None:
                    if not seen:
                        seen.append(trio.current_time() - started)

                await client.call_tool("chat", {"prompt": f"stream {i}"}, on_progress=on_progress)
                self.calls += 1
                through.append(seen[0])
        direct, through = direct[10:], through[10:]
        # direct: the first SSE chunk; daemon: the first progress notification.
        return {"calls": n, **compared(direct, through, added="overhead")}

    async def deadline(self, calls: int, timeout: float, via: str = "ws") -> dict[str, Any]:
        """A hanging provider: how long after `exai/timeout` the -32001 arrives (calls 10 ms apart)."""
        await self.sim_config(hang=True)
        overshoot: list[float] = []
        codes: list[int] = []

        async def doomed(client: Any, i: int) -> None:
            started = trio.current_time()
            try:
                await client.call_tool("chat", {"prompt": f"deadline {i}"}, timeout=timeout)
            except RpcError as exc:
                codes.append(exc.code)
            overshoot.append(trio.current_time() - started - timeout)

        async with self.client(via) as client, trio.open_nursery() as nursery:
            for i in range(calls):  # 10 ms apart, so that the deadlines do not all fall at once
                nursery.start_soon(doomed, client, i)
                await trio.sleep(0.01)
        await self.sim_config()
        return {"calls": calls, "timeout_s": timeout, "timeouts_32001": codes.count(-32001),
                "overshoot_p50_ms": ms(pct(overshoot, 0.5)), "overshoot_max_ms": ms(max(overshoot))}

    async def storm(self, inflight: int, seconds: float, timeout: float) -> dict[str, Any]:
        """The exai simulator refuses half the attempts with 429 + Retry-After: 1 (--simulator exai)."""
        await self.sim_config(status=429, fail_ratio=0.5, retry_after="1")
        ok = tool_errors = timeouts = other = 0
        overrun = 0.0
        deadline = trio.current_time() + seconds

        async def worker(client: ExaiClient, w: int) -> None:
            nonlocal ok, tool_errors, timeouts, other, overrun
            i = 0
            while trio.current_time() < deadline:
                i += 1
                started = trio.current_time()
                try:
                    result = await client.call_tool("chat", {"prompt": f"storm {w}.{i}"}, timeout=timeout)
                    ok += not result.is_error
                    tool_errors += result.is_error
                except RpcError as exc:
                    timeouts += exc.code == -32001
                    other += exc.code != -32001
                overrun = max(overrun, trio.current_time() - started - timeout)

        async with connect(self.daemon_url) as client, trio.open_nursery() as nursery:
            for w in range(inflight):
                nursery.start_soon(worker, client, w)
        admin = self.sim_url.rsplit("/v1", 1)[0]
        (await self.http.post(f"{admin}/_sim/reset")).raise_for_status()
        return {
            "inflight": inflight, "seconds": seconds, "call_timeout_s": timeout,
            "ok_per_s": round(ok / seconds, 1), "ok": ok, "tool_errors": tool_errors,
            "timeouts": timeouts, "other_errors": other,
            "worst_deadline_overrun_ms": ms(max(0.0, overrun)),
        }

    async def disconnect_to_abort(self, n: int, via: str = "ws") -> dict[str, Any]:
        """A call hangs at the (in-process) provider; the client goes: time until the abort.

        WebSocket: the TCP connection drops with no close handshake. Streamable HTTP: DELETE
        ends the session (a dropped SSE stream cancels nothing there, by the spec, so it has no
        abort to time). Modern Streamable HTTP: the call's stream is closed, its cancellation."""
        sim = self.local_sim
        sim.configure(hang=True)
        gaps = []
        for i in range(n):
            aborted = sim.stats.aborted
            async with self.client(via) as client, trio.open_nursery() as nursery:

                async def doomed(i: int = i) -> None:
                    try:
                        await client.call_tool("chat", {"prompt": f"abort {i}", "model": "glm-4.5-flash"})
                    except Exception:
                        pass

                nursery.start_soon(doomed)
                with trio.fail_after(5):
                    await sim.wait_until(lambda s: s.inflight == 1)
                dropped = trio.current_time()
                if via == "http":
                    await client.end()
                elif via == "modern":
                    client.close()
                else:
                    await client.close_abruptly()
                with trio.fail_after(5):
                    await sim.wait_until(lambda s, target=aborted: s.aborted > target)
                gaps.append(sim.stats.last_abort_at - dropped)
        how = {"http": "DELETE /mcp", "modern": "its stream closed"}.get(via, "TCP dropped")
        return {"runs": n, "how": how,
                "p50_ms": ms(pct(gaps, 0.5)), "p99_ms": ms(pct(gaps, 0.99)), "max_ms": ms(max(gaps)),
                "samples_ms": [ms(gap) for gap in gaps]}

    async def tasks(self, n: int) -> dict[str, Any]:
        """`n` legacy tasks (tools/call with params.task) created over WebSocket, each after a
        plain tools/call of chat on the same connection (the creation answer's added latency over
        that answer, round by round; and over a `version` call's, the cheapest tools/call answer,
        with no work to wait for), then all polled to completion with tasks/get; the daemon's RSS after."""
        await self.sim_config()
        warmup = 20
        added: list[float] = []
        over_version: list[float] = []
        gets: list[float] = []
        ids: list[str] = []
        async with connect(self.daemon_url) as client:
            base = rss_kib(self.daemon_pid)
            for i in range(warmup + n):
                plain = await self.daemon_call(client)
                started = trio.current_time()
                await client.call_tool("version", {})
                version = trio.current_time() - started
                started = trio.current_time()
                task = (await client.request("tools/call", {"name": "chat", "arguments": {"prompt": "benchmark"}, "task": {"ttl": 600_000}}))["task"]
                created = trio.current_time() - started
                if i >= warmup:
                    added.append(created - plain)
                    over_version.append(created - version)
                    ids.append(task["taskId"])
            statuses: dict[str, int] = {}
            for task_id in ids:
                while True:
                    started = trio.current_time()
                    got = await client.request("tasks/get", {"taskId": task_id})
                    gets.append(trio.current_time() - started)
                    if got["status"] != "working":
                        statuses[got["status"]] = statuses.get(got["status"], 0) + 1
                        break
                    await trio.sleep(0.01)
            after = rss_kib(self.daemon_pid)
        return {
            "tasks": n,
            "statuses": statuses,
            "created_added_p50_ms": ms(pct(added, 0.5)),
            "created_added_p99_ms": ms(pct(added, 0.99)),
            "created_over_version_p50_ms": ms(pct(over_version, 0.5)),
            "get_p50_ms": ms(pct(gets, 0.5)),
            "get_p99_ms": ms(pct(gets, 0.99)),
            "gets": len(gets),
            "rss_before_mib": round(base / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
        }

    async def memory(self, idle: int, inflight: int) -> dict[str, Any]:
        """RSS growth per idle connection and per in-flight call, each on a fresh daemon."""
        async with self.fresh_daemon() as daemon:
            pid = daemon["pid"]
            base = rss_kib(pid)
            async with trio.open_nursery() as nursery:
                done = trio.Event()
                all_open = trio.Event()
                opened = 0

                async def hold() -> None:
                    nonlocal opened
                    async with connect(daemon["url"]):
                        opened += 1
                        if opened == idle:
                            all_open.set()
                        await done.wait()

                for _ in range(idle):
                    nursery.start_soon(hold)
                await all_open.wait()
                await trio.sleep(0.5)
                with_idle = rss_kib(pid)
                done.set()
        await self.sim_config(hang=True)
        async with self.fresh_daemon() as daemon:
            pid = daemon["pid"]
            async with connect(daemon["url"]) as client:
                await client.call_tool("version", {})
                base_calls = rss_kib(pid)
                async with trio.open_nursery() as nursery:

                    async def hanging(i: int) -> None:
                        try:
                            await client.call_tool("chat", {"prompt": f"hold {i}"}, on_progress=_ignore_progress)
                        except Exception:
                            pass

                    for i in range(inflight):
                        nursery.start_soon(hanging, i)
                    with trio.fail_after(30):
                        while True:
                            stats = (await self.http.get(self.sim_url.rsplit("/v1", 1)[0] + "/_sim/stats")).json()
                            if stats["inflight"] >= inflight:
                                break
                            await trio.sleep(0.1)
                    await trio.sleep(0.5)
                    with_calls = rss_kib(pid)
                    nursery.cancel_scope.cancel()
        await self.sim_config()
        return {
            "idle_connections": idle,
            "rss_per_idle_connection_kib": round((with_idle - base) / idle, 2),
            "inflight_calls": inflight,
            "rss_base_mib": round(base_calls / 1024, 1),
            "rss_with_inflight_mib": round(with_calls / 1024, 1),
            "rss_per_inflight_call_kib": round((with_calls - base_calls) / inflight, 2),
        }


def full_history_ms() -> dict[str, float]:
    """A fresh daemon has little history: time building and encoding a full 15-minute one
    (every second busy: outcomes, latencies, two providers, failures) in this process."""
    import time

    from exai.history import History

    now = [1_000_000.0]
    history = History(clock=lambda: now[0])
    outcomes = ("ok", "ok", "ok", "tool_error", "cancelled_deadline", "overloaded")
    for second in range(900):
        for i in range(40):
            outcome = outcomes[i % len(outcomes)]
            history.call_started()
            history.call_finished(connection=f"c{i}", request_id=second, tool="chat", outcome=outcome,
                                  took_s=0.01 * (1 + i), response={"result": {"content": [{"type": "text", "text": "x" * 200}]}})
        history.sample(inflight=24, queued=40, providers={
            "kimi": {"calls_total": 30 * second, "errors_by_kind": {"rate_limited": second, "timeout": second // 3}},
            "glm": {"calls_total": 10 * second, "errors_by_kind": {"unavailable": second // 2}},
        })
        now[0] += 1
    times, size = [], 0
    for _ in range(20):
        started = time.perf_counter()
        size = len(json.dumps(history.snapshot(), separators=(",", ":")))
        times.append(time.perf_counter() - started)
    return {"p50_ms": ms(pct(times, 0.5)), "max_ms": ms(max(times)), "bytes": size}


async def monitor_bench(bench: Bench, scale: float) -> dict[str, Any]:
    """The monitor's answer times idle and with the daemon saturated (p50/p99 of /api/status,
    the full /api/history and the dashboard's incremental one), and the daemon CPU that one
    dashboard refreshing each second costs (CPU with it minus CPU without, idle)."""
    await bench.sim_config(latency_s=0)
    n = max(20, int(300 * scale))
    async with httpx.AsyncClient(transport=TrioH11Transport(), base_url=bench.monitor_url, timeout=10) as http:

        async def timed(path: str) -> float:
            started = trio.current_time()
            (await http.get(path)).raise_for_status()
            return trio.current_time() - started

        async def paths() -> dict[str, str]:
            now = int((await http.get("/api/history")).json()["now"])
            return {"status": "/api/status", "history_full": "/api/history", "history_since": f"/api/history?since={now - 1}"}

        async def sample(count: int, gap: float) -> dict[str, list[float]]:
            out: dict[str, list[float]] = {name: [] for name in await paths()}
            for _ in range(count):
                for name, path in (await paths()).items():
                    out[name].append(await timed(path))
                await trio.sleep(gap)
            return out

        def summary(times: dict[str, list[float]]) -> dict[str, float]:
            return {f"{name}_{q}_ms": ms(pct(values, p)) for name, values in times.items() for q, p in (("p50", 0.5), ("p99", 0.99))}

        idle = await sample(n, 0.01)
        sizes = {name: len((await http.get(path)).content) for name, path in (await paths()).items()}
        calls = 0
        async with trio.open_nursery() as load:

            async def worker(client: ExaiClient) -> None:
                nonlocal calls
                while True:
                    await bench.daemon_call(client)
                    calls += 1

            async def conn() -> None:
                async with connect(bench.daemon_url) as client, trio.open_nursery() as inner:
                    for _ in range(32):
                        inner.start_soon(worker, client)

            for _ in range(8):
                load.start_soon(conn)
            await trio.sleep(1.0)
            started, before = trio.current_time(), calls
            saturated = await sample(max(20, n // 3), 0.05)
            rate = (calls - before) / (trio.current_time() - started)
            load.cancel_scope.cancel()
        await trio.sleep(1.0)
        window = max(5.0, 20 * scale)
        quiet_before = cpu_seconds(bench.daemon_pid)
        await trio.sleep(window)
        quiet = cpu_seconds(bench.daemon_pid) - quiet_before
        since = int((await http.get("/api/history")).json()["now"])
        with_dashboard_before = cpu_seconds(bench.daemon_pid)
        deadline = trio.current_time() + window
        while trio.current_time() < deadline:  # what the page does each second
            await http.get("/api/status")
            since = int((await http.get(f"/api/history?since={since - 1}")).json()["now"])
            await trio.sleep(1.0)
        with_dashboard = cpu_seconds(bench.daemon_pid) - with_dashboard_before
    return {
        "full_900s_history_build_ms": full_history_ms(),
        "idle": summary(idle),
        "saturated": {"inflight": 256, "calls_per_s": round(rate, 1), **summary(saturated)},
        "response_bytes": sizes,
        "cpu_window_s": window,
        "daemon_cpu_idle_pct": round(100 * quiet / window, 2),
        "daemon_cpu_with_dashboard_pct": round(100 * with_dashboard / window, 2),
        "dashboard_cpu_share_pct": round(100 * (with_dashboard - quiet) / window, 2),
    }

class Peer:
    """An OpenAI-compatible gateway (`litellm`) in front of the same simulator, run on the same loads."""

    def __init__(self, name: str, sim_url: str):
        self.name = name
        self.sim_url = sim_url

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = Path(tempfile.mkdtemp()) / "litellm.yaml"
        config.write_text(
            "model_list:\n  - model_name: kimi-k2-0905-preview\n    litellm_params:\n"
            f"      model: openai/kimi-k2-0905-preview\n      api_base: {self.sim_url}\n      api_key: bench\n"
        )
        process = await trio.lowlevel.open_process(
            [self.name, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/v1"
            async with httpx.AsyncClient(timeout=2) as http:
                with trio.fail_after(60):
                    while True:
                        try:
                            if (await http.get(f"http://127.0.0.1:{port}/health/liveliness")).status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        await trio.sleep(0.5)
            self.pid = process.pid
            yield url
        finally:
            await stop(process, signal.SIGTERM, grace=5)

    async def loads(self, bench: Bench, scale: float) -> dict[str, Any]:
        """One call at a time and 64 in flight through the peer, beside the direct path."""
        async with self.running() as url:
            meter = CpuMeter({"peer": self.pid, "simulator": bench.sim_pid, "driver": os.getpid()}, bench)
            peer = httpx.AsyncClient(transport=TrioH11Transport(max_keepalive=1024), base_url=url,
                                     headers={"Authorization": "Bearer bench"}, timeout=30)

            async def via_peer() -> float:
                started = trio.current_time()
                body = {"model": "kimi-k2-0905-preview", "messages": MESSAGES, "stream": True}
                async with peer.stream("POST", "/chat/completions", json=body) as response:
                    response.raise_for_status()
                    await response.aread()
                return trio.current_time() - started

            out: dict[str, Any] = {}
            await bench.sim_config()
            direct, through = [], []
            with meter(out, "sequential"):
                for _ in range(int(200 * scale)):
                    direct.append(await bench.direct_call())
                    through.append(await via_peer())
            out["sequential"] |= compared(direct, through)
            count = 0
            with meter(out, "throughput"):
                stop_at = trio.current_time() + 5 * scale
                async with trio.open_nursery() as nursery:
                    async def worker() -> None:
                        nonlocal count
                        while trio.current_time() < stop_at:
                            await via_peer()
                            count += 1
                    for _ in range(64):
                        nursery.start_soon(worker)
            out["throughput"]["calls_per_s"] = round(count / (5 * scale), 1)
            await peer.aclose()
            return out


@asynccontextmanager
async def daemon_process(env: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
    """`exai serve` in a child process: its urls (WebSocket, monitor, Streamable HTTP) and pid;
    SIGTERM on exit. The env must ask for port 0 everywhere, so that serve prints each port."""
    daemon = await trio.lowlevel.open_process([*EXAI, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(60):
            found = await read_until(
                daemon.stdout, rb"listening on (ws://\S+)\s+exai monitor on (http://\S+)\s+exai http on (http://\S+)\s"
            )
        url, monitor, http = (group.decode() for group in found.groups())
        yield {"url": url, "monitor": monitor, "http": http, "pid": daemon.pid}
    finally:
        await stop(daemon, signal.SIGTERM, grace=15)


@asynccontextmanager
async def floor_process(env: dict[str, str], sim_url: str) -> AsyncIterator[dict[str, Any]]:
    """scripts/floor_relay.py in a child process, relaying to the simulator: its url and pid."""
    relay = await trio.lowlevel.open_process([*FLOOR, "--port", "0", "--upstream", sim_url], env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(30):
            found = await read_until(relay.stdout, rb"floor relay on (ws://\S+)\s")
        yield {"url": found.group(1).decode(), "pid": relay.pid}
    finally:
        await stop(relay, signal.SIGTERM, grace=5)


async def stop(process: trio.Process, signum: int, *, grace: float) -> None:
    """Signal a child, give it `grace` seconds to exit, then kill it."""
    process.send_signal(signum)
    with trio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        process.kill()


class CpuMeter:
    """CPU share (of one core) of each process over a block, and server CPU per completed call.

    `with meter(into, *keys)`: at the end each `into[key]` gets `cpu_share` and, unless the load
    set its own, `daemon_cpu_ms_per_call`. For a floor load ("..._floor") the relay's share and
    CPU stand in the "daemon" place, so that its rows read like exai's."""

    def __init__(self, pids: dict[str, int], bench: Bench):
        self.pids = pids
        self.bench = bench

    @contextmanager
    def __call__(self, into: dict[str, Any], *keys: str) -> Any:
        wall, calls = time.monotonic(), self.bench.calls
        before = {who: cpu_seconds(pid) for who, pid in self.pids.items()}
        yield
        wall = time.monotonic() - wall
        used = {who: cpu_seconds(pid) - before[who] for who, pid in self.pids.items()}
        calls = self.bench.calls - calls
        for key in keys:
            mine = dict(used)
            floor = mine.pop("floor", None)
            if key.endswith("_floor") and floor is not None:
                mine["daemon"] = floor
            entry = into.setdefault(key, {})
            entry["cpu_share"] = {who: round(u / wall, 3) for who, u in mine.items()}
            if calls and "daemon" in mine:
                entry.setdefault("daemon_cpu_ms_per_call", round(mine["daemon"] * 1000 / calls, 3))


def compare_eras(results: dict[str, Any]) -> None:
    """Modern Streamable HTTP beside legacy in one run: its 64-in-flight calls/s over legacy's."""
    modern, legacy = results.get("throughput_modern"), results.get("throughput_http")
    if modern and legacy:
        modern["over_http_calls_per_s"] = round(modern["calls_per_s"] - legacy["calls_per_s"], 1)


def load_key(name: str, via: str) -> str:
    """A load's key in the results: WebSocket keeps the plain name (as before both transports)."""
    return name if via == "ws" else f"{name}_{via}"


def daemon_env(env: dict[str, str], sim_url: str, local_url: str) -> dict[str, str]:
    limit = "2000"
    return {
        **env,
        "KIMI_API_KEY": "bench", "KIMI_BASE_URL": sim_url,
        "GLM_API_KEY": "bench", "GLM_BASE_URL": local_url,
        "EXAI_DEFAULT_MODEL": "kimi-k2-0905-preview",
        "EXAI_PORT": "0", "EXAI_MONITOR_PORT": "0", "EXAI_HTTP_PORT": "0",
        "EXAI_GLOBAL_MAX_INFLIGHT": limit, "EXAI_SESSION_MAX_INFLIGHT": limit,
        "EXAI_KIMI_MAX_INFLIGHT": limit, "EXAI_GLM_MAX_INFLIGHT": "64",
        "EXAI_MAX_CONNECTIONS": "5000", "EXAI_MAX_QUEUED": "5000",
        "EXAI_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        "EXAI_STATE_DIR": os.path.join(os.environ.get("TMPDIR", "/tmp"), f"exai-bench-{os.getpid()}"),
    }


Load = tuple[str, list[str], Callable[[], Awaitable[dict[str, Any]]]]


def plan_loads(bench: Bench, opts: argparse.Namespace, transports: list[str], floor: bool) -> list[Load]:
    """(name, result keys, run) per load, in order; each way a load goes beside the others."""
    scale = 0.2 if opts.quick else 1.0
    vias = [*transports, *(["floor"] if floor else [])]
    plan: list[Load] = []

    def add(name: str, via: str, make: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        key = load_key(name, via)

        async def run() -> dict[str, Any]:
            return {key: await make()}

        plan.append((name, [key], run))

    add("simulator_cost", "ws", lambda: bench.simulator_cost([300, 1000], 2 * scale))
    plan.append(("sequential", [load_key("sequential", via) for via in vias],
                 lambda: bench.sequential(int(300 * scale), vias)))
    for via in vias:
        add("open_loop_300_per_s", via, partial(bench.open_loop, 300, 3 * scale, 0.2, 8, via))
    for via in vias:
        add("throughput", via, partial(bench.throughput, 64, 3 * scale, 8, via))
    for via in transports:
        add("first_progress", via, partial(bench.first_progress, int(60 * scale), via))
    for via in transports:
        add("deadline", via, partial(bench.deadline, int(50 * scale), 0.5, via))
    for via in transports:
        add("disconnect_to_abort", via, partial(bench.disconnect_to_abort, int(50 * scale), via))
    add("memory", "ws", lambda: bench.memory(int(1000 * scale), int(1000 * scale)))
    add("tasks", "ws", lambda: bench.tasks(int(1000 * scale)))
    add("monitor", "ws", lambda: monitor_bench(bench, scale))
    levels = CONCURRENCY if not opts.quick else [1, 8, 64]
    for via in transports:
        add("concurrency", via, partial(bench.concurrency, levels, 1.5 * scale, via))
    if opts.simulator == "exai":
        add("storm_429_half", "ws", lambda: bench.storm(32, 8 * scale, 3.0))
    return plan


async def main(opts: argparse.Namespace) -> dict[str, Any]:
    """Start the processes, run the loads `opts.runs` times; {"runs": [...], "profile": ..., ...}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
    transports = ["ws", "http", "modern"] if opts.transport == "both" else [opts.transport]
    async with trio.open_nursery() as nursery:
        local_sim: H11Sim = await nursery.start(H11Sim().serve)
        if opts.simulator == "h11":
            sim = await trio.lowlevel.open_process([*H11SIM, "--port", "0"], env=env, stdout=subprocess.PIPE)
        else:
            sim = await trio.lowlevel.open_process(
                [*EXAI, "mock-provider", "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        try:
            sim_url = (await read_until(sim.stdout, rb"(http://127\.0\.0\.1:\d+/v1)")).group(1).decode()
            denv = daemon_env(env, sim_url, local_sim.url)
            async with daemon_process(denv) as daemon, AsyncExitStack() as stack:
                floor = await stack.enter_async_context(floor_process(env, sim_url)) if opts.floor else None
                bench = Bench(sim_url, daemon, local_sim, floor)
                bench.sim_pid = sim.pid
                bench.fresh_daemon = lambda: daemon_process(denv)
                pids = {"daemon": daemon["pid"], "simulator": sim.pid, "driver": os.getpid()}
                if floor is not None:
                    pids["floor"] = floor["pid"]
                meter = CpuMeter(pids, bench)
                loads = plan_loads(bench, opts, transports, floor is not None)
                out: dict[str, Any] = {"transports": transports, "floor": floor is not None, "runs": []}
                for _ in range(opts.runs):
                    results: dict[str, Any] = {}
                    for name, keys, load in loads:
                        if not opts.only or name in opts.only or any(key in opts.only for key in keys):
                            with meter(results, *keys):
                                results.update(await load())
                    compare_eras(results)
                    out["runs"].append(results)
                for via in transports if opts.profile else []:
                    path = opts.profile if via == "ws" else f"-{via}".join(os.path.splitext(opts.profile))
                    out[load_key("profile", via)] = await profile_daemon(
                        bench, daemon["pid"], path, 6 * (0.2 if opts.quick else 1.0), via)
                if opts.peer:
                    if shutil.which(opts.peer):
                        out["peer"] = await Peer(opts.peer, sim_url).loads(bench, 0.2 if opts.quick else 1.0)
                    else:
                        out["peer"] = {"not_run": f"`{opts.peer}` is not on PATH"}
                await bench.http.aclose()
                return out
        finally:
            await stop(sim, signal.SIGINT, grace=5)
            nursery.cancel_scope.cancel()
    raise AssertionError("unreachable")


async def workflow(env: dict[str, str]) -> dict[str, Any]:
    """The seed's 50-step request, consensus against its slowest model, the tools/list size.

    A daemon with the default limits, both providers on one in-driver simulator.
    """
    state_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"exai-bench-workflow-{os.getpid()}")
    latency = 0.5
    async with trio.open_nursery() as nursery:
        sim: Simulator = await nursery.start(serve_simulator, "127.0.0.1", 0)
        daemon_env = {
            **env,
            "KIMI_API_KEY": "bench", "KIMI_BASE_URL": sim.url, "GLM_API_KEY": "bench", "GLM_BASE_URL": sim.url,
            "EXAI_DEFAULT_MODEL": "kimi-k2-0905-preview", "EXAI_PORT": "0", "EXAI_MONITOR_PORT": "0",
            "EXAI_HTTP_PORT": "0", "EXAI_STATE_DIR": state_dir,
        }
        async with daemon_process(daemon_env) as daemon, connect(daemon["url"]) as client:
            tools_list_bytes = len(json.dumps(await client.request("tools/list")).encode())
            sim.configure(latency_s=latency)
            low = json.dumps({"findings": "clue {n}", "confidence": "low"})
            seed = {
                "step": f"find why the server hangs\n#sim {json.dumps({'reply': low})}", "step_number": 1,
                "total_steps": 50, "next_step_required": True, "findings": "it hangs", "auto_steps": 50,
            }
            started = trio.current_time()
            result = await client.call_tool("debug", seed)
            seed_wall = trio.current_time() - started
            if result.is_error or result.structured is None:
                raise RuntimeError(result.text)
            thread = read_thread(Settings(state_dir=state_dir), result.structured["continuation_id"])
            models = [
                {"model": "kimi-k2-0905-preview", "stance": "for"},
                {"model": "glm-4.6", "stance": "against"},
                {"model": "kimi-k2-turbo-preview", "stance": "neutral"},
            ]
            walls = {}
            for synthesis in (False, True):
                started = trio.current_time()
                answer = await client.call_tool("consensus", {
                    "step": "Move the thread store to SQLite?", "step_number": 1, "total_steps": 1,
                    "next_step_required": False, "findings": "threads die with the process", "models": models,
                    "use_assistant_model": synthesis,
                })
                if answer.is_error:
                    raise RuntimeError(answer.text)
                walls[synthesis] = trio.current_time() - started
        nursery.cancel_scope.cancel()
    return {
        "seed_50_steps": {
            "provider_latency_s": latency,
            "provider_calls": result.structured["provider_calls"],
            "status": result.structured["status"],
            "wall_s": round(seed_wall, 3),
            "auto_steps_saved": sum(1 for t in thread.turns if t.role == "assistant"),
        },
        "consensus_3_models": {
            "slowest_model_s": latency,
            "wall_s": round(walls[False], 3),
            "wall_with_synthesis_s": round(walls[True], 3),
        },
        "tools_list_bytes": tools_list_bytes,
    }
# --- profiling ----------------------------------------------------------------------------

# A sample belongs to the innermost frame of the running task whose file matches a category
# (trio's own frames inside a task count for the code that called them); samples with no
# task frame are trio's scheduler and I/O wait; the monitor's thread is counted apart.
PROVIDER_TRANSPORT = "provider transport (h11, sockets)"
HTTP_SERVER = "Streamable HTTP server (hypercorn and its h11, exai/transports/http/)"
CATEGORIES: list[tuple[str, str]] = [
    ("logging (loguru)", r"^loguru/|exai/logs\.py"),
    ("metrics (prometheus_client)", r"^prometheus_client/|exai/metrics\.py"),
    ("store (SQLite)", r"exai/store/|^sqlite3/"),
    ("JSON encode/decode", r"^json/|orjson"),
    ("validation (pydantic)", r"^pydantic|exai/tools/base\.py"),
    ("SSE parsing", r"^httpx_sse/|_SSEData|_take_event|_parse_chunk|_parse_choice"),
    ("provider request build (httpx models)", r"^httpx/_(models|urls|urlparse|content|headers|config|utils)\.py|_build_request"),
    ("httpx client machinery", r"^httpx/_(client|decoders)\.py"),
    (PROVIDER_TRANSPORT, r"exai/providers/transport\.py|^h11/"),
    ("provider call (gateway, openai_compat: cancel scopes, slot, retries)", r"exai/providers/(gateway|circuit|ratelimit|retry|base|openai_compat)\.py"),
    ("WebSocket frames (wsproto, trio-websocket)", r"^wsproto/|^trio_websocket/"),
    (HTTP_SERVER, r"^hypercorn/|exai/transports/http/|exai/asgi\.py"),
    ("JSON-RPC protocol", r"exai/protocol\.py"),
    ("lifecycle and limiters", r"exai/(lifecycle|limits)\.py"),
    ("tools", r"exai/tools/"),
    ("server (session, dispatch)", r"exai/server\.py"),
]
SCHEDULER = "trio scheduler and I/O wait (no task running)"
UNATTRIBUTED = "unattributed (a sample with trio's socket and lock frames only)"
MONITOR = "monitor thread (/healthz, /api/status)"


def categorise(raw: str) -> dict[str, float]:
    """py-spy raw (collapsed) stacks -> share of samples per category."""
    compiled = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]
    totals: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # "function (path:line)" -> (function, path)
        frames = [(func.strip(), path) for func, _, path in (frame.rpartition("(") for frame in stack.split(";"))]
        where = UNATTRIBUTED
        if any("exai/monitor.py" in path for _, path in frames):
            where = MONITOR
        else:
            roots = [i for i, (func, path) in enumerate(frames) if func == "unrolled_run" and path.startswith("trio/")]
            task = frames[roots[-1] + 1 :] if roots else frames
            where = SCHEDULER if roots else UNATTRIBUTED
            for func, path in reversed(task):
                hit = next((name for name, pattern in compiled if pattern.search(path) or pattern.search(func)), None)
                if hit:
                    where = hit
                    break
            if where == PROVIDER_TRANSPORT and any(path.startswith("hypercorn/") for _, path in task):
                where = HTTP_SERVER  # h11 parsing the daemon's own HTTP requests, not a provider's answer
        totals[where] = totals.get(where, 0) + int(count)
    whole = sum(totals.values()) or 1
    return {name: round(n / whole, 4) for name, n in sorted(totals.items(), key=lambda kv: -kv[1])}


async def profile_daemon(bench: Bench, pid: int, path: str, seconds: float, via: str = "ws") -> dict[str, Any]:
    """py-spy on the daemon during 64 calls in flight over `via`: CPU per call, split by category.

    Kernel time (sockets, epoll) comes from /proc's stime; the user time is split by the
    samples py-spy takes while a thread holds the GIL (`--gil`: a thread waiting for the CPU
    inside a system call is not counting Python work, which on a shared machine it often is).
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    profiler = await trio.lowlevel.open_process(
        [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--nonblocking", "--gil", "-o", path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    await trio.sleep(1.0)
    await bench.sim_config()
    calls, (user, system) = bench.calls, cpu_times(pid)
    await bench.closed_loop(64, seconds, 8, via=via)
    calls = bench.calls - calls
    user, system = (now - before for now, before in zip(cpu_times(pid), (user, system), strict=True))
    profiler.send_signal(signal.SIGINT)
    await profiler.wait()
    shares = categorise(await trio.Path(path).read_text())
    user_ms, system_ms = user * 1000 / max(calls, 1), system * 1000 / max(calls, 1)
    breakdown = {name: {"share_of_user": share, "ms_per_call": round(share * user_ms, 3)} for name, share in shares.items()}
    breakdown["kernel: socket syscalls, epoll (/proc stime)"] = {"share_of_user": None, "ms_per_call": round(system_ms, 3)}
    return {"file": path, "transport": via, "calls": calls, "daemon_cpu_ms_per_call": round(user_ms + system_ms, 3),
            "user_ms_per_call": round(user_ms, 3), "system_ms_per_call": round(system_ms, 3), "breakdown": breakdown}


# --- the report ---------------------------------------------------------------------------

# (load, key, label, target text, test: value -> met)
TARGETS: list[tuple[str, str, str, str, Callable[[float], bool] | None]] = [
    ("simulator_cost", "simulator_cpu_share_at_300_per_s", "the simulator alone at 300 calls/s (CPU share of a core)", "< 0.33", lambda v: v < 0.33),
    ("simulator_cost", "simulator_cpu_share_at_1000_per_s", "the simulator alone at 1,000 calls/s (CPU share of a core)", "< 0.33", lambda v: v < 0.33),
    ("sequential", "added_p50_ms", "one call at a time, added latency p50 (ms)", "<= 1", lambda v: v <= 1),
    ("sequential", "added_p99_ms", "one call at a time, added latency p99 (ms)", "-", None),
    ("sequential_http", "over_ws_p50_ms", "HTTP added p50 over WebSocket, one call at a time (ms)", "<= 1", lambda v: v <= 1),
    ("sequential_http", "over_ws_p99_ms", "HTTP added p99 over WebSocket, one call at a time (ms)", "-", None),
    ("sequential_modern", "over_http_p50_ms", "modern HTTP added p50 over legacy HTTP, one call at a time (ms)", "<= 0", lambda v: v <= 0),
    ("throughput_modern", "over_http_calls_per_s", "modern HTTP calls/s over legacy HTTP, 64 in flight", ">= 0", lambda v: v >= 0),
    ("open_loop_300_per_s", "added_p50_ms", "300 calls/s open loop, 200 ms provider, added p50 (ms)", "<= 2", lambda v: v <= 2),
    ("open_loop_300_per_s", "added_p99_ms", "300 calls/s open loop, 200 ms provider, added p99 (ms)", "<= 5", lambda v: v <= 5),
    ("tasks", "created_added_p50_ms", "task creation answer over a plain call's answer, p50 (ms)", "<= 1", lambda v: v <= 1),
    ("tasks", "created_over_version_p50_ms", "task creation answer over a `version` call's, p50 (ms)", "-", None),
    ("tasks", "get_p50_ms", "tasks/get p50, 1,000 tasks (ms)", "-", None),
    ("tasks", "get_p99_ms", "tasks/get p99, 1,000 tasks (ms)", "-", None),
    ("tasks", "rss_after_mib", "daemon RSS after 1,000 tasks (MiB)", "-", None),
    ("throughput", "calls_per_s", "64 in flight, zero-latency provider (calls/s)", ">= 1000", lambda v: v >= 1000),
    ("throughput", "healthz_p50_ms", "/healthz under saturation, p50 (ms)", "< 100", lambda v: v < 100),
    ("throughput", "healthz_max_ms", "/healthz under saturation, max (ms)", "< 100", lambda v: v < 100),
    ("throughput", "api_status_p50_ms", "/api/status under saturation, p50 (ms)", "< 100", lambda v: v < 100),
    ("first_progress", "overhead_p50_ms", "time to first progress, added p50 (ms)", "<= 2", lambda v: v <= 2),
    ("first_progress", "overhead_p99_ms", "time to first progress, added p99 (ms)", "-", None),
    ("deadline", "overshoot_p50_ms", "deadline overshoot p50 (ms)", "-", None),
    ("deadline", "overshoot_max_ms", "deadline overshoot max (ms)", "<= 50", lambda v: v <= 50),
    ("disconnect_to_abort", "p50_ms", "client vanishes -> provider request aborted, p50 (ms)", "-", None),
    ("disconnect_to_abort", "p99_ms", "client vanishes -> provider request aborted, p99 (ms)", "<= 5", lambda v: v <= 5),
    ("memory", "rss_with_inflight_mib", "RSS with 1,000 calls in flight (MiB)", "< 150", lambda v: v < 150),
    ("memory", "rss_per_inflight_call_kib", "RSS per in-flight call (KiB)", "-", None),
    ("memory", "rss_per_idle_connection_kib", "RSS per idle connection (KiB)", "-", None),
]

# How a load's other ways are named in the results and in the report, beside WebSocket's row.
WAYS: list[tuple[str, str]] = [
    ("", ""),
    ("_http", "Streamable HTTP: "),
    ("_modern", "Streamable HTTP, modern 2026-07-28: "),
    ("_floor", "floor, the same libraries with no exai logic: "),
]
HTTP_LABELS = {
    "_http": {"disconnect_to_abort": ("client vanishes", "DELETE /mcp")},
    "_modern": {"disconnect_to_abort": ("client vanishes", "its stream closed")},
}


def table_rows(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, str, Callable[[float], bool] | None]]:
    """TARGETS as measured in `runs`: each figure's WebSocket row, then its Streamable HTTP and
    floor rows where the runs have them. The floor is a reference: shown, never judged."""
    rows: list[tuple[str, str, str, str, Callable[[float], bool] | None]] = []
    for load, key, label, target, test in TARGETS:
        for suffix, prefix in WAYS:
            if median_of(runs, load + suffix, key) is None:
                continue
            text = label
            if load in HTTP_LABELS.get(suffix, {}):
                text = text.replace(*HTTP_LABELS[suffix][load])
            if suffix == "_floor":
                rows.append((load + suffix, key, prefix + text, "-", None))
            else:
                rows.append((load + suffix, key, prefix + text, target, test))
    return rows


def median_of(runs: list[dict[str, Any]], load: str, *keys: str) -> tuple[float, float, float] | None:
    values = []
    for run in runs:
        value: Any = run.get(load, {})
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def write_report(out: dict[str, Any], command: str, docs: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = out["runs"]
    (docs / "perf").mkdir(parents=True, exist_ok=True)
    lines = [
        "# exai performance",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "## Machine",
        "",
        f"- {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs: {_cpu_model()}",
        f"- load average at the start of the run {out.get('loadavg_start', '?')}, at the end "
        f"{out.get('loadavg_end', '?')}: the machine is shared (2 cores, other sessions at work), "
        "so the wall-clock figures carry that noise and the CPU shares show how little of a core the daemon got; "
        "daemon CPU ms per call is the figure contention moves least. Run it again on a quiet machine for "
        "representative latencies.",
        _processes_text(out),
        "",
        f"## Figures (median of {len(runs)} runs, min-max in brackets)",
        "",
        "CPU share = CPU seconds / wall seconds over that load, per process (1.0 = one core of the two). "
        "On a floor row the daemon's columns are the floor relay's.",
        "",
        "| figure | target | median [min-max] | met | daemon CPU ms/call | CPU share daemon / simulator / driver |",
        "|---|---|---|---|---|---|",
    ]
    missed = []
    for load, key, label, target, test in table_rows(runs):
        got = median_of(runs, load, key)
        assert got is not None
        med, low, high = got
        met = "" if test is None else ("yes" if test(med) else "**no**")
        if test is not None and not test(med):
            missed.append((label, load, key))
        cpu = median_of(runs, load, "daemon_cpu_ms_per_call")
        shares = [median_of(runs, load, "cpu_share", who) for who in ("daemon", "simulator", "driver")]
        share_text = " / ".join(f"{s[0]:.2f}" if s else "-" for s in shares)
        lines.append(f"| {label} | {target} | {med:g} [{low:g}-{high:g}] | {met} | "
                     f"{f'{cpu[0]:.2f}' if cpu else '-'} | {share_text} |")
    lines += ["", *_floor_section(runs), *_concurrency_section(runs, docs, plt), *_abort_section(runs, docs, plt)]
    profile = out.get("profile")
    for shown in (profile, out.get("profile_http"), out.get("profile_modern")):
        if shown:
            lines += _profile_section(shown)
    if missed:
        lines += ["## What bounds the missed targets", ""]
        for label, load, key in missed:
            shown = next((out.get(f"profile{way}") for way in ("_http", "_modern") if load.endswith(way)), None) or profile
            lines.append(f"- **{label}**: {_bound(runs, load, key, shown)}")
        lines.append("")
    peer = out.get("peer")
    lines += ["## Peer gateway", ""]
    if not peer:
        lines.append("Not run (`--peer litellm` was not given).")
    elif "not_run" in peer:
        lines.append(f"Not run: {peer['not_run']}. The code path exists (`--peer litellm`).")
    else:
        lines.append("```json\n" + json.dumps(peer, indent=2) + "\n```")
    lines.append("")
    path = docs / "performance.md"
    path.write_text("\n".join(lines) + _appendix(docs))
    return path


def _processes_text(out: dict[str, Any]) -> str:
    """Which processes and ways the run had (results from before --transport both had WebSocket only)."""
    transports, floor = out.get("transports", ["ws"]), out.get("floor", False)
    text = ("- on loopback: the provider simulator (`scripts/h11sim.py`, raw h11 on trio), the daemon (`exai serve`, "
            "serving WebSocket and Streamable HTTP at once)" + (", the floor (`scripts/floor_relay.py`, below)" if floor else "")
            + " and the load generator (this script). ")
    ways = [_TRANSPORT_NAMES[t] for t in transports] + (["the floor"] if floor else [])
    if len(ways) > 1:
        text += (f"Each load runs over {', then '.join(ways)}, against the same daemon in the same run; one call at a "
                 "time interleaves them call by call, so that each is measured at the same moments of the machine. ")
    else:
        text += f"The loads reach the daemon over {ways[0]}. "
    if "http" in transports:
        text += ("The load generator's Streamable HTTP client is h11 on kept-alive sockets with httpx-sse's decoder: "
                 "its CPU per call is in the floor table, beside its WebSocket client's. ")
    return text + ("Calls ask for progress, so the daemon streams from the provider; the direct baseline streams over "
                   "the daemon's own HTTP transport.")


def _appendix(docs: Path) -> str:
    """Hand-written notes (per-change before/after tables) kept in docs/perf/changes.md."""
    notes = docs / "perf" / "changes.md"
    return "\n" + notes.read_text() if notes.exists() else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _bound(runs: list[dict[str, Any]], load: str, key: str, profile: dict[str, Any] | None) -> str:
    shares = {who: (median_of(runs, load, "cpu_share", who) or (0.0,))[0] for who in ("daemon", "simulator", "driver")}
    cpu = median_of(runs, load, "daemon_cpu_ms_per_call")
    rate = median_of(runs, load, "rate_per_s") or median_of(runs, load, "calls_per_s")
    text = (f"CPU. The daemon had {shares['daemon']:.2f} of a core, the simulator {shares['simulator']:.2f} and the load "
            f"generator {shares['driver']:.2f}; the rest of the 2 cores went to other work on the shared machine")
    if cpu and rate:
        text += (f". At {cpu[0]:.2f} ms of daemon CPU per call, {rate[0]:g} calls/s need {rate[0] * cpu[0] / 1000:.2f} "
                 f"of a core, and one whole core would carry about {1000 / cpu[0]:.0f} calls/s")
    elif cpu:
        text += f". The daemon spent {cpu[0]:.2f} ms of CPU per call"
    base = load.removesuffix("_http").removesuffix("_modern")
    ws_cpu = median_of(runs, base, "daemon_cpu_ms_per_call")
    if base != load and ws_cpu:
        text += f". Over WebSocket the same load cost the daemon {ws_cpu[0]:.2f} ms of CPU per call"
    floor, floor_cpu = median_of(runs, base + "_floor", key), median_of(runs, base + "_floor", "daemon_cpu_ms_per_call")
    if floor and floor_cpu:
        text += (f". The floor (the same libraries with no exai logic) measured {floor[0]:g} here with {floor_cpu[0]:.2f} ms "
                 "of CPU per call: what lies between is exai's own work")
    if profile:
        top = sorted(profile["breakdown"].items(), key=lambda kv: -kv[1]["ms_per_call"])[:3]
        text += f"; the {_TRANSPORT_NAMES[profile.get('transport', 'ws')]} profile's largest parts: " + ", ".join(f"{name} {v['ms_per_call']:.2f} ms" for name, v in top)
    return text + "."


FLOOR_FIGURES: list[tuple[str, str, str]] = [
    ("sequential", "added_p50_ms", "one call at a time, added p50 (ms)"),
    ("sequential", "added_p99_ms", "one call at a time, added p99 (ms)"),
    ("sequential", "daemon_cpu_ms_per_call", "one call at a time, server CPU per call (ms)"),
    ("sequential", "driver_cpu_ms_per_call", "one call at a time, load generator CPU per call (ms)"),
    ("open_loop_300_per_s", "added_p50_ms", "300 calls/s open loop, 200 ms provider, added p50 (ms)"),
    ("open_loop_300_per_s", "added_p99_ms", "300 calls/s open loop, 200 ms provider, added p99 (ms)"),
    ("throughput", "calls_per_s", "64 in flight, zero-latency provider (calls/s)"),
    ("throughput", "daemon_cpu_ms_per_call", "64 in flight, server CPU per call (ms)"),
]


def _floor_section(runs: list[dict[str, Any]]) -> list[str]:
    """exai over WebSocket and Streamable HTTP beside the floor relay, figure by figure."""
    if not any(key.endswith("_floor") for run in runs for key in run):
        return []
    lines = ["## Floor: the same libraries with no exai logic", "",
             "`scripts/floor_relay.py` (benchmark only) takes MCP over trio-websocket and, per `tools/call`, makes the "
             "same streaming POST to the same simulator with httpx's request model on exai's pooled h11 transport, "
             "joins the streamed text, sends one progress notification and answers; no limits, validation, deadlines, "
             "cancellation, logging, metrics or store. Its figures are what the libraries, the simulator and the load "
             "generator cost on this machine; the distance from exai's to them is exai's own logic.", "",
             ]
    modern = any(key.endswith("_modern") for run in runs for key in run)
    suffixes = ("", "_http", *(("_modern",) if modern else ()), "_floor")
    names = ("exai, WebSocket", "exai, Streamable HTTP", *(("exai, modern HTTP",) if modern else ()), "floor")
    lines += ["| figure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for load, key, label in FLOOR_FIGURES:
        cells = []
        for suffix in suffixes:
            got = median_of(runs, load + suffix, key)
            cells.append(f"{got[0]:g}" if got else "-")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return [*lines, ""]


def _concurrency_section(runs: list[dict[str, Any]], docs: Path, plt: Any) -> list[str]:
    figures = ("p50_ms", "p99_ms", "calls_per_s")
    medians: dict[str, tuple[list[int], dict[str, list[float]]]] = {}  # way -> (levels, figure -> medians)
    for way, name in (("concurrency", "WebSocket"), ("concurrency_http", "Streamable HTTP"),
                      ("concurrency_modern", "modern Streamable HTTP")):
        per_level: dict[int, dict[str, list[float]]] = {}
        for run in runs:
            for point in run.get(way, {}).get("points", []):
                entry = per_level.setdefault(point["concurrency"], {key: [] for key in figures})
                for key in figures:
                    entry[key].append(point[key])
        if per_level:
            levels = sorted(per_level)
            medians[name] = (levels, {key: [statistics.median(per_level[c][key]) for c in levels] for key in figures})
    if not medians:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    titles = {"p50_ms": "latency p50 (ms)", "p99_ms": "latency p99 (ms)", "calls_per_s": "calls/s"}
    for ax, key in zip(axes, figures, strict=True):
        for (name, (levels, med)), style in zip(medians.items(), ("o-", "s--"), strict=False):
            ax.plot(levels, med[key], style, label=name)
        ax.set_xscale("log", base=2)
        if key != "calls_per_s":
            ax.set_yscale("log")
        ax.set_title(titles[key])
        ax.set_xlabel("calls in flight")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("closed loop, zero-latency provider")
    fig.tight_layout()
    fig.savefig(docs / "perf" / "latency_vs_concurrency.png", dpi=110)
    plt.close(fig)
    names = list(medians)
    lines = [f"## Latency against concurrency ({' and '.join(names)})", "",
             "![latency against concurrency](perf/latency_vs_concurrency.png)", "",
             "With a zero-latency provider the whole latency is exai plus the simulator and the load generator; "
             "at 1 in flight it is the one-call-at-a-time latency, past saturation it grows as in-flight / calls/s.",
             *(["Both transports run against the same daemon in the same run, one after the other; Streamable HTTP "
                "carries one call per HTTP/1.1 connection at a time, so a session holds as many kept-alive connections "
                "as it has calls in flight."] if len(names) > 1 else []), "",
             "| in flight | " + " | ".join(f"{name} p50 ms | {name} p99 ms | {name} calls/s" for name in names) + " |",
             "|---|" + "---|---|---|" * len(names)]
    levels = sorted({level for ways_levels, _ in medians.values() for level in ways_levels})
    for level in levels:
        cells = []
        for ways_levels, med in medians.values():
            at = ways_levels.index(level) if level in ways_levels else None
            cells += [f"{med[key][at]:g}" if at is not None else "-" for key in figures]
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _abort_section(runs: list[dict[str, Any]], docs: Path, plt: Any) -> list[str]:
    ways = {
        "WebSocket: TCP connection dropped": [s for run in runs for s in run.get("disconnect_to_abort", {}).get("samples_ms", [])],
        "Streamable HTTP: DELETE /mcp": [s for run in runs for s in run.get("disconnect_to_abort_http", {}).get("samples_ms", [])],
        "modern Streamable HTTP: its stream closed": [
            s for run in runs for s in run.get("disconnect_to_abort_modern", {}).get("samples_ms", [])
        ],
    }
    ways = {name: samples for name, samples in ways.items() if samples}
    if not ways:
        return []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(list(ways.values()), bins=40, label=list(ways), histtype="step" if len(ways) > 1 else "bar")
    ax.axvline(5, color="red", linestyle="--", label="target p99 5 ms")
    ax.set_xlabel("client gone -> provider request aborted (ms)")
    ax.set_ylabel("calls")
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "perf" / "abort_latency.png", dpi=110)
    plt.close(fig)
    lines = ["## Disconnect-to-abort distribution", "", "![abort latency](perf/abort_latency.png)", ""]
    for name, samples in ways.items():
        lines.append(f"- {name}: {len(samples)} samples over all runs: p50 {pct(samples, 0.5):.2f} ms, "
                     f"p99 {pct(samples, 0.99):.2f} ms, max {max(samples):.2f} ms.")
    if len(ways) > 1:
        lines += ["", "Over Streamable HTTP a dropped SSE stream cancels nothing (the spec's rule: calls belong to the "
              "session), so DELETE, which ends the session, is the disconnect that has an abort to time."]
    return [*lines, ""]


def _shown_path(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


_TRANSPORT_NAMES = {"ws": "WebSocket", "http": "Streamable HTTP", "modern": "modern Streamable HTTP (2026-07-28)"}


def _profile_section(profile: dict[str, Any]) -> list[str]:
    way = _TRANSPORT_NAMES[profile.get("transport", "ws")]
    lines = [f"## Where a call's daemon CPU goes ({way})", "",
             f"Daemon under 64 calls in flight over {way} against a zero-latency provider: {profile['calls']} calls, "
             f"{profile['daemon_cpu_ms_per_call']:.3f} ms of daemon CPU per call ({profile['user_ms_per_call']:.3f} ms user, "
             f"{profile['system_ms_per_call']:.3f} ms kernel, from /proc). The user time is split by py-spy samples "
             "(`record --format raw --nonblocking --gil`, 200 Hz): each sample goes to the innermost frame of the running "
             "task that matches a category (trio's frames count for their caller). Stacks: `" + _shown_path(profile["file"]) + "`.", "",
             "| part of the path | share of user CPU | ms per call |", "|---|---|---|"]
    for name, value in profile["breakdown"].items():
        share = value["share_of_user"]
        lines.append(f"| {name} | {'-' if share is None else f'{share * 100:.1f}%'} | {value['ms_per_call']:.3f} |")
    return [*lines, ""]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", nargs="*", default=[], help="run only these loads (names as printed)")
    parser.add_argument("--runs", type=int, default=1, help="repeat the loads this many times (--report: 5)")
    parser.add_argument("--profile", help="after the loads, profile the daemon with py-spy into this file (raw stacks)")
    parser.add_argument("--report", action="store_true", help="5 runs and a profile; write docs/performance.md and plots")
    parser.add_argument("--simulator", choices=["h11", "exai"], default="h11", help="h11: scripts/h11sim.py; exai: exai mock-provider")
    parser.add_argument("--transport", choices=["ws", "http", "modern", "both"], default=None,
                        help="how the loads reach the daemon: WebSocket, Streamable HTTP (a legacy session), "
                             "modern Streamable HTTP (2026-07-28), or all of them side by side in one run "
                             "(both: the default with --report; else ws)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the floor: scripts/floor_relay.py, the same libraries with no exai logic")
    parser.add_argument("--render", help="write docs/performance.md again from a saved docs/perf/results.json")
    parser.add_argument("--peer", help="also run the loads through this OpenAI-compatible gateway command (litellm)")
    parser.add_argument("--workflow", action="store_true", help="only the workflow tools' numbers")
    parser.add_argument("--monitor", action="store_true", help="only the monitor's benchmark (same as --only monitor)")
    opts = parser.parse_args()
    if opts.workflow:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
        print(json.dumps(trio.run(workflow, clean), indent=2))
        sys.exit(0)
    if opts.monitor:
        opts.only = [*opts.only, "monitor"]
    opts.transport = opts.transport or ("both" if opts.report else "ws")
    if opts.report:
        opts.runs = max(opts.runs, 5)
        opts.profile = opts.profile or str(ROOT / "docs" / "perf" / "daemon-profile.txt")
        (ROOT / "docs" / "perf").mkdir(parents=True, exist_ok=True)
    if opts.render:
        saved = json.loads(Path(opts.render).read_text())
        for profile in (saved.get("profile"), saved.get("profile_http")):
            if not profile:
                continue
            # The stacks beside results.json, wherever the run was (another checkout, say).
            stacks = Path(profile["file"])
            if not stacks.exists():
                stacks = Path(opts.render).resolve().parent / stacks.name
            if stacks.exists():  # re-split the saved stacks, in case the categories changed
                profile["file"] = str(stacks)
                shares = categorise(stacks.read_text())
                user_ms = profile["user_ms_per_call"]
                kernel = {k: v for k, v in profile["breakdown"].items() if v["share_of_user"] is None}
                profile["breakdown"] = {n: {"share_of_user": v, "ms_per_call": round(v * user_ms, 3)} for n, v in shares.items()} | kernel
        print(write_report(saved, saved["command"], ROOT / "docs"))
        sys.exit(0)
    loadavg_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    result = trio.run(main, opts)
    if opts.report:
        result["command"] = "python " + " ".join(sys.argv)
        result["loadavg_start"] = loadavg_start
        result["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        (ROOT / "docs" / "perf" / "results.json").write_text(json.dumps(result, indent=1))
        print(write_report(result, result["command"], ROOT / "docs"))
    else:
        print(json.dumps(result if opts.runs > 1 else result["runs"][0] | {k: v for k, v in result.items() if k != "runs"}, indent=2))
