"""MCP 2026-07-28 (modern, stateless) beside the legacy revisions: contract section 3c.

Rules: loopback only, port 0, the real daemon on the real simulator; real time with short,
generous bounds (these tests cross real sockets). Raw httpx and trio-websocket clients, so
every status, header and field is visible; the official SDKs have their own file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from support import eventually
from trio_websocket import WebSocketConnection, open_websocket_url

from exai import __version__
from exai.transports.http import modern as modern_http

MODERN = "2026-07-28"
VERSIONS = ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"]
HANG = '#sim {"hang": true}'
SERVER_INFO = {"name": "exai", "version": __version__}


def meta(client: str = "tester", **extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": client, "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
        **extra,
    }


def modern(id: Any, method: str, params: dict[str, Any] | None = None, **meta_extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": {**(params or {}), "_meta": meta(**meta_extra)}}


def modern_call(id: Any, prompt: str, **meta_extra: Any) -> dict[str, Any]:
    return modern(id, "tools/call", {"name": "chat", "arguments": {"prompt": prompt}}, **meta_extra)


def headers_for(message: dict[str, Any], **extra: str) -> dict[str, str]:
    """The routing headers a conforming client mirrors from the body."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "Mcp-Method": message["method"],
    }
    if message["method"] == "tools/call":
        headers["Mcp-Name"] = message["params"]["name"]
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return headers


def sse_events(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for block in text.split("\n\n")
        for line in block.splitlines()
        if line.startswith("data: ")
    ]


@asynccontextmanager
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


async def post(http: httpx.AsyncClient, url: str, message: dict[str, Any], **headers: str) -> httpx.Response:
    return await http.post(url, content=json.dumps(message), headers=headers_for(message, **headers))


async def status(daemon: Any) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{daemon.monitor_url}/api/status")).json()


async def lines_of(response: httpx.Response) -> AsyncIterator[str]:
    """The lines of a streamed response as they come (one generator: closed with aclosing)."""
    pending = b""
    async with aclosing(response.aiter_raw()) as chunks:
        async for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode()


async def next_data(lines: AsyncIterator[str]) -> dict[str, Any]:
    """The next SSE event's message (comments, ids and empty priming events skipped)."""
    async for line in lines:
        if line.startswith("data: ") and line != "data: ":
            message: dict[str, Any] = json.loads(line.removeprefix("data: "))
            return message
    raise AssertionError("the stream ended")


def without_serverinfo(result: dict[str, Any]) -> dict[str, Any]:
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"] == SERVER_INFO
    return {k: v for k, v in result.items() if k != "_meta"}


# -- server/discover and the shape of modern results -----------------------------------------


async def test_discover_needs_no_initialize_and_mints_no_session(daemon: Any) -> None:
    async with http_client() as http:
        response = await post(http, daemon.http_url, modern(1, "server/discover"))
    assert response.status_code == 200, response.text
    assert "mcp-session-id" not in response.headers
    result = response.json()["result"]
    assert without_serverinfo(result) == {
        "resultType": "complete",
        "supportedVersions": VERSIONS,
        "capabilities": {"tools": {"listChanged": True}, "extensions": {"io.modelcontextprotocol/tasks": {}}},
        "instructions": result["instructions"],
        "ttlMs": result["ttlMs"],
        "cacheScope": "private",
    }
    assert isinstance(result["ttlMs"], int) and result["ttlMs"] >= 0 and result["instructions"]
    assert len(daemon.daemon.connections) == 0


async def test_tools_list_is_deterministic_and_cacheable(daemon: Any) -> None:
    async with http_client() as http:
        first = (await post(http, daemon.http_url, modern(1, "tools/list"))).json()["result"]
        again = (await post(http, daemon.http_url, modern(2, "tools/list"))).json()["result"]
    assert first == again
    assert first["resultType"] == "complete" and first["cacheScope"] == "private" and first["ttlMs"] > 0
    names = [tool["name"] for tool in without_serverinfo(first)["tools"]]
    assert names[:3] == ["chat", "thinkdeep", "debug"] and "status" in names


