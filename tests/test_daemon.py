"""The daemon over real loopback WebSockets, on the simulator over real HTTP.

Real time with short, generous bounds: these tests cross real sockets.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from support import eventually
from trio_websocket import ConnectionClosed

from exai.client import ExaiClient, RpcError, connect, open_websocket
from exai.tools.base import Tool, ToolArgs, ToolContext, ToolOutput

HANG = '#sim {"hang": true}'


def sim_prompt(text: str, **behaviour: Any) -> str:
    return f"{text}\n#sim {json.dumps(behaviour)}"


async def valid_call_works(client: ExaiClient) -> None:
    """After an error the connection must still serve a normal call."""
    result = await client.call_tool("chat", {"prompt": "still there?"})
    assert not result.is_error, result.text
    assert result.text


# -- the contract's error table ---------------------------------------------------------


async def test_not_json_gives_parse_error_and_connection_stays(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        await client.send_raw("{not json")
        reply = await client.receive_raw()
        assert reply["id"] is None
        assert reply["error"]["code"] == -32700
        await valid_call_works(client)


@pytest.mark.parametrize(
    "frame, expected_id",
    [
        ('{"id": 7, "method": "ping"}', 7),  # no "jsonrpc"
        ('{"jsonrpc": "1.0", "id": 8, "method": "ping"}', 8),
        ('[{"jsonrpc": "2.0", "id": 9, "method": "ping"}]', None),  # a batch
        ('{"jsonrpc": "2.0", "id": null, "method": "ping"}', None),
        ('{"jsonrpc": "2.0", "id": 10, "method": 5}', 10),
        ('"just a string"', None),
        ('{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', None),
    ],
)
async def test_invalid_requests(daemon: Any, frame: str, expected_id: Any) -> None:
    async with connect(daemon.url) as client:
        await client.send_raw(frame)
        reply = await client.receive_raw()
        assert reply["error"]["code"] == -32600, reply
        assert reply["id"] == expected_id
        await valid_call_works(client)


async def test_request_before_initialize(daemon: Any) -> None:
    async with connect(daemon.url, initialize=False) as client:
        with pytest.raises(RpcError) as err:
            await client.request("tools/list")
        assert err.value.code == -32600
        result = await client.request(
            "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}}
        )
        assert result["protocolVersion"] == "2025-06-18"
        await client.notify("notifications/initialized")
        await valid_call_works(client)


@pytest.mark.parametrize(
    "requested, answered",
    [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2024-11-05", "2025-11-25"),
    ],
)
async def test_version_negotiation(daemon: Any, requested: str, answered: str) -> None:
    async with connect(daemon.url, initialize=False) as client:
        result = await client.request(
            "initialize", {"protocolVersion": requested, "capabilities": {}}
        )
        assert result["protocolVersion"] == answered
        assert result["serverInfo"]["name"] == "exai"
        assert "tools" in result["capabilities"]


async def test_unknown_method(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        with pytest.raises(RpcError) as err:
            await client.request("resources/list")
        assert err.value.code == -32601
        await client.ping()
        await valid_call_works(client)


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"name": "no-such-tool", "arguments": {}}, "Unknown tool"),
        ({"arguments": {}}, "name"),
        ({"name": "chat", "arguments": [1, 2]}, "arguments"),
        (
            {"name": "chat", "arguments": {"prompt": "x"}, "_meta": {"exai/timeout": -1}},
            "exai/timeout",
        ),
        (
            {"name": "chat", "arguments": {"prompt": "x"}, "_meta": {"progressToken": [1]}},
            "progressToken",
        ),
    ],
)
async def test_bad_call_params(daemon: Any, params: dict[str, Any], fragment: str) -> None:
    async with connect(daemon.url) as client:
        with pytest.raises(RpcError) as err:
            await client.request("tools/call", params)
        assert err.value.code == -32602
        assert fragment in err.value.message
        await valid_call_works(client)


async def test_tool_arguments_failing_the_schema_name_each_field(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("chat", {"temperature": 9, "bogus": 1})
        assert result.is_error
        for field in ("prompt", "temperature", "bogus"):
            assert field in result.text
        await valid_call_works(client)


async def test_deadline_gives_32001_and_frees_everything(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        started = trio.current_time()
        with pytest.raises(RpcError) as err:
            await client.call_tool("chat", {"prompt": f"slow\n{HANG}"}, timeout=1)
        took = trio.current_time() - started
        assert err.value.code == -32001
        assert err.value.message == "Request timed out after 1 s"
        assert err.value.data == {"timeout_s": 1}
        assert 1.0 <= took <= 1.2
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 1 and s.inflight == 0)
        assert daemon.daemon.limits.borrowed_total() == 0
        await valid_call_works(client)


async def test_overloaded_when_queue_full(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(global_max_inflight=1, session_max_inflight=1, max_queued=1)
    async with connect(bound.url) as client, trio.open_nursery() as nursery:
        for _ in range(2):  # one runs, one waits in the queue
            nursery.start_soon(_expect_cancelled_call, client, f"hold\n{HANG}")
        await eventually(lambda: bound.daemon.limits.queued == 1)
        started = trio.current_time()
        with pytest.raises(RpcError) as err:
            await client.call_tool("chat", {"prompt": "one too many"})
        assert trio.current_time() - started < 5  # refused, not queued behind a call that hangs
        assert err.value.code == -32000
        assert err.value.message == "Server overloaded"
        assert err.value.data["retry_after_s"] >= 1
        nursery.cancel_scope.cancel()


async def _expect_cancelled_call(client: ExaiClient, prompt: str) -> None:
    await client.call_tool("chat", {"prompt": prompt})
    raise AssertionError("this call was meant to hang until cancelled")


async def test_cancel_notification_gives_no_response_and_aborts_provider(
    daemon: Any, simulator: Any
) -> None:
    async with connect(daemon.url) as client:
        await client.send_raw(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": "to-cancel",
                    "method": "tools/call",
                    "params": {"name": "chat", "arguments": {"prompt": f"x\n{HANG}"}},
                }
            )
        )
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
        await client.notify("notifications/cancelled", {"requestId": "to-cancel", "reason": "user"})
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 1)
        await valid_call_works(client)
        with trio.move_on_after(0.3):
            unexpected = await client.receive_raw()
            raise AssertionError(f"a cancelled call was answered: {unexpected}")


async def test_duplicate_inflight_id_is_refused_and_first_goes_on(
    daemon: Any, simulator: Any
) -> None:
    async with connect(daemon.url) as client:
        slow = sim_prompt("slow", latency_s=0.5)
        frame = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 42,
                "method": "tools/call",
                "params": {"name": "chat", "arguments": {"prompt": slow}},
            }
        )
        await client.send_raw(frame)
        await client.send_raw(frame)
        first = await client.receive_raw()
        assert first["id"] == 42 and first["error"]["code"] == -32600
        second = await client.receive_raw()
        assert second["id"] == 42 and second["result"]["isError"] is False


class Boom(Tool[ToolArgs]):
    name = "boom"
    description = "fails on purpose"
    Args = ToolArgs

    async def run(self, args: ToolArgs, ctx: ToolContext) -> ToolOutput:
        raise RuntimeError("secret internals test-kimi-key")


async def test_unexpected_error_is_32603_with_logged_error_id(
    daemon: Any, log_lines: list[str]
) -> None:
    daemon.daemon.services.tools["boom"] = Boom()
    async with connect(daemon.url) as client:
        with pytest.raises(RpcError) as err:
            await client.call_tool("boom", {})
        assert err.value.code == -32603
        assert err.value.message == "Internal error"
        error_id = err.value.data["error_id"]
        assert "Traceback" not in json.dumps(err.value.data)
        assert any(error_id in line for line in log_lines)
        await valid_call_works(client)


async def test_provider_failure_is_an_iserror_result_naming_the_provider(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        prompt = sim_prompt(
            "x",
            status=400,
            error_body={"error": {"message": "bad thing", "type": "invalid_request_error"}},
        )
        result = await client.call_tool("chat", {"prompt": prompt})
        assert result.is_error
        assert "kimi" in result.text.lower()
        await valid_call_works(client)


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
