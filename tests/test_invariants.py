"""The invariant check itself (`harness.status_leaks`, behind conftest `Daemons.leaks`,
support `assert_quiet_status` and the soak): each thing
it must catch is caught while it is held, and gone once the client has left.

Real daemon, real simulator, real loopback WebSockets; real time with generous bounds.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from harness import status_leaks
from support import eventually

from exai.client import connect

HANG = '#sim {"hang": true}'


async def api_status(monitor_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=monitor_url) as http:
        response = await http.get("/api/status")
        response.raise_for_status()
        status: dict[str, Any] = response.json()
        return status


async def status_leaks_when(monitor_url: str, condition: Any, timeout: float = 5.0) -> list[str]:
    """status_leaks of /api/status once they satisfy `condition` (the status is at most one
    heartbeat old); fail after `timeout` seconds."""
    with trio.fail_after(timeout):
        while True:
            leaks = status_leaks(await api_status(monitor_url))
            if condition(leaks):
                return leaks
            await trio.sleep(0.02)


async def held_then_released(daemons: Any, bound: Any, calls: list[dict[str, Any]], expected: list[str]) -> None:
    """Start `calls` on one connection; once `expected` all show, in-process and in /api/status,
    leave; then nothing shows."""
    found_inside: list[str] = []
    found_outside: list[str] = []
    async with connect(bound.url) as client:
        async with trio.open_nursery() as nursery:
            for arguments in calls:
                nursery.start_soon(client.call_tool, "chat", arguments)
                await trio.sleep(0.05)  # in order: the first holds what the later ones wait for

            def all_seen() -> bool:
                found_inside[:] = daemons.leaks(bound)
                return all(any(what in leak for leak in found_inside) for what in expected)

            await eventually(all_seen, timeout=5, what=f"{expected} in {found_inside}")
            found_outside = await status_leaks_when(bound.monitor_url, bool)
            nursery.cancel_scope.cancel()
    assert any("connections" in leak for leak in found_inside)
    assert found_outside, "the daemon's /api/status showed nothing held"
    await eventually(lambda: not daemons.leaks(bound), timeout=5, what="no leak once the client left")
    assert await status_leaks_when(bound.monitor_url, lambda leaks: not leaks) == []


async def test_it_sees_borrowed_slots_queued_calls_and_limiter_waiters(daemons: Any) -> None:
    bound = await daemons.start(global_max_inflight=1, session_max_inflight=1, max_queued=4)
    hang = {"prompt": f"hold\n{HANG}"}
    expected = ["borrowed", "queued", "waiting on limiters", "calls still alive", "provider requests"]
    await held_then_released(daemons, bound, [hang, {"prompt": "second"}], expected)


async def test_it_sees_a_call_waiting_for_its_request_rate_turn(daemons: Any) -> None:
    bound = await daemons.start(kimi_rpm=1)  # one request a minute: the second call waits 60 s
    calls = [{"prompt": f"first\n{HANG}"}, {"prompt": "second"}]
    await held_then_released(daemons, bound, calls, ["request-rate turn"])


async def test_it_sees_a_circuit_probe_in_flight(daemons: Any) -> None:
    bound = await daemons.start(circuit_failures=1, circuit_cooldown_secs=0.2, provider_max_retries=0)
    async with connect(bound.url) as client:
        failed = await client.call_tool("chat", {"prompt": 'x\n#sim {"status": 503}'})
    assert failed.is_error
    await trio.sleep(0.3)  # the circuit is half-open: the next request is its probe
    await held_then_released(daemons, bound, [{"prompt": f"probe\n{HANG}"}], ["circuit probes"])


def test_status_leaks_names_each_field() -> None:
    quiet = {
        "connections": 0,
        "inflight": 0,
        "queued": 0,
        "requests": [],
        "limiters": {"global": {"borrowed": 0, "total": 8, "waiting": 0}},
        "providers": {
            "kimi": {"circuit": "closed", "inflight": 0, "busy_connections": 0, "rpm_waiting": 0, "probes_inflight": 0}
        },
    }
    assert status_leaks(quiet) == []
    busy = json.loads(json.dumps(quiet))
    busy.update(connections=1, inflight=2, queued=3, requests=[{"id": 1}])
    busy["limiters"]["global"].update(borrowed=2, waiting=1)
    busy["limiters"]["session:c9"] = {"borrowed": 0, "total": 8, "waiting": 0}
    busy["providers"]["kimi"].update(inflight=1, busy_connections=1, rpm_waiting=1, probes_inflight=1)
    text = "; ".join(status_leaks(busy, simulator_inflight=2))
    for what in (
        "borrowed: {'global': 2}",
        "waiting on limiters: {'global': 1}",
        "inflight is 2",
        "queued is 3",
        "connections is 1",
        "calls still alive",
        "session limiters left: ['session:c9']",
        "kimi: provider requests still open: 1",
        "kimi: provider connections still busy: 1",
        "kimi: calls still waiting for a request-rate turn: 1",
        "kimi: circuit probes still in flight: 1",
        "the simulator still has 2 request(s) in flight",
    ):
        assert what in text, what
