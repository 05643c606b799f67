"""The official SDKs, speaking MCP 2026-07-28 to exai: Python `mcp` 2.x over Streamable HTTP
and over `exai stdio`, TypeScript `@modelcontextprotocol/client` 2.x over Streamable HTTP.

Rules: loopback only, port 0, the real daemon on the real simulator, real time with short,
generous bounds. Each asserts the negotiated version, not just a working call. The Node test
runs the client installed in tests/node by `.ci/run` (npm ci); it is skipped only when there
is no node on the machine.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

MODERN = "2026-07-28"
HANG = '#sim {"hang": true}'
NODE_DIR = Path(__file__).parent / "node"


async def list_call_progress_cancel(client: Any, simulator: Any) -> None:
    """What both Python tests ask of the SDK's client once it is connected."""
    assert client.protocol_version == MODERN
    assert client.server_info is not None and client.server_info.name == "exai"
    tools = [tool.name for tool in (await client.list_tools()).tools]
    assert {"chat", "version", "status"} <= set(tools)
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    prompt = 'stream\n#sim {"chunks": 6, "chunk_delay_s": 0.1}'
    result = await client.call_tool("chat", {"prompt": prompt}, progress_callback=on_progress)
    assert result.is_error is False
    assert len(progress) >= 2 and progress == sorted(set(progress))

    aborted = simulator.stats.aborted
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.call_tool, "chat", {"prompt": f"x\n{HANG}"})
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 1)
            scope.cancel()
    cancelled = trio.current_time()
    with trio.fail_after(1):
        await simulator.wait_until(lambda s: s.aborted == aborted + 1)
    assert trio.current_time() - cancelled < 0.2
    assert (await client.call_tool("version", {})).is_error is False


# The SDK leaves its SSE iterators for the garbage collector once a response is complete;
# under trio that is a ResourceWarning from the client library, not from the server.
@pytest.mark.filterwarnings("ignore:Async generator 'httpx2.:ResourceWarning")
@pytest.mark.filterwarnings("ignore:Async generator 'httpcore2.:ResourceWarning")
async def test_python_sdk_over_streamable_http_is_modern(daemon: Any, simulator: Any) -> None:
    from mcp import Client

    async with Client(daemon.http_url) as client:
        await list_call_progress_cancel(client, simulator)
        assert len(daemon.daemon.connections) == 0  # no session was minted


async def test_python_sdk_over_exai_stdio_is_modern(daemon: Any, simulator: Any) -> None:
    from mcp import Client, StdioServerParameters

    server = StdioServerParameters(
        command=sys.executable, args=["-c", "from exai.cli import main; main()", "stdio", "--url", daemon.url]
    )
    async with Client(server) as client:
        await list_call_progress_cancel(client, simulator)


@pytest.mark.skipif(shutil.which("node") is None, reason="no node on this machine")
async def test_typescript_sdk_over_streamable_http_is_modern(daemon: Any, simulator: Any) -> None:
    assert (NODE_DIR / "node_modules" / "@modelcontextprotocol" / "client").is_dir(), (
        "the TypeScript SDK is not installed: run `npm ci --prefix tests/node` (.ci/run does)"
    )
    done = await trio.run_process(
        ["node", str(NODE_DIR / "modern_client.mjs"), daemon.http_url, f"{daemon.monitor_url}/api/status"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert report["era"] == "modern"
    assert report["version"] == MODERN
    assert {"chat", "version"} <= set(report["tools"])
    assert report["progress"] >= 2 and report["isError"] is False
    assert report["cancelled"] is True
    with trio.fail_after(2):
        await simulator.wait_until(lambda s: s.aborted >= 1 and s.inflight == 0)
