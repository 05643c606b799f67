"""Connection slots are fair (contract 3b, last rule): at EXAI_MAX_CONNECTIONS a newcomer, a
WebSocket connection or a legacy `initialize`, ends the longest-idle Streamable HTTP session
that has no call in flight and no open stream; only when every slot is busy is it refused.

Rules: loopback only, port 0, the real daemon on the real simulator, real time with short,
generous bounds.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from support import eventually, raw_handshake
from test_http import HANG, McpHttp, call, request
from trio_websocket import open_websocket_url

CAP = 3


async def initialized(http: httpx.AsyncClient, url: str) -> McpHttp:
    client = McpHttp(http, url)
    await client.initialize()
    return client


async def ws_works(url: str) -> None:
    async with open_websocket_url(url) as ws:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
        await ws.send_message(json.dumps(init))
        with trio.fail_after(5):
            assert json.loads(await ws.get_message())["result"]["protocolVersion"] == "2025-11-25"


async def test_a_flood_of_newcomers_takes_the_slots_of_abandoned_sessions(daemons: Any) -> None:
    bound = await daemons.start(max_connections=CAP)
    daemon = bound.daemon
    async with httpx.AsyncClient(timeout=10) as http:
        abandoned = [await initialized(http, bound.http_url) for _ in range(CAP)]
        newcomers: list[McpHttp] = []
        for n in range(4 * CAP):  # walked away from, like mcp-remote does: never a DELETE
            if n % 2:
                await ws_works(bound.url)
            else:
                newcomers.append(await initialized(http, bound.http_url))
            assert daemon.connection_slots.borrowed_tokens <= CAP
        for client in abandoned:  # each was ended to make room; its next request says so
            gone = await client.post(request(9, "ping"))
            assert gone.status_code == 404, gone.text
        assert daemon.connection_slots.borrowed_tokens <= CAP
        statuses = [(await client.delete()).status_code for client in newcomers]
        assert statuses.count(204) >= 1 and set(statuses) <= {204, 404}  # the evicted ones are gone
    await eventually(lambda: len(daemon.connections) == 0, what="the sessions ended")


async def test_the_longest_idle_session_goes_first(daemons: Any) -> None:
    bound = await daemons.start(max_connections=2)
    async with httpx.AsyncClient(timeout=10) as http:
        oldest = await initialized(http, bound.http_url)
        recent = await initialized(http, bound.http_url)
        await trio.sleep(0.05)
        assert (await recent.rpc(request(1, "ping")))["result"] == {}  # recent is now the less idle
        newcomer = await initialized(http, bound.http_url)
        assert (await oldest.post(request(2, "ping"))).status_code == 404
        assert (await recent.rpc(request(3, "ping")))["result"] == {}
        for client in (recent, newcomer):
            assert (await client.delete()).status_code == 204


async def test_busy_sessions_and_websockets_keep_their_slots(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(max_connections=CAP)
    async with httpx.AsyncClient(timeout=10) as http, trio.open_nursery() as nursery:
        calling = await initialized(http, bound.http_url)
        nursery.start_soon(calling.post, call("held", "chat", {"prompt": f"hold\n{HANG}"}))
        streaming = await initialized(http, bound.http_url)
        opened, release = trio.Event(), trio.Event()

        async def hold_get_stream() -> None:
            async with http.stream("GET", bound.http_url, headers=streaming.headers()) as response:
                assert response.status_code == 200
                opened.set()
                await release.wait()

        nursery.start_soon(hold_get_stream)
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
            await opened.wait()
        async with open_websocket_url(bound.url):
            refused = await McpHttp(http, bound.http_url).post(
                request(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
            )
            assert refused.status_code == 503
            assert "EXAI_MAX_CONNECTIONS=3" in refused.json()["error"]["message"]
            assert (await raw_handshake(bound.url)).startswith(b"HTTP/1.1 503")
        for client in (calling, streaming):  # both kept their sessions
            assert (await client.rpc(request(5, "ping")))["result"] == {}
            assert (await client.delete()).status_code == 204
        release.set()
