"""The contract's error table (section 3), every row once, over both transports: the same
client library on a WebSocket (`ws://`) and on Streamable HTTP (`http://.../mcp`). What only
one transport adds (HTTP status codes, close codes) is tested beside that transport.

Rules: loopback only, port 0, the real daemon on the simulator; real time with short,
generous bounds (these tests cross real sockets).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio
from support import eventually

from exai.client import ExaiClient, RpcError
from exai.client import connect as connect_any_era
from exai.tools.base import Tool, ToolArgs, ToolContext, ToolOutput

HANG = '#sim {"hang": true}'

# (frame, the id its -32600 answer carries)
INVALID_FRAMES: list[tuple[str, Any]] = [
    ('{"id": 7, "method": "ping"}', 7),  # no "jsonrpc"
    ('{"jsonrpc": "1.0", "id": 8, "method": "ping"}', 8),
    ('[{"jsonrpc": "2.0", "id": 9, "method": "ping"}]', None),  # a batch
    ('{"jsonrpc": "2.0", "id": null, "method": "ping"}', None),
    ('{"jsonrpc": "2.0", "id": 10, "method": 5}', 10),
    ('"just a string"', None),
    ('{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', None),
]

BAD_CALL_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"name": "no-such-tool", "arguments": {}}, "Unknown tool"),
    ({"arguments": {}}, "name"),
    ({"name": "chat", "arguments": [1, 2]}, "arguments"),
    ({"name": "chat", "arguments": {"prompt": "x"}, "_meta": {"exai/timeout": -1}}, "exai/timeout"),
    ({"name": "chat", "arguments": {"prompt": "x"}, "_meta": {"progressToken": [1]}}, "progressToken"),
]

# These are the legacy revisions' rules (contract sections 3 and 3b, unchanged beside the
# modern era): raw frames here are legacy frames, so the client speaks legacy too.
connect = partial(connect_any_era, era="legacy")


def sim_prompt(text: str, **behaviour: Any) -> str:
    return f"{text}\n#sim {json.dumps(behaviour)}"


@pytest.fixture(params=["ws", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def url_of(bound: Any, transport: str) -> str:
    return str(bound.url if transport == "ws" else bound.http_url)


@pytest.fixture
def url(daemon: Any, transport: str) -> str:
    return url_of(daemon, transport)


async def valid_call_works(client: ExaiClient) -> None:
    """After an error the connection (or session) must still serve a normal call."""
    result = await client.call_tool("chat", {"prompt": "still there?"})
    assert not result.is_error, result.text
    assert result.text


async def test_not_json_gives_parse_error_and_the_connection_stays(url: str) -> None:
    async with connect(url) as client:
        await client.send_raw("{not json")
        reply = await client.receive_raw()
        assert reply["id"] is None and reply["error"]["code"] == -32700, reply
        await valid_call_works(client)


@pytest.mark.parametrize("frame, expected_id", INVALID_FRAMES)
async def test_invalid_requests(url: str, frame: str, expected_id: Any) -> None:
    async with connect(url) as client:
        await client.send_raw(frame)
        reply = await client.receive_raw()
        assert reply["error"]["code"] == -32600, reply
        assert reply["id"] == expected_id
        await valid_call_works(client)


async def test_request_before_initialize(url: str) -> None:
    async with connect(url, initialize=False) as client:
        with pytest.raises(RpcError) as err:
            await client.request("tools/list")
        assert err.value.code == -32600
        result = await client.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})
        assert result["protocolVersion"] == "2025-06-18"
        await client.notify("notifications/initialized")
        await valid_call_works(client)


@pytest.mark.parametrize(
    "requested, answered",
    [("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"), ("2024-11-05", "2025-11-25")],
)
async def test_version_negotiation(url: str, requested: str, answered: str) -> None:
    async with connect(url, initialize=False) as client:
        result = await client.request("initialize", {"protocolVersion": requested, "capabilities": {}})
        assert result["protocolVersion"] == answered
        assert result["serverInfo"]["name"] == "exai"
        assert "tools" in result["capabilities"]


async def test_unknown_method(url: str) -> None:
    async with connect(url) as client:
        with pytest.raises(RpcError) as err:
            await client.request("resources/list")
        assert err.value.code == -32601
        await client.ping()
        await valid_call_works(client)


@pytest.mark.parametrize("params, fragment", BAD_CALL_PARAMS)
async def test_bad_call_params(url: str, params: dict[str, Any], fragment: str) -> None:
    async with connect(url) as client:
        with pytest.raises(RpcError) as err:
            await client.request("tools/call", params)
        assert err.value.code == -32602
        assert fragment in err.value.message
        await valid_call_works(client)


async def test_tool_arguments_failing_the_schema_name_each_field(url: str) -> None:
    async with connect(url) as client:
        result = await client.call_tool("chat", {"temperature": 9, "bogus": 1})
        assert result.is_error
        for field in ("prompt", "temperature", "bogus"):
            assert field in result.text
        await valid_call_works(client)


async def test_deadline_gives_32001_and_frees_everything(url: str, daemon: Any, simulator: Any) -> None:
    async with connect(url) as client:
        started = trio.current_time()
        with pytest.raises(RpcError) as err:
            await client.call_tool("chat", {"prompt": f"slow\n{HANG}"}, timeout=1)
        took = trio.current_time() - started
        assert err.value.code == -32001
        assert err.value.message == "Request timed out after 1 s"
        assert err.value.data == {"timeout_s": 1}
        assert 1.0 <= took <= 1.3
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 1 and s.inflight == 0)
        assert daemon.daemon.limits.borrowed_total() == 0
        await valid_call_works(client)


async def test_overloaded_when_queue_full(daemons: Any, transport: str) -> None:
    bound = await daemons.start(global_max_inflight=1, session_max_inflight=1, max_queued=1)
    async with connect(url_of(bound, transport)) as client, trio.open_nursery() as nursery:
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


async def test_cancel_notification_gives_no_response_and_aborts_the_provider(url: str, simulator: Any) -> None:
    async with connect(url) as client:
        call = {"jsonrpc": "2.0", "id": "to-cancel", "method": "tools/call",
                "params": {"name": "chat", "arguments": {"prompt": f"x\n{HANG}"}}}
        await client.send_raw(json.dumps(call))
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
        await client.notify("notifications/cancelled", {"requestId": "to-cancel", "reason": "user"})
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 1)
        await valid_call_works(client)
        with trio.move_on_after(0.3):
            unexpected = await client.receive_raw()
            raise AssertionError(f"a cancelled call was answered: {unexpected}")


async def test_duplicate_inflight_id_is_refused_and_the_first_goes_on(url: str) -> None:
    async with connect(url) as client:
        frame = json.dumps({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
                            "params": {"name": "chat", "arguments": {"prompt": sim_prompt("slow", latency_s=0.5)}}})
        await client.send_raw(frame)
        await client.send_raw(frame)
        first = await client.receive_raw()
        assert first["id"] == 42 and first["error"]["code"] == -32600, first
        second = await client.receive_raw()
        assert second["id"] == 42 and second["result"]["isError"] is False, second


class Boom(Tool[ToolArgs]):
    name = "boom"
    description = "fails on purpose"
    Args = ToolArgs

    async def run(self, args: ToolArgs, ctx: ToolContext) -> ToolOutput:
        raise RuntimeError("secret internals test-kimi-key")


async def test_unexpected_error_is_32603_with_a_logged_error_id(url: str, daemon: Any, log_lines: list[str]) -> None:
    daemon.daemon.services.tools["boom"] = Boom()
    async with connect(url) as client:
        with pytest.raises(RpcError) as err:
            await client.call_tool("boom", {})
        assert err.value.code == -32603
        assert err.value.message == "Internal error"
        error_id = err.value.data["error_id"]
        assert "Traceback" not in json.dumps(err.value.data) and "test-kimi-key" not in json.dumps(err.value.data)
        assert any(error_id in line for line in log_lines)
        await valid_call_works(client)


async def test_provider_failure_is_an_iserror_result_naming_the_provider(url: str) -> None:
    async with connect(url) as client:
        prompt = sim_prompt("x", status=400, error_body={"error": {"message": "bad thing", "type": "invalid_request_error"}})
        result = await client.call_tool("chat", {"prompt": prompt})
        assert result.is_error
        assert "kimi" in result.text.lower()
        await valid_call_works(client)
