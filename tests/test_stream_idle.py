"""Every call streams from the provider, so a silent provider is caught after
EXAI_STREAM_IDLE_SECS whether or not the client asked for progress; progress goes only to a
client that gave a progressToken.

The daemon over real loopback WebSockets, on the simulator over real HTTP. Real time with
short, generous bounds.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from exai.client import ExaiClient, connect

IDLE_S = 0.5


def sim_prompt(text: str, **behaviour: Any) -> str:
    return f"{text}\n#sim {json.dumps(behaviour)}"


async def nothing_unclaimed(client: ExaiClient, wait_s: float = 0.3) -> list[Any]:
    """Every message the client received that no call claimed (progress without a token, say)."""
    stray: list[Any] = []
    with trio.move_on_after(wait_s):
        while True:
            stray.append(await client.receive_raw())
    return stray


async def test_a_stalled_stream_without_progress_token_is_caught_after_stream_idle_secs(
    daemons: Any, simulator: Any
) -> None:
    # The provider timeout is far away: only the idle timer can end these attempts in time.
    bound = await daemons.start(stream_idle_secs=IDLE_S, provider_max_retries=1)
    assert bound.daemon.settings.provider_timeout_secs >= 60
    async with connect(bound.url) as client:
        started = trio.current_time()
        with trio.fail_after(5):
            result = await client.call_tool("chat", {"prompt": sim_prompt("stall", stall_after=1)})
        took = trio.current_time() - started
        assert result.is_error
        assert "stopped sending its answer for 0.5 s (EXAI_STREAM_IDLE_SECS)" in result.text
        assert result.text.endswith("(gave up after 2 attempts)"), result.text
        # Two attempts, each silent for IDLE_S, and at most one backoff (<= 0.5 s) between.
        assert 2 * IDLE_S <= took < 2 * IDLE_S + 0.5 + 1.5, took
        assert simulator.stats.requests_total == 2
        await simulator.wait_until(lambda s: s.aborted == 2)
        assert await nothing_unclaimed(client) == []
        ok = await client.call_tool("chat", {"prompt": "after the stall"})
        assert not ok.is_error, ok.text


async def test_a_provider_hanging_before_its_headers_is_caught_after_stream_idle_secs(
    daemons: Any, simulator: Any
) -> None:
    bound = await daemons.start(stream_idle_secs=IDLE_S, provider_max_retries=0)
    async with connect(bound.url) as client:
        started = trio.current_time()
        with trio.fail_after(5):
            result = await client.call_tool("chat", {"prompt": sim_prompt("hang", hang=True)})
        assert result.is_error, result.text
        assert "EXAI_STREAM_IDLE_SECS" in result.text, result.text
        assert trio.current_time() - started < IDLE_S + 1.5
        assert simulator.stats.requests_total == 1


async def test_progress_goes_only_to_a_client_that_gave_a_token(daemon: Any, simulator: Any) -> None:
    prompt = sim_prompt("a slow answer in many parts", chunks=8, chunk_delay_s=0.1)
    async with connect(daemon.url) as client:
        quiet = await client.call_tool("chat", {"prompt": prompt})
        assert not quiet.is_error, quiet.text
        assert await nothing_unclaimed(client) == []
        progress: list[dict[str, Any]] = []
        loud = await client.call_tool("chat", {"prompt": prompt}, on_progress=progress.append)
        assert not loud.is_error, loud.text
        assert loud.text.replace(loud.meta["continuation_id"], "") == quiet.text.replace(quiet.meta["continuation_id"], "")
        assert progress, "a client with a token got no progress"
        assert all(p["progressToken"] == progress[0]["progressToken"] for p in progress)
        assert await nothing_unclaimed(client) == []
    assert simulator.stats.requests_total == 2