async def test_a_modern_call_streams_progress_then_its_result_on_its_own_stream(daemon: Any) -> None:
    prompt = 'stream\n#sim {"chunks": 6, "chunk_delay_s": 0.1}'
    message = modern_call("c1", prompt, progressToken="p1")
    async with http_client() as http:
        response = await post(http, daemon.http_url, message, Mcp_Session_Id="not-a-session-anyone-made")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert "mcp-session-id" not in response.headers
    *notes, answer = sse_events(response.text)
    assert notes and all(n["method"] == "notifications/progress" for n in notes)
    assert [n["params"]["progress"] for n in notes] == sorted({n["params"]["progress"] for n in notes})
    result = answer["result"]
    assert answer["id"] == "c1" and result["resultType"] == "complete" and result["isError"] is False
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"] == SERVER_INFO
    assert "usage" in result["_meta"]  # exai's own _meta stays beside serverInfo


async def test_closing_the_stream_cancels_the_call_and_aborts_its_provider_request(
    daemon: Any, simulator: Any, log_lines: list[str]
) -> None:
    message = modern_call("held", f"hold\n{HANG}")
    async with http_client() as http:
        async with http.stream("POST", daemon.http_url, content=json.dumps(message), headers=headers_for(message)):
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 1)
            limiters = (await status(daemon))["limiters"]
            assert limiters["client:tester@127.0.0.1"]["borrowed"] == 1
            assert limiters["client:tester@127.0.0.1"]["total"] == daemon.daemon.settings.session_max_inflight
            closed = trio.current_time()
        with trio.fail_after(1):  # leaving the block closed the response before reading it
            await simulator.wait_until(lambda s: s.aborted == 1)
        assert trio.current_time() - closed < 0.1
    await eventually(lambda: len(daemon.daemon.calls) == 0, what="the call ended")
    assert not any(name.startswith("client:") for name in (await status(daemon))["limiters"])
    assert any("outcome=cancelled_disconnect" in line for line in log_lines)


async def test_a_json_only_client_gets_json_and_leaving_cancels_too(daemon: Any, simulator: Any) -> None:
    async with http_client() as http:
        response = await post(http, daemon.http_url, modern_call(1, "hello"), Accept="application/json")
        assert response.headers["content-type"] == "application/json"
        assert response.json()["result"]["resultType"] == "complete"
        message = modern_call(2, f"x\n{HANG}")
        with trio.move_on_after(0.5):
            await post(http, daemon.http_url, message, Accept="application/json")
    with trio.fail_after(1):
        await simulator.wait_until(lambda s: s.aborted == 1)


# -- refused before anything starts -----------------------------------------------------------


def _encoded(text: str) -> str:
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


