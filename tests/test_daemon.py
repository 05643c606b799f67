"""The daemon over real loopback WebSockets, on the simulator over real HTTP.

Real time with short, generous bounds: these tests cross real sockets.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from test_error_table import Boom
from trio_websocket import ConnectionClosed

from exai.client import ExaiClient, RpcError, connect, open_websocket

HANG = '#sim {"hang": true}'


def sim_prompt(text: str, **behaviour: Any) -> str:
    return f"{text}\n#sim {json.dumps(behaviour)}"


async def valid_call_works(client: ExaiClient) -> None:
    """After an error the connection must still serve a normal call."""
    result = await client.call_tool("chat", {"prompt": "still there?"})
    assert not result.is_error, result.text
    assert result.text


# -- the contract's error table: tests/test_error_table.py, over both transports ------------


# -- handshake ---------------------------------------------------------------------------


async def handshake_status(url: str, *headers: tuple[str, str]) -> int:
    """The HTTP status of a WebSocket handshake (httpx, so a refused socket is closed for sure)."""
    base = url.replace("ws://", "http://")
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with httpx.AsyncClient() as http:
        response = await http.get(base, headers={**upgrade, **dict(headers)})
        return response.status_code


async def test_auth_token_required(daemons: Any) -> None:
    bound = await daemons.start(auth_token="s3cret-token")
    assert await handshake_status(bound.url) == 401
    assert await handshake_status(bound.url, ("Authorization", "Bearer wrong")) == 401
    assert await handshake_status(bound.url, ("Authorization", "Basic s3cret-token")) == 401
    assert await handshake_status(bound.url, ("Authorization", "Bearer s3cret-token")) == 101
    async with connect(bound.url, token="s3cret-token") as client:
        await valid_call_works(client)


async def test_max_connections_refused_with_503(daemons: Any) -> None:
    bound = await daemons.start(max_connections=2)
    async with connect(bound.url), connect(bound.url):
        assert await handshake_status(bound.url) == 503
    with trio.fail_after(2):
        await bound.daemon.connections.wait_empty()
    async with connect(bound.url) as client:
        await client.ping()


async def test_oversized_frame_closes_with_1009(daemons: Any) -> None:
    bound = await daemons.start(max_message_bytes=1024)
    async with open_websocket(bound.url, subprotocols=()) as ws:
        await ws.send_message("x" * 2048)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 1009


async def test_subprotocol_and_paths(daemon: Any) -> None:
    async with open_websocket(daemon.url, subprotocols=["mcp"]) as ws:
        assert ws.subprotocol == "mcp"
    async with connect(daemon.url.rstrip("/") + "/mcp") as client:
        await client.ping()
    assert await handshake_status(daemon.url.rstrip("/") + "/elsewhere") == 404


# -- tools ---------------------------------------------------------------------------------


async def test_tools_list_has_schemas(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        tools = {t["name"]: t for t in await client.list_tools()}
        assert {"chat", "listmodels", "version", "status"} <= set(tools)
        for tool in tools.values():
            assert tool["inputSchema"]["type"] == "object"
            assert tool["description"]
        assert "prompt" in tools["chat"]["inputSchema"]["required"]


async def test_version_and_listmodels(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        version = await client.call_tool("version", {})
        assert not version.is_error and "exai" in version.text
        models = await client.call_tool("listmodels", {})
        assert not models.is_error
        names = {m["name"] for m in models.structured["models"]}
        assert "kimi-k2-0905-preview" in names and "glm-4.6" in names


async def test_chat_continuation_and_files(daemon: Any, tmp_path: Any) -> None:
    note = tmp_path / "note.txt"
    note.write_text("the answer is 42")
    async with connect(daemon.url) as client:
        first = await client.call_tool("chat", {"prompt": "remember", "files": [str(note)]})
        assert not first.is_error, first.text
        thread = first.meta["continuation_id"]
        second = await client.call_tool("chat", {"prompt": "and now?", "continuation_id": thread})
        assert not second.is_error
        assert second.meta["continuation_id"] == thread
        unknown = await client.call_tool("chat", {"prompt": "x", "continuation_id": "nope"})
        assert unknown.is_error and "nope" in unknown.text
        outside = await client.call_tool("chat", {"prompt": "x", "files": ["/etc/passwd"]})
        assert outside.is_error and "/etc/passwd" in outside.text
        relative = await client.call_tool("chat", {"prompt": "x", "files": ["note.txt"]})
        assert relative.is_error and "absolute" in relative.text


async def test_progress_strictly_increases_and_stops_before_response(daemon: Any) -> None:
    seen: list[dict[str, Any]] = []
    done = False

    def on_progress(params: dict[str, Any]) -> None:
        assert not done, "progress after the response"
        seen.append(params)

    async with connect(daemon.url) as client:
        prompt = sim_prompt("stream", chunks=8, chunk_delay_s=0.1)
        result = await client.call_tool("chat", {"prompt": prompt}, on_progress=on_progress)
        done = True
        assert not result.is_error
        await trio.sleep(0.2)
    values = [p["progress"] for p in seen]
    assert len(values) >= 2
    assert values == sorted(set(values))


async def test_broken_stream_is_a_clear_error_not_half_an_answer(daemon: Any) -> None:
    progress: list[Any] = []
    async with connect(daemon.url) as client:
        prompt = sim_prompt("cut", chunks=6, cut_after=2, chunk_delay_s=0.01)
        result = await client.call_tool("chat", {"prompt": prompt}, on_progress=progress.append)
        assert result.is_error
        assert "kimi" in result.text.lower()
        assert "Simulated answer" not in result.text
        await valid_call_works(client)


class BadSchema(Boom):
    name = "bad-schema"

    def describe(self) -> dict[str, Any]:
        raise RuntimeError("schema generation broke")


async def test_unexpected_error_outside_a_call_is_32603_too(daemon: Any, log_lines: list[str]) -> None:
    tools = daemon.daemon.services.tools
    tools["bad-schema"] = BadSchema()
    async with connect(daemon.url) as client:
        with pytest.raises(RpcError) as err:
            await client.list_tools()
        assert err.value.code == -32603
        assert any(err.value.data["error_id"] in line for line in log_lines)
        del tools["bad-schema"]
        assert await client.list_tools()
        await valid_call_works(client)
