"""exai benchmark: prints one JSON object of numbers (no pass/fail; targets live in issue notes).

Three processes on loopback: the simulator (`exai mock-provider`), the daemon (`exai serve`),
and this driver. A second simulator runs inside this driver, behind the GLM provider, so that
disconnect-to-abort is timed on one clock.

    python scripts/bench.py            # full run, about a minute
    python scripts/bench.py --quick    # a smoke run, a few seconds
    python scripts/bench.py --workflow # the workflow tools: the seed replayed, consensus, tools/list
    python scripts/bench.py --monitor  # only the monitor: answer times, a dashboard's CPU
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
from httpx_sse import aconnect_sse

from exai.client import ExaiClient, RpcError, connect
from exai.config import Settings
from exai.providers.simulator import Simulator, serve_simulator
from exai.providers.transport import TrioH11Transport
from exai.store import read_thread

EXAI = [sys.executable, "-c", "from exai.cli import main; main()"]
MESSAGES = [{"role": "user", "content": "benchmark"}]


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


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def read_line_matching(stream: Any, pattern: bytes) -> re.Match[bytes]:
    buffer = b""
    while True:
        match = re.search(pattern, buffer)
        if match:
            return match
        chunk = await stream.receive_some()
        if not chunk:
            raise RuntimeError(f"process exited before printing {pattern!r}: {buffer!r}")
        buffer += chunk


class Bench:
    monitor_url: str
    fresh_daemon: Callable[[], Any]

    def __init__(self, sim_url: str, daemon_url: str, local_sim: Simulator, daemon_pid: int):
        self.sim_url = sim_url
        self.daemon_url = daemon_url
        self.local_sim = local_sim
        self.daemon_pid = daemon_pid
        # The direct baseline uses the daemon's own transport, so the difference is the daemon.
        self.http = httpx.AsyncClient(
            transport=TrioH11Transport(max_keepalive=256),
            base_url=sim_url,
            headers={"Authorization": "Bearer bench"},
            timeout=30,
        )

    async def sim_config(self, **behaviour: Any) -> None:
        admin = self.sim_url.rsplit("/v1", 1)[0]
        response = await self.http.post(f"{admin}/_sim/config", json=behaviour)
        response.raise_for_status()

    async def direct_call(self) -> float:
        started = trio.current_time()
        body = {"model": "kimi-k2-0905-preview", "messages": MESSAGES}
        response = await self.http.post("/chat/completions", json=body)
        response.raise_for_status()
        response.json()
        return trio.current_time() - started

    async def daemon_call(self, client: ExaiClient) -> float:
        started = trio.current_time()
        result = await client.call_tool("chat", {"prompt": "benchmark"})
        if result.is_error:
            raise RuntimeError(result.text)
        return trio.current_time() - started

    async def sequential(self, n: int) -> dict[str, Any]:
        """One call at a time: daemon latency minus direct latency, interleaved."""
        await self.sim_config(latency_s=0)
        direct, through = [], []
        async with connect(self.daemon_url) as client:
            for _ in range(20):  # warm up both paths
                await self.direct_call()
                await self.daemon_call(client)
            for _ in range(n):
                direct.append(await self.direct_call())
                through.append(await self.daemon_call(client))
        return {"calls": n, **compared(direct, through)}

    async def open_loop(self, rate: float, seconds: float, latency: float, connections: int) -> dict[str, Any]:
        """Calls start on schedule whatever the daemon is doing; the same schedule direct."""
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
        async with trio.open_nursery() as opener:
            clients: list[ExaiClient] = []
            ready = trio.Event()
            done = trio.Event()

            async def hold() -> None:
                async with connect(self.daemon_url) as client:
                    clients.append(client)
                    if len(clients) == connections:
                        ready.set()
                    await done.wait()

            for _ in range(connections):
                opener.start_soon(hold)
            await ready.wait()
            through = await schedule(lambda i: self.daemon_call(clients[i % connections]))
            done.set()
        return {
            "rate_per_s": rate,
            "calls": n,
            "provider_latency_ms": ms(latency),
            **compared(direct, through),
        }

    async def throughput(self, inflight: int, seconds: float, connections: int) -> dict[str, Any]:
        """Closed loop against a zero-latency simulator; the monitor is polled meanwhile."""
        await self.sim_config(latency_s=0)
        count = 0
        errors = 0
        monitor_latency: list[float] = []
        async with trio.open_nursery() as nursery:
            deadline = trio.current_time() + seconds

            async def poll_monitor() -> None:
                async with httpx.AsyncClient(transport=TrioH11Transport()) as http:
                    await trio.sleep(0.5)
                    while trio.current_time() < deadline:
                        started = trio.current_time()
                        (await http.get(f"{self.monitor_url}/api/status")).raise_for_status()
                        monitor_latency.append(trio.current_time() - started)
                        await trio.sleep(0.1)

            nursery.start_soon(poll_monitor)

            async def worker(client: ExaiClient) -> None:
                nonlocal count, errors
                while trio.current_time() < deadline:
                    try:
                        await self.daemon_call(client)
                        count += 1
                    except Exception:
                        errors += 1

            async def conn(workers: int) -> None:
                async with connect(self.daemon_url) as client, trio.open_nursery() as inner:
                    for _ in range(workers):
                        inner.start_soon(worker, client)

            for i in range(connections):
                nursery.start_soon(conn, inflight // connections + (1 if i < inflight % connections else 0))
        return {"inflight": inflight, "seconds": seconds, "calls": count, "errors": errors,
                "calls_per_s": round(count / seconds, 1),
                "monitor_status_p50_ms": ms(pct(monitor_latency, 0.5)),
                "monitor_status_max_ms": ms(max(monitor_latency))}

    async def first_chunk(self, n: int) -> dict[str, Any]:
        """Streaming: first progress notification through the daemon vs first SSE chunk direct."""
        await self.sim_config(latency_s=0, chunks=5, chunk_delay_s=0.02)
        direct, through = [], []
        body = {"model": "kimi-k2-0905-preview", "messages": MESSAGES, "stream": True}
        async with connect(self.daemon_url) as client:
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
                through.append(seen[0])
        direct, through = direct[10:], through[10:]
        await self.sim_config(latency_s=0)
        # direct: the first SSE chunk; daemon: the first progress notification.
        return {"calls": n, **compared(direct, through, added="overhead")}

    async def storm(self, inflight: int, seconds: float, timeout: float) -> dict[str, Any]:
        """The simulator refuses half the attempts with 429 + Retry-After: 1."""
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
        await self.sim_config(latency_s=0)
        return {
            "inflight": inflight, "seconds": seconds, "call_timeout_s": timeout,
            "ok_per_s": round(ok / seconds, 1), "ok": ok, "tool_errors": tool_errors,
            "timeouts": timeouts, "other_errors": other,
            "worst_deadline_overrun_ms": ms(max(0.0, overrun)),
        }

    async def disconnect_to_abort(self, n: int) -> dict[str, Any]:
        """A call hangs at the (in-process) provider; the client drops; time until the abort."""
        sim = self.local_sim
        gaps = []
        for i in range(n):
            aborted = sim.stats.aborted
            async with connect(self.daemon_url) as client, trio.open_nursery() as nursery:

                async def doomed(i: int = i) -> None:
                    try:
                        await client.call_tool("chat", {"prompt": f'{i}\n#sim {{"hang": true}}', "model": "glm-4.5-flash"})
                    except Exception:
                        pass

                nursery.start_soon(doomed)
                with trio.fail_after(5):
                    await sim.wait_until(lambda s, target=aborted: s.inflight == 1)
                dropped = trio.current_time()
                await client.close_abruptly()
                with trio.fail_after(5):
                    await sim.wait_until(lambda s, target=aborted: s.aborted > target)
                assert sim.stats.last_abort_at is not None
                gaps.append(sim.stats.last_abort_at - dropped)
        return {"runs": n, "p50_ms": ms(pct(gaps, 0.5)), "p99_ms": ms(pct(gaps, 0.99)), "max_ms": ms(max(gaps))}

    async def memory(self, idle: int, inflight: int) -> dict[str, Any]:
        """RSS growth per idle connection and per in-flight call, each on a fresh daemon."""
        async with self.fresh_daemon() as (url, _monitor, pid):
            base = rss_kib(pid)
            async with trio.open_nursery() as nursery:
                done = trio.Event()
                all_open = trio.Event()
                opened = 0

                async def hold() -> None:
                    nonlocal opened
                    async with connect(url):
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
        async with self.fresh_daemon() as (url, _monitor, pid):
            async with connect(url) as client:
                await client.call_tool("version", {})
                base_calls = rss_kib(pid)
                async with trio.open_nursery() as nursery:

                    async def hanging(i: int) -> None:
                        try:
                            await client.call_tool("chat", {"prompt": f"hold {i}"})
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
        await self.sim_config(latency_s=0)
        return {
            "idle_connections": idle,
            "rss_per_idle_connection_kib": round((with_idle - base) / idle, 2),
            "inflight_calls": inflight,
            "rss_base_mib": round(base_calls / 1024, 1),
            "rss_with_inflight_mib": round(with_calls / 1024, 1),
            "rss_per_inflight_call_kib": round((with_calls - base_calls) / inflight, 2),
        }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


@asynccontextmanager
async def daemon_process(env: dict[str, str]) -> AsyncIterator[tuple[str, str, int]]:
    """`exai serve` in a child process: (ws url, monitor url, pid); SIGTERM on exit."""
    daemon = await trio.lowlevel.open_process([*EXAI, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        found = await read_line_matching(daemon.stdout, rb"listening on (ws://\S+)\s+exai monitor on (http://\S+)")
        yield found.group(1).decode(), found.group(2).decode(), daemon.pid
    finally:
        await stop(daemon, signal.SIGTERM, grace=15)


async def stop(process: trio.Process, signum: int, *, grace: float) -> None:
    """Signal a child, give it `grace` seconds to exit, then kill it."""
    process.send_signal(signum)
    with trio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        process.kill()


async def main(quick: bool, only: list[str], profile: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
    async with trio.open_nursery() as nursery:
        local_sim: Simulator = await nursery.start(serve_simulator, "127.0.0.1", 0)
        sim = await trio.lowlevel.open_process(
            [*EXAI, "mock-provider", "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        try:
            sim_url = (await read_line_matching(sim.stdout, rb"(http://127\.0\.0\.1:\d+/v1)")).group(1).decode()
            limit = "2000"
            daemon_env = {
                **env,
                "KIMI_API_KEY": "bench", "KIMI_BASE_URL": sim_url,
                "GLM_API_KEY": "bench", "GLM_BASE_URL": local_sim.url,
                "EXAI_DEFAULT_MODEL": "kimi-k2-0905-preview",
                "EXAI_PORT": "0", "EXAI_MONITOR_PORT": "0",
                "EXAI_GLOBAL_MAX_INFLIGHT": limit, "EXAI_SESSION_MAX_INFLIGHT": limit,
                "EXAI_KIMI_MAX_INFLIGHT": limit, "EXAI_GLM_MAX_INFLIGHT": "64",
                "EXAI_MAX_CONNECTIONS": "5000", "EXAI_MAX_QUEUED": "5000",
                "EXAI_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
                "EXAI_STATE_DIR": os.path.join(os.environ.get("TMPDIR", "/tmp"), f"exai-bench-{os.getpid()}"),
            }
            async with daemon_process(daemon_env) as (url, monitor_url, pid):
                bench = Bench(sim_url, url, local_sim, pid)
                bench.monitor_url = monitor_url
                bench.fresh_daemon = lambda: daemon_process(daemon_env)
                scale = 0.2 if quick else 1.0
                runs: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
                    "sequential": lambda: bench.sequential(int(500 * scale)),
                    "open_loop_300_per_s": lambda: bench.open_loop(300, 5 * scale, 0.2, 8),
                    "throughput": lambda: bench.throughput(64, 5 * scale, 8),
                    "streaming_first_chunk": lambda: bench.first_chunk(int(200 * scale)),
                    "storm_429_half": lambda: bench.storm(32, 8 * scale, 3.0),
                    "disconnect_to_abort": lambda: bench.disconnect_to_abort(int(100 * scale)),
                    "memory": lambda: bench.memory(int(1000 * scale), int(1000 * scale)),
                    "monitor": lambda: monitor_bench(bench, scale),
                }
                profiler = None
                if profile:
                    profiler = await trio.lowlevel.open_process(
                        ["py-spy", "record", "--pid", str(pid), "--format", "raw", "-o", profile],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
                results: dict[str, Any] = {}
                for name, run in runs.items():
                    if not only or name in only:
                        results[name] = await run()
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    await profiler.wait()
                await bench.http.aclose()
                return results
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
            "EXAI_STATE_DIR": state_dir,
        }
        async with daemon_process(daemon_env) as (url, _, _), connect(url) as client:
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", nargs="*", default=[], help="run only these (names as printed)")
    parser.add_argument("--profile", help="record the daemon with py-spy (raw format) into this file")
    parser.add_argument("--workflow", action="store_true", help="only the workflow tools' numbers")
    parser.add_argument("--monitor", action="store_true", help="only the monitor's benchmark (same as --only monitor)")
    opts = parser.parse_args()
    if opts.workflow:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
        print(json.dumps(trio.run(workflow, clean), indent=2))
    else:
        only = [*opts.only, "monitor"] if opts.monitor else opts.only
        print(json.dumps(trio.run(main, opts.quick, only, opts.profile), indent=2))
