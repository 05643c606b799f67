"""Streamable HTTP vs WebSocket: one `chat` call at a time, interleaved, against a zero-latency
simulator. Prints one JSON object (p50/p99 of each and HTTP's added p50). A quick check until
`scripts/bench.py --transport http` covers it.

    python scripts/http_latency.py [--calls N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import trio

from exai.client import connect
from exai.providers.simulator import serve_simulator

EXAI = [sys.executable, "-c", "from exai.cli import main; main()"]
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(calls: int) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(serve_simulator, "127.0.0.1", 0)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
        env.update(
            KIMI_API_KEY="bench", KIMI_BASE_URL=sim.url, GLM_API_KEY="bench", GLM_BASE_URL=sim.url,
            EXAI_DEFAULT_MODEL="kimi-k2-0905-preview", EXAI_PORT="0", EXAI_MONITOR_PORT="0",
            EXAI_HTTP_PORT="0", EXAI_LOG_LEVEL="WARNING", EXAI_STATE_DIR=f"/tmp/exai-httplat-{os.getpid()}",
        )
        process = await trio.lowlevel.open_process([*EXAI, "serve"], env=env, stdout=subprocess.PIPE)
        try:
            assert process.stdout is not None
            seen = b""
            while b"exai http on" not in seen:
                seen += await process.stdout.receive_some()
            ws_url = re.search(rb"exai listening on (\S+)", seen).group(1).decode()  # type: ignore[union-attr]
            http_url = re.search(rb"exai http on (\S+)", seen).group(1).decode()  # type: ignore[union-attr]
            ws_times, http_times = [], []
            async with connect(ws_url) as ws, httpx.AsyncClient(timeout=30) as http:
                init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                        "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}
                session = (await http.post(http_url, json=init, headers=HEADERS)).headers["mcp-session-id"]
                headers = {**HEADERS, "Mcp-Session-Id": session}

                async def http_call(n: int) -> float:
                    started = trio.current_time()
                    body = {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                            "params": {"name": "chat", "arguments": {"prompt": "benchmark"}}}
                    response = await http.post(http_url, json=body, headers=headers)
                    assert '"isError":false' in response.text, response.text
                    return trio.current_time() - started

                async def ws_call() -> float:
                    started = trio.current_time()
                    result = await ws.call_tool("chat", {"prompt": "benchmark"})
                    assert not result.is_error, result.text
                    return trio.current_time() - started

                for n in range(20):  # warm up both paths
                    await ws_call()
                    await http_call(n + 1)
                for n in range(calls):
                    ws_times.append(await ws_call())
                    http_times.append(await http_call(1000 + n))
                await http.delete(http_url, headers=headers)
        finally:
            process.terminate()
            await process.wait()
            nursery.cancel_scope.cancel()
    return {
        "calls": calls,
        "ws_p50_ms": round(pct(ws_times, 0.5) * 1000, 3),
        "ws_p99_ms": round(pct(ws_times, 0.99) * 1000, 3),
        "http_p50_ms": round(pct(http_times, 0.5) * 1000, 3),
        "http_p99_ms": round(pct(http_times, 0.99) * 1000, 3),
        "http_added_p50_ms": round((pct(http_times, 0.5) - pct(ws_times, 0.5)) * 1000, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    print(json.dumps(trio.run(main, parser.parse_args().calls)))