HEADER_CASES = {
    "no MCP-Protocol-Version": ({"MCP-Protocol-Version": None}, "MCP-Protocol-Version"),
    "another MCP-Protocol-Version": ({"MCP-Protocol-Version": "2025-11-25"}, "MCP-Protocol-Version"),
    "no Mcp-Method": ({"Mcp-Method": None}, "Mcp-Method"),
    "another Mcp-Method": ({"Mcp-Method": "tools/list"}, "Mcp-Method"),
    "no Mcp-Name": ({"Mcp-Name": None}, "Mcp-Name"),
    "another Mcp-Name": ({"Mcp-Name": "version"}, "Mcp-Name"),
    "another base64 Mcp-Name": ({"Mcp-Name": _encoded("version")}, "Mcp-Name"),
    "broken base64 Mcp-Name": ({"Mcp-Name": "=?base64?***?="}, "Mcp-Name"),
    "base64 of bad UTF-8": ({"Mcp-Name": "=?base64?" + base64.b64encode(b"\xff").decode() + "?="}, "Mcp-Name"),
    "a control character": ({"Mcp-Name": "chat\x7f"}, "Mcp-Name"),
    "non-ASCII bytes": ({"Mcp-Name": "chät".encode().decode("latin-1")}, "Mcp-Name"),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
async def test_routing_headers_must_mirror_the_body(daemon: Any, simulator: Any, case: str) -> None:
    changes, named = HEADER_CASES[case]
    message = modern_call(7, "never runs")
    headers = headers_for(message)
    for name, value in changes.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    async with http_client() as http:
        raw = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
        response = await http.post(daemon.http_url, content=json.dumps(message), headers=raw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == -32020 and "HeaderMismatch" in error["message"] and named in error["message"]
    assert response.json()["id"] == 7
    assert simulator.stats.requests_total == 0


async def test_a_base64_mcp_name_is_decoded_before_comparing(daemon: Any) -> None:
    message = modern_call(1, "hello")
    async with http_client() as http:
        response = await post(http, daemon.http_url, message, Mcp_Name=_encoded("chat"))
    assert response.status_code == 200 and sse_events(response.text)[-1]["result"]["isError"] is False


async def test_an_unsupported_version_is_400_with_every_supported_one(daemon: Any) -> None:
    message = modern(1, "tools/list")
    message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "1900-01-01"
    async with http_client() as http:
        response = await post(http, daemon.http_url, message)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": -32022,
        "message": "Unsupported protocol version",
        "data": {"supported": VERSIONS, "requested": "1900-01-01"},
    }


@pytest.mark.parametrize("method", ["ping", "logging/setLevel", "initialize", "resources/list", "no/such"])
async def test_methods_modern_does_not_have_are_404_and_32601(daemon: Any, method: str) -> None:
    async with http_client() as http:
        response = await post(http, daemon.http_url, modern(1, method, {"level": "info"}))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == -32601


async def test_listen_needs_a_client_that_takes_a_stream(daemon: Any) -> None:
    message = modern(1, "subscriptions/listen", {"notifications": {"toolsListChanged": True}})
    async with http_client() as http:
        response = await post(http, daemon.http_url, message, Accept="application/json")
    assert response.status_code == 406 and "text/event-stream" in response.json()["error"]["message"]


async def test_missing_client_capabilities_is_32602_naming_the_key(daemon: Any) -> None:
    message = modern(1, "tools/list")
    del message["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"]
    async with http_client() as http:
        response = await post(http, daemon.http_url, message)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == -32602 and "io.modelcontextprotocol/clientCapabilities" in error["message"]


@pytest.mark.parametrize(
    "key, value",
    [
        ("io.modelcontextprotocol/clientCapabilities", []),
        ("io.modelcontextprotocol/clientInfo", {"version": "1"}),
        ("io.modelcontextprotocol/clientInfo", {"name": "x" * 500}),
        ("io.modelcontextprotocol/clientInfo", {"name": "bad\nname"}),
        ("io.modelcontextprotocol/logLevel", ["info"]),
        ("io.modelcontextprotocol/logLevel", "loud"),
    ],
)
async def test_malformed_meta_fields_are_32602(daemon: Any, key: str, value: Any) -> None:
    message = modern(1, "tools/list")
    message["params"]["_meta"][key] = value
    async with http_client() as http:
        response = await post(http, daemon.http_url, message)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32602 and key in response.json()["error"]["message"]


async def test_legacy_and_modern_on_one_daemon_at_once(daemon: Any, simulator: Any) -> None:
    """A legacy session keeps its session rules while modern requests pass beside it."""
    from test_http import mcp_session, valid_call_works

    async with mcp_session(daemon.http_url) as legacy, http_client() as http:
        modern_answer = await post(http, daemon.http_url, modern(1, "tools/list"), Mcp_Session_Id=legacy.session_id or "")
        assert modern_answer.json()["result"]["resultType"] == "complete"
        await valid_call_works(legacy)
        listed = await legacy.rpc({"jsonrpc": "2.0", "id": 9, "method": "tools/list"})
        assert "resultType" not in listed["result"] and "ttlMs" not in listed["result"]
        no_session = await http.post(
            daemon.http_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json"},
        )
        assert no_session.status_code == 400  # legacy rules for a legacy request
        assert len(daemon.daemon.connections) == 1


# -- WebSocket and stdio: the same era rules, on one connection ------------------------------


class Ws:
    def __init__(self, ws: WebSocketConnection):
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(5):
            return json.loads(await self.ws.get_message())

    async def rpc(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(message)
        while True:
            answer = await self.receive()
            if answer.get("id") == message["id"] and "method" not in answer:
                return answer


@asynccontextmanager
async def ws_client(url: str) -> AsyncIterator[Ws]:
    async with open_websocket_url(url) as ws:
        yield Ws(ws)


async def test_websocket_modern_without_initialize(daemon: Any, simulator: Any) -> None:
    async with ws_client(daemon.url) as client:
        discover = await client.rpc(modern(1, "server/discover"))
        assert discover["result"]["supportedVersions"] == VERSIONS
        listed = await client.rpc(modern(2, "tools/list"))
        assert listed["result"]["cacheScope"] == "private"
        for method in ("ping", "logging/setLevel"):
            assert (await client.rpc(modern(3, method)))["error"]["code"] == -32601
        bad = modern(4, "tools/list")
        bad["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
        assert (await client.rpc(bad))["error"]["data"] == {"supported": VERSIONS, "requested": "2099-01-01"}
        no_caps = modern(8, "tools/list")
        del no_caps["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"]
        refused = (await client.rpc(no_caps))["error"]
        assert refused["code"] == -32602 and "clientCapabilities" in refused["message"]
        legacy_before_init = await client.rpc({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
        assert legacy_before_init["error"]["code"] == -32600  # legacy rules unchanged
        answer = await client.rpc(modern_call(6, 'p\n#sim {"chunks": 4, "chunk_delay_s": 0.05}', progressToken="t"))
        assert answer["result"]["resultType"] == "complete" and answer["result"]["isError"] is False

        await client.send(modern_call("held", f"x\n{HANG}"))
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
        await client.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "held"}})
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 1)
        assert (await client.rpc(modern(7, "tools/list")))["id"] == 7  # nothing answered "held"


async def test_websocket_listen_stays_open_and_hears_tool_changes(
    daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ws_client(daemon.url) as client, ws_client(daemon.url) as legacy:
        await legacy.rpc({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
        await client.send(modern("sub", "subscriptions/listen", {"notifications": {"toolsListChanged": True}}))
        ack = await client.receive()
        assert ack == {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": "sub"}, "notifications": {"toolsListChanged": True}},
        }
        monkeypatch.setenv("EXAI_DISABLED_TOOLS", "planner")
        daemon.daemon.reload()
        note = await client.receive()
        assert note["method"] == "notifications/tools/list_changed"
        assert note["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": "sub"}
        assert (await legacy.receive())["method"] == "notifications/tools/list_changed"
        names = [t["name"] for t in (await client.rpc(modern(1, "tools/list")))["result"]["tools"]]
        assert "planner" not in names and "chat" in names
        # Cancelling the subscription ends it without an answer; a duplicate id was refused first.
        assert (await client.rpc(modern("sub", "subscriptions/listen")))["error"]["code"] == -32600
        await client.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "sub"}})
        await eventually(lambda: not daemon.daemon.services.listeners.subscriptions, what="the subscription ended")
        monkeypatch.setenv("EXAI_DISABLED_TOOLS", "")
        daemon.daemon.reload()
        assert (await client.rpc(modern(2, "tools/list")))["id"] == 2  # no notification came first


async def test_a_listen_the_server_ends_gets_its_result(daemons: Any) -> None:
    bound = await daemons.start()
    async with ws_client(bound.url) as client:
        await client.send(modern(5, "subscriptions/listen", {"notifications": {}}))
        ack = await client.receive()
        assert ack["params"]["notifications"] == {}
        bound.daemon.request_shutdown()
        final = await client.receive()
        assert final["id"] == 5
        assert final["result"]["resultType"] == "complete"
        assert final["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 5


# -- subscriptions/listen on Streamable HTTP ----------------------------------------------------


# httpx leaves its inner stream iterators of a response left mid-way to the garbage collector.
@pytest.mark.filterwarnings("ignore:Async generator 'httpx.:ResourceWarning")
@pytest.mark.filterwarnings("ignore:Async generator 'httpcore.:ResourceWarning")
async def test_http_listen_acknowledges_keeps_alive_and_tells_of_changes(
    daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_http import mcp_session

    monkeypatch.setattr(modern_http, "KEEP_ALIVE_S", 0.2)
    message = modern(1, "subscriptions/listen", {"notifications": {"toolsListChanged": True}})
    async with mcp_session(daemon.http_url) as legacy, http_client() as http:
        async with (
            http.stream("GET", daemon.http_url, headers=legacy.headers()) as legacy_stream,
            http.stream("POST", daemon.http_url, content=json.dumps(message), headers=headers_for(message)) as stream,
            aclosing(lines_of(stream)) as lines,
            aclosing(lines_of(legacy_stream)) as legacy_lines,
        ):
            assert stream.headers["x-accel-buffering"] == "no"
            with trio.fail_after(5):
                ack = await next_data(lines)
                assert ack["method"] == "notifications/subscriptions/acknowledged"
                while (await anext(lines)) != ":":  # the keep-alive comment
                    pass
            monkeypatch.setenv("EXAI_DISABLED_TOOLS", "consensus")
            daemon.daemon.reload()
            with trio.fail_after(5):
                note = await next_data(lines)
                assert note["method"] == "notifications/tools/list_changed"
                assert note["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 1
                legacy_note = await next_data(legacy_lines)
                assert legacy_note == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {}}
        await eventually(lambda: not daemon.daemon.services.listeners.subscriptions, what="the listen ended")


async def test_keep_alive_default_is_within_15_s() -> None:
    assert 0 < modern_http.KEEP_ALIVE_S <= 15


async def test_a_reload_that_changes_nothing_tells_nobody(daemon: Any, log_lines: list[str]) -> None:
    daemon.daemon.reload()
    assert any("tool set is unchanged" in line for line in log_lines)


async def test_a_reload_with_a_bad_value_keeps_the_tools(daemon: Any, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]) -> None:
    before = list(daemon.daemon.services.tools)
    monkeypatch.setenv("EXAI_DISABLED_TOOLS", "no-such-tool")
    daemon.daemon.reload()
    assert list(daemon.daemon.services.tools) == before
    assert any("configuration kept" in line and "no-such-tool" in line for line in log_lines)


async def test_sighup_reloads_disabled_tools_from_env_file_and_the_daemon_stays(tmp_path: Any) -> None:
    import signal

    from support import serve_process

    async with serve_process(tmp_path, "--demo") as served:
        async with ws_client(served.url) as legacy:
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
            assert (await legacy.rpc(init))["result"]["capabilities"]["tools"] == {"listChanged": True}
            (tmp_path / ".env").write_text("EXAI_DISABLED_TOOLS=planner,consensus\n")
            served.proc.send_signal(signal.SIGHUP)
            assert (await legacy.receive())["method"] == "notifications/tools/list_changed"
        async with http_client() as http:
            listed = (await post(http, served.http_url, modern(1, "tools/list"))).json()["result"]
        names = {tool["name"] for tool in listed["tools"]}
        assert "chat" in names and not {"planner", "consensus"} & names
        assert served.proc.returncode is None
        served.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await served.proc.wait() == 0
    assert b"reload: now" in served.stderr


@pytest.mark.filterwarnings("ignore:Async generator 'httpx.:ResourceWarning")
@pytest.mark.filterwarnings("ignore:Async generator 'httpcore.:ResourceWarning")
async def test_an_http_listen_the_server_ends_gets_its_result_and_the_stream_ends(daemons: Any) -> None:
    bound = await daemons.start()
    message = modern("bye", "subscriptions/listen", {"notifications": {"toolsListChanged": True}})
    async with (
        http_client() as http,
        http.stream("POST", bound.http_url, content=json.dumps(message), headers=headers_for(message)) as stream,
        aclosing(lines_of(stream)) as lines,
    ):
        with trio.fail_after(5):
            assert (await next_data(lines))["method"] == "notifications/subscriptions/acknowledged"
            bound.daemon.request_shutdown()
            final = await next_data(lines)
            assert final["id"] == "bye" and final["result"]["resultType"] == "complete"
            assert [line async for line in lines if line.startswith("data: ")] == []  # then the stream ends
