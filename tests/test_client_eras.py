"""The client library's protocol eras against the real daemon: MCP 2026-07-28 by default on
WebSocket and Streamable HTTP, legacy on request, the fall-back to `initialize` when the
daemon is older, and a raw client's (the bridge's) messages each sent as its era requires.

Rules: loopback only, port 0, the real daemon on the real simulator; real time with short,
generous bounds. An "older daemon" is this one with the modern era switched off at its two
edges (every request taken as legacy), which answers as the legacy-only exai did.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import trio

from exai import eras, session
from exai.client import ExaiClient, connect
from exai.transports.http import app as http_app

HANG = '#sim {"hang": true}'
STREAM = 'stream\n#sim {"chunks": 6, "chunk_delay_s": 0.1}'


@pytest.fixture
def older_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon as it was before the modern era: every request is legacy."""
    monkeypatch.setattr(session, "era_of", lambda request: eras.LEGACY)
    monkeypatch.setattr(http_app, "is_modern_post", lambda message, headers: False)


async def call_progress_cancel(client: ExaiClient, simulator: Any) -> None:
    progress: list[dict[str, Any]] = []
    result = await client.call_tool("chat", {"prompt": STREAM}, on_progress=progress.append)
    assert result.is_error is False and len(progress) >= 2
    aborted = simulator.stats.aborted
    with trio.move_on_after(5) as waited:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.call_tool, "chat", {"prompt": f"x\n{HANG}"})
            await simulator.wait_until(lambda s: s.inflight == 1)
            nursery.cancel_scope.cancel()
    assert not waited.cancelled_caught
    cancelled = trio.current_time()
    with trio.fail_after(1):
        await simulator.wait_until(lambda s: s.aborted == aborted + 1)
    assert trio.current_time() - cancelled < 0.2


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_connect_speaks_modern_by_default(daemon: Any, simulator: Any, transport: str) -> None:
    url = daemon.url if transport == "ws" else daemon.http_url
    async with connect(url) as client:
        assert client.protocol_version == "2026-07-28"
        assert client.server_info["name"] == "exai" and client.session_id is None
        assert client.capabilities["tools"] == {"listChanged": True}
        assert "chat" in {tool["name"] for tool in await client.list_tools()}
        await client.ping()  # server/discover: the modern revision has no ping
        await call_progress_cancel(client, simulator)
        if transport == "http":
            assert len(daemon.daemon.connections) == 0  # no session was ever minted


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_legacy_on_request(daemon: Any, simulator: Any, transport: str) -> None:
    url = daemon.url if transport == "ws" else daemon.http_url
    async with connect(url, era="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        assert (client.session_id is not None) is (transport == "http")
        await client.ping()
        await call_progress_cancel(client, simulator)


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_an_older_daemon_gets_initialize_after_the_probe(
    daemon: Any, simulator: Any, older_daemon: None, transport: str, log_lines: list[str]
) -> None:
    url = daemon.url if transport == "ws" else daemon.http_url
    async with connect(url) as client:
        assert client.protocol_version == "2025-11-25"
        assert (client.session_id is not None) is (transport == "http")
        await call_progress_cancel(client, simulator)
    assert any("falling back to initialize" in line for line in log_lines)


async def test_modern_only_refuses_an_older_daemon(daemon: Any, older_daemon: None) -> None:
    from exai.client import RpcError

    with pytest.raises(RpcError) as refused:
        async with connect(daemon.url, era="modern"):
            pass
    assert refused.value.code == -32600  # "server/discover before initialize": the older daemon's word


async def test_a_raw_client_over_http_sends_each_message_as_its_era_needs(daemon: Any, simulator: Any) -> None:
    """The bridge's case: a stdio client's own messages, modern and legacy, through one client."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    async with connect(daemon.http_url, initialize=False) as client:
        call = {"jsonrpc": "2.0", "id": "m1", "method": "tools/call",
                "params": {"name": "version", "arguments": {}, "_meta": meta}}
        await client.send_raw(json.dumps(call))
        with trio.fail_after(5):
            answer = await client.receive_raw()
        assert answer["id"] == "m1" and answer["result"]["resultType"] == "complete"
        held = {**call, "id": "m2", "params": {**call["params"], "name": "chat", "arguments": {"prompt": f"x\n{HANG}"}}}
        await client.send_raw(json.dumps(held))
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
        await client.send_raw(json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "m2"}}))
        with trio.fail_after(1):  # its stream closed: the modern cancel
            await simulator.wait_until(lambda s: s.aborted == 1)
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
        await client.send_raw(json.dumps(init))
        with trio.fail_after(5):
            legacy = await client.receive_raw()
        assert legacy["result"]["protocolVersion"] == "2025-11-25" and client.session_id is not None


async def test_the_python_sdk_through_exai_stdio_to_streamable_http_is_modern(daemon: Any, simulator: Any) -> None:
    from mcp import Client, StdioServerParameters

    server = StdioServerParameters(
        command=sys.executable, args=["-c", "from exai.cli import main; main()", "stdio", "--url", daemon.http_url]
    )
    async with Client(server) as client:
        assert client.protocol_version == "2026-07-28"
        assert (await client.call_tool("version", {})).is_error is False


async def test_a_name_that_is_no_plain_header_value_travels_base64(daemon: Any) -> None:
    """The client encodes Mcp-Name as `=?base64?...?=`, the daemon decodes it before comparing:
    the request passes the header check and meets the ordinary unknown-tool error."""
    from exai.client import RpcError, modern_routing

    assert modern_routing({"method": "tools/call", "params": {"name": "chät"}}, "2026-07-28")["Mcp-Name"] == (
        "=?base64?Y2jDpHQ=?="
    )
    assert modern_routing({"method": "tools/call", "params": {"name": " x"}}, "v")["Mcp-Name"].startswith("=?base64?")
    assert modern_routing({"method": "tools/call", "params": {"name": "chat"}}, "v")["Mcp-Name"] == "chat"
    async with connect(daemon.http_url) as client:
        with pytest.raises(RpcError) as unknown:
            await client.call_tool("chät", {})
    assert unknown.value.code == -32602 and "Unknown tool: chät" in unknown.value.message
