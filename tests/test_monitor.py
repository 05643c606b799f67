"""The monitor over real HTTP: health, readiness, metrics, status, dashboard."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from exai.client import connect

HANG = '#sim {"hang": true}'


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_health_metrics_and_dashboard(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.text == "ok"
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        before = sample((await http.get("/metrics")).text, "exai_requests_total", tool="chat", outcome="ok")
        async with connect(daemon.url) as client:
            await client.call_tool("chat", {"prompt": "count me"})
        metrics = (await http.get("/metrics")).text
        assert sample(metrics, "exai_requests_total", tool="chat", outcome="ok") == before + 1
        for name in (
            "exai_request_duration_seconds_bucket",
            "exai_inflight_requests",
            "exai_connections",
            'exai_limiter_borrowed{limiter="global"} 0.0',
            "exai_provider_requests_total",
            "exai_provider_latency_seconds",
        ):
            assert name in metrics, name
        page = await http.get("/")
        assert page.status_code == 200 and "/api/status" in page.text
        assert "innerHTML" not in page.text  # client-chosen request ids are shown as text only
        assert (await http.get("/nope")).status_code == 404
        assert (await http.post("/healthz")).status_code == 405


async def test_api_status_shows_calls_limiters_and_providers(daemon: Any, simulator: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http, connect(daemon.url) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.call_tool, "chat", {"prompt": f"x\n{HANG}"})
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 1)
            status = (await http.get("/api/status")).json()
            nursery.cancel_scope.cancel()
    assert status["connections"] == 1
    assert status["inflight"] == 1
    assert status["queued"] == 0
    assert status["uptime_s"] >= 0
    limiters = status["limiters"]
    assert limiters["global"] == {"borrowed": 1, "total": 24, "waiting": 0}
    assert limiters["kimi"]["borrowed"] == 1 and limiters["glm"]["total"] == 4
    sessions = [name for name in limiters if name.startswith("session:")]
    assert len(sessions) == 1 and limiters[sessions[0]]["borrowed"] == 1
    (request,) = status["requests"]
    assert request["tool"] == "chat" and 0 <= request["age_s"] < 2 and 178 < request["deadline_s"] <= 180
    for provider in ("kimi", "glm"):
        assert {"circuit", "inflight", "calls_total", "errors_total"} <= set(status["providers"][provider])
    assert "test-kimi-key" not in str(status)


async def test_readyz_is_503_while_draining(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(shutdown_grace_secs=1.0)
    async with httpx.AsyncClient(base_url=bound.monitor_url) as http, connect(bound.url) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, client)
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 1)
            bound.daemon.request_shutdown()
            await trio.sleep(0.05)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert "draining" in ready.json()["reason"]
            with trio.fail_after(5):
                await bound.daemon.stopped.wait()


async def _hold(client: Any) -> None:
    try:
        await client.call_tool("chat", {"prompt": f"hold\n{HANG}"})
    except Exception:
        pass  # the shutdown ends this call; what it answers is tested elsewhere


async def test_status_tool_returns_the_same_data(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("status", {})
        assert not result.is_error
        assert result.structured["connections"] == 1
        assert "global" in result.structured["limiters"]


def test_healthz_fails_when_the_event_loop_stalls() -> None:
    import time
    from types import SimpleNamespace

    from exai.monitor import HEALTH_STALL_S, route

    stalled = SimpleNamespace(heartbeat=time.monotonic() - HEALTH_STALL_S - 1)
    status, _, body, _ = route(stalled, "GET", "/healthz")
    assert status == 503 and b"unresponsive" in body
    fresh = SimpleNamespace(heartbeat=time.monotonic())
    assert route(fresh, "GET", "/healthz")[0] == 200


async def test_monitor_answers_while_the_loop_is_blocked(daemon: Any) -> None:
    """The monitor has its own thread and loop: a stuck daemon loop does not silence it."""
    import threading
    import time

    answered: list[tuple[float, int]] = []

    def ask() -> None:
        time.sleep(0.1)  # the daemon's loop is blocked by now
        with httpx.Client(base_url=daemon.monitor_url) as http:
            code = http.get("/api/status", timeout=2).status_code
        answered.append((time.monotonic(), code))

    asker = threading.Thread(target=ask)
    asker.start()
    blocked_until = time.monotonic() + 0.8
    time.sleep(0.8)  # noqa: ASYNC251 - blocks the daemon's loop on purpose
    asker.join()
    assert answered and answered[0][1] == 200
    assert answered[0][0] < blocked_until
