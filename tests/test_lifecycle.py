"""Request lifecycles under stress: the 2025-10-31 cascade, concurrency, shutdown.

Real loopback sockets and real time with generous bounds.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio
from support import eventually
from trio_websocket import ConnectionClosed

from exai.client import ConnectionLost, RpcError
from exai.client import connect as connect_any_era

HANG = '#sim {"hang": true}'

# These are the legacy revisions' rules (contract sections 3 and 3b, unchanged beside the
# modern era): raw frames here are legacy frames, so the client speaks legacy too.
connect = partial(connect_any_era, era="legacy")


@pytest.mark.parametrize(
    "streaming, then",
    [(False, {"hang": True}), (True, {"stall_after": 1, "chunks": 5})],
    ids=["hang", "stalled-stream"],
)
async def test_cascade_replayed_429_then_hang_then_disconnect(
    daemon: Any, simulator: Any, log_lines: list[str], streaming: bool, then: dict[str, Any]
) -> None:
    """429 with Retry-After, then a hang (or a stalled stream), then the client leaves: nothing outlives it."""
    behaviour = {"status": 429, "fail_times": 1, "retry_after": "1", **then}
    prompt = f"cascade\n#sim {json.dumps(behaviour)}"
    progress: list[Any] = []

    async def doomed(client: Any) -> None:
        with pytest.raises(ConnectionLost):
            on_progress = progress.append if streaming else None
            await client.call_tool("chat", {"prompt": prompt}, on_progress=on_progress)

    async with connect(daemon.url) as client, trio.open_nursery() as nursery:
        nursery.start_soon(doomed, client)
        with trio.fail_after(5):
            await simulator.wait_until(lambda s: s.requests_total == 2 and s.inflight == 1)
        if streaming:
            await eventually(lambda: bool(progress), what="the first streamed chunk")
        disconnected_at = trio.current_time()
        await client.close_abruptly()
    with trio.fail_after(1):
        await simulator.wait_until(lambda s: s.aborted == 1)
    assert simulator.stats.last_abort_at - disconnected_at <= 0.1
    await eventually(lambda: not daemon.daemon.limits.borrowed_total() and not len(daemon.daemon.calls), 1)
    await trio.sleep(0.2)
    assert simulator.stats.requests_total == 2, "an attempt was made after the client left"
    async with connect(daemon.url) as client:
        with trio.fail_after(1):
            result = await client.call_tool("chat", {"prompt": "a new call"})
        assert not result.is_error
    gone = [line for line in log_lines if "client gone" in line]
    assert len(gone) == 1, gone
    assert bool(progress) == streaming  # the stalled stream had begun before the client left


async def test_fifty_calls_on_one_connection(daemon: Any, simulator: Any) -> None:
    settings = daemon.daemon.settings
    peak_session = 0
    results: list[Any] = []

    async def one(i: int) -> None:
        prompt = f'call {i}\n#sim {{"latency_s": 0.1}}'
        results.append(await client.call_tool("chat", {"prompt": prompt}))

    async def sample() -> None:
        nonlocal peak_session
        while True:
            for name, stats in daemon.daemon.limits.statistics().items():
                if name.startswith("session:"):
                    peak_session = max(peak_session, stats["borrowed"])
            await trio.sleep(0.005)

    async with connect(daemon.url) as client:
        with trio.fail_after(20):
            async with trio.open_nursery() as sampler:
                sampler.start_soon(sample)
                async with trio.open_nursery() as nursery:
                    for i in range(50):
                        nursery.start_soon(one, i)
                sampler.cancel_scope.cancel()
    assert len(results) == 50 and not any(r.is_error for r in results)
    assert simulator.stats.max_inflight == settings.kimi_max_inflight
    assert peak_session == settings.session_max_inflight


async def test_responses_come_in_completion_order(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        finished: list[str] = []

        async def one(name: str, latency: float) -> None:
            await client.call_tool("chat", {"prompt": f'{name}\n#sim {{"latency_s": {latency}}}'})
            finished.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "slow", 0.5)
            await trio.sleep(0.05)
            nursery.start_soon(one, "fast", 0.0)
        assert finished == ["fast", "slow"]


async def test_abrupt_disconnect_cancels_every_call_of_the_connection(
    daemon: Any, simulator: Any, log_lines: list[str]
) -> None:
    async with connect(daemon.url) as client:
        for i in range(5):
            await client.send_raw(
                json.dumps(
                    {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                     "params": {"name": "chat", "arguments": {"prompt": f"{i}\n{HANG}"}}}
                )
            )
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 5)
        await client.close_abruptly()
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 5 and s.inflight == 0)
    assert len([line for line in log_lines if "client gone" in line]) == 1


async def test_shutdown_lets_calls_finish_within_grace(daemons: Any) -> None:
    bound = await daemons.start(shutdown_grace_secs=2.0)
    async with connect(bound.url) as client:
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def one() -> None:
                results.append(await client.call_tool("chat", {"prompt": 'x\n#sim {"latency_s": 0.3}'}))

            for _ in range(3):
                nursery.start_soon(one)
            await eventually(lambda: len(bound.daemon.calls) == 3)
            started = trio.current_time()
            bound.daemon.request_shutdown()
        assert len(results) == 3 and not any(r.is_error for r in results)
        with trio.fail_after(3):
            await bound.daemon.stopped.wait()
        assert trio.current_time() - started < 2.0


async def test_shutdown_cancels_calls_past_grace_and_closes_with_1001(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(shutdown_grace_secs=0.5)
    async with connect(bound.url) as client:
        async with trio.open_nursery() as nursery:
            errors: list[Any] = []

            async def one() -> None:
                try:
                    await client.call_tool("chat", {"prompt": f"x\n{HANG}"})
                except (RpcError, ConnectionLost) as exc:
                    errors.append(exc)

            nursery.start_soon(one)
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 1)
            started = trio.current_time()
            bound.daemon.request_shutdown()
            with trio.fail_after(3):
                await bound.daemon.stopped.wait()
        took = trio.current_time() - started
        assert 0.5 <= took < 1.5
        assert simulator.stats.aborted == 1
        assert errors and isinstance(errors[0], RpcError)
        assert "shutting down" in errors[0].message
        with pytest.raises((ConnectionLost, ConnectionClosed)) as lost:
            await client.ping()
        assert "1001" in str(lost.value)


async def test_a_busy_connection_cannot_starve_another(daemons: Any, simulator: Any) -> None:
    """Calls queued behind their own session limit hold no global slot."""
    bound = await daemons.start(global_max_inflight=3, session_max_inflight=2)
    async with connect(bound.url) as busy, connect(bound.url) as other, trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(_hang_until_cancelled, busy, i)
        await eventually(lambda: bound.daemon.limits.queued == 4)
        assert bound.daemon.limits.global_slots.borrowed_tokens == 2
        with trio.fail_after(2):
            result = await other.call_tool("chat", {"prompt": "my turn"})
        assert not result.is_error
        nursery.cancel_scope.cancel()


async def _hang_until_cancelled(client: Any, i: int) -> None:
    await client.call_tool("chat", {"prompt": f"{i}\n{HANG}"})
