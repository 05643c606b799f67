"""MCP Streamable HTTP: the daemon's /mcp endpoint over real loopback HTTP, on the simulator.

Rules: loopback only, port 0, real time with short, generous bounds (these tests cross
real sockets). The official MCP SDK client runs on trio through anyio; the raw tests use
httpx so every status and header is visible.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from harness import ACCEPT_BOTH, HttpAnswer, RawMcpHttp, request
from httpx_sse import aconnect_sse
from support import eventually
from test_error_table import INVALID_FRAMES

from exai.transports import http as http_transport
from exai.transports.http import REPLAY_MAX_EVENTS, accepts

HANG = '#sim {"hang": true}'
McpHttp = RawMcpHttp  # the one raw sender (tests/harness.py): these tests watch every status and header


def sim_prompt(text: str, **behaviour: Any) -> str:
    return f"{text}\n#sim {json.dumps(behaviour)}"


def call(id: Any, tool: str, arguments: dict[str, Any], **meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return request(id, "tools/call", params)


async def sse(client: RawMcpHttp, method: str, message: Any = None, **headers: str) -> HttpAnswer:
    """One request whose answer is an SSE stream, read whole: every event id and message."""
    content = None if message is None else json.dumps(message)
    return await client.exchange(method, content=content, headers=client.headers(**headers))


@asynccontextmanager
async def mcp_session(url: str, token: str | None = None) -> AsyncIterator[RawMcpHttp]:
    async with httpx.AsyncClient(timeout=10) as http:
        client = RawMcpHttp(http, url, token)
        await client.initialize()
        try:
            yield client
        finally:  # end the session as a well-behaved client does (it may be gone already)
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await client.delete()
                except httpx.HTTPError:
                    pass


async def valid_call_works(client: McpHttp) -> None:
    reply = await client.call_tool("chat", {"prompt": "still there?"})
    assert reply["result"]["isError"] is False, reply


# -- the official MCP SDK client ---------------------------------------------------------


# The SDK leaves its SSE iterators for the garbage collector once a response is complete;
# under trio that is a ResourceWarning from the client library, not from the server.
@pytest.mark.filterwarnings("ignore:Async generator 'httpx2.:ResourceWarning")
@pytest.mark.filterwarnings("ignore:Async generator 'httpcore2.:ResourceWarning")
async def test_official_sdk_client_initialize_list_call_progress_cancel_end(daemon: Any, simulator: Any) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with streamable_http_client(daemon.http_url) as (read, write), ClientSession(read, write) as mcp:
        init = await mcp.initialize()
        assert init.server_info.name == "exai"
        tools = {tool.name for tool in (await mcp.list_tools()).tools}
        assert {"chat", "listmodels", "version", "status"} <= tools
        prompt = sim_prompt("stream", chunks=6, chunk_delay_s=0.1)
        result = await mcp.call_tool("chat", {"prompt": prompt}, progress_callback=on_progress)
        assert result.is_error is False
        assert len(progress) >= 2 and progress == sorted(set(progress))
        status = json.loads((await mcp.call_tool("status", {})).content[0].text)
        assert any(name.startswith("session:h") for name in status["limiters"])

        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mcp.call_tool, "chat", {"prompt": f"x\n{HANG}"})
                with trio.fail_after(2):
                    await simulator.wait_until(lambda s: s.inflight == 1)
                scope.cancel()
        cancelled = trio.current_time()
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 1)
        assert trio.current_time() - cancelled < 0.1
        assert (await mcp.call_tool("version", {})).is_error is False
        assert len(daemon.daemon.connections) == 1
    # Leaving the client sends DELETE: the session ends.
    await eventually(lambda: len(daemon.daemon.connections) == 0, what="the session ended")


# -- headers: auth, origin, session ids, versions --------------------------------------------


async def test_auth_token_required_on_every_request(daemons: Any) -> None:
    bound = await daemons.start(auth_token="s3cret-token")
    async with httpx.AsyncClient() as http:
        anonymous = McpHttp(http, bound.http_url)
        init = request(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
        assert (await anonymous.post(init)).status_code == 401
        wrong = await anonymous.post(init, Authorization="Bearer wrong")
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert (await anonymous.post(init, Authorization="Basic s3cret-token")).status_code == 401
        client = McpHttp(http, bound.http_url, token="s3cret-token")
        await client.initialize()
        await valid_call_works(client)
        # Every later request is checked too, session id or not.
        stolen = McpHttp(http, bound.http_url)
        stolen.session_id = client.session_id
        assert (await stolen.post(request(1, "ping"))).status_code == 401
        assert (await http.get(bound.http_url, headers={"Mcp-Session-Id": client.session_id or ""})).status_code == 401
        assert (await stolen.delete()).status_code == 401
        assert (await client.delete()).status_code == 204


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("http://evil.example", False),
        ("http://127.0.0.1:1", False),
        ("null", False),
        ("http://127.0.0.1:{port}", True),
        ("http://localhost:{port}", True),
    ],
)
async def test_origin_must_be_this_server(daemon: Any, origin: str, allowed: bool) -> None:
    port = httpx.URL(daemon.http_url).port
    async with mcp_session(daemon.http_url) as client:
        response = await client.post(request(1, "ping"), Origin=origin.format(port=port))
        assert response.status_code == (200 if allowed else 403), response.text
        if not allowed:
            assert "Origin" in response.json()["error"]["message"]


async def test_session_ids_missing_unknown_and_ended(daemon: Any) -> None:
    async with mcp_session(daemon.http_url) as client:
        session_id = client.session_id
        assert session_id and all(0x21 <= ord(ch) <= 0x7E for ch in session_id)
        assert len(session_id) >= 32
        client.session_id = None
        missing = await client.post(request(1, "ping"))
        assert missing.status_code == 400 and "Mcp-Session-Id" in missing.json()["error"]["message"]
        assert (await client.http.get(client.url, headers={"Accept": "text/event-stream"})).status_code == 400
        assert (await client.delete()).status_code == 400
        client.session_id = "no-such-session"
        assert (await client.post(request(1, "ping"))).status_code == 404
        assert (await client.delete()).status_code == 404
        client.session_id = session_id
        assert (await client.rpc(request(2, "ping")))["result"] == {}
        assert (await client.delete()).status_code == 204
        assert (await client.post(request(3, "ping"))).status_code == 404
        assert (await client.post({"jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 404
        assert (await client.delete()).status_code == 404


async def test_two_sessions_have_distinct_ids_and_limiters(daemon: Any) -> None:
    async with mcp_session(daemon.http_url) as one, mcp_session(daemon.http_url) as two:
        assert one.session_id != two.session_id
        limiters = daemon.daemon.limits.statistics()
        assert len([name for name in limiters if name.startswith("session:h")]) == 2
        assert daemon.daemon.status()["connections"] == 2


@pytest.mark.parametrize(
    "header, status",
    [("2025-11-25", 200), ("2025-06-18", 200), ("2025-03-26", 200), ("2024-11-05", 400), ("banana", 400)],
)
async def test_protocol_version_header(daemon: Any, header: str, status: int) -> None:
    async with mcp_session(daemon.http_url) as client:
        response = await client.post(request(1, "ping"), MCP_Protocol_Version=header)
        assert response.status_code == status, response.text
        if status == 400:
            assert "MCP-Protocol-Version" in response.json()["error"]["message"]


async def test_accept_content_type_method_path_and_size(daemons: Any) -> None:
    bound = await daemons.start(max_message_bytes=1024)
    async with mcp_session(bound.http_url) as client:
        assert (await client.post(request(1, "ping"), Accept="text/html")).status_code == 406
        only_json = await client.post(call(2, "version", {}), Accept="application/json")
        assert only_json.status_code == 200 and only_json.json()["result"]["isError"] is False
        only_sse = await sse(client, "POST", request(3, "ping"), Accept="text/event-stream")
        assert only_sse.content_type.startswith("text/event-stream")
        assert only_sse.messages[-1] == {"jsonrpc": "2.0", "id": 3, "result": {}}
        assert (await client.post(request(4, "ping"), Content_Type="text/plain")).status_code == 415
        big = await client.post(call(5, "chat", {"prompt": "x" * 2048}))
        assert big.status_code == 413
        put = await client.http.put(client.url, headers=client.headers())
        assert put.status_code == 405 and "POST" in put.headers["allow"]
        elsewhere = await client.http.post(client.url.replace("/mcp", "/other"), headers=client.headers())
        assert elsewhere.status_code == 404
        await valid_call_works(client)


async def test_an_answer_before_the_body_is_read_closes_the_connection(daemons: Any) -> None:
    # Found by the soak: hypercorn closes a connection whose request body it did not read; an
    # answer without `Connection: close` let a keep-alive client send its next request into it.
    bound = await daemons.start(max_message_bytes=1024)
    async with mcp_session(bound.http_url) as client:
        big = await client.post(call(1, "chat", {"prompt": "x" * 2048}))
        assert big.status_code == 413 and big.headers["connection"] == "close"
        wrong_type = await client.post(request(2, "ping"), Content_Type="text/plain")
        assert wrong_type.status_code == 415 and wrong_type.headers["connection"] == "close"
        foreign = await client.post(request(3, "ping"), Origin="http://evil.example")
        assert foreign.status_code == 403 and foreign.headers["connection"] == "close"
        elsewhere = await client.http.post(client.url.replace("/mcp", "/other"), content=b"{}", headers=client.headers())
        assert elsewhere.status_code == 404 and elsewhere.headers["connection"] == "close"
        read = await client.post(request(4, "ping"))  # its body read: the connection stays
        assert read.status_code == 200 and "connection" not in read.headers
        assert (await client.http.get(client.url, headers=client.headers(Last_Event_ID="x"))).headers.get("connection") is None
        await valid_call_works(client)


async def test_max_connections_counts_http_sessions(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(max_connections=1)
    async with mcp_session(bound.http_url) as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.post, call("busy", "chat", {"prompt": f"hold\n{HANG}"}))
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
        async with httpx.AsyncClient() as http:  # the only session has a call: nothing to give up
            refused = await McpHttp(http, bound.http_url).post(
                request(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
            )
        assert refused.status_code == 503
        assert refused.json()["error"]["data"]["retry_after_s"] >= 1
        assert (await client.delete()).status_code == 204
    async with mcp_session(bound.http_url) as again:
        await valid_call_works(again)


# -- calls belong to the session, not to a response ---------------------------------------


async def test_delete_aborts_the_sessions_provider_requests_at_once(daemon: Any, simulator: Any) -> None:
    async with mcp_session(daemon.http_url) as client, trio.open_nursery() as nursery:
        for n in range(2):
            nursery.start_soon(client.post, call(n, "chat", {"prompt": f"hold {n}\n{HANG}"}))
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 2)
        started = trio.current_time()
        response = await client.delete()
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 2)
        assert trio.current_time() - started < 0.1
        assert response.status_code == 204
        assert len(daemon.daemon.calls) == 0 and len(daemon.daemon.connections) == 0


async def test_dropped_stream_does_not_cancel_and_last_event_id_gets_the_result(
    daemon: Any, simulator: Any
) -> None:
    async with mcp_session(daemon.http_url) as client:
        prompt = sim_prompt("slow", chunks=4, chunk_delay_s=0.15)
        message = call("resumable", "chat", {"prompt": prompt}, progressToken="tok")
        # Read the stream up to the first progress event, then drop the connection.
        dropped = await client.exchange("POST", content=json.dumps(message), drop_when=lambda answer: answer.progress_count() > 0)
        assert dropped.status == 200 and dropped.dropped and dropped.response() is None
        seen = dropped.event_ids
        assert simulator.stats.aborted == 0
        assert len(daemon.daemon.calls) == 1, "a dropped stream must not cancel the call"
        replay = await sse(client, "GET", Accept="text/event-stream", Last_Event_ID=seen[-1])
        assert replay.status == 200
        ids = [int(event_id.split("-")[1]) for event_id in replay.event_ids]
        assert ids == sorted(ids) and ids[0] > int(seen[-1].split("-")[1])
        final = replay.messages[-1]
        assert final == replay.response() and final["id"] == "resumable"
        assert final["result"]["isError"] is False
        progress = [m["params"]["progress"] for m in replay.messages[:-1]]
        assert progress == sorted(set(progress))
        assert simulator.stats.aborted == 0
        # The same replay again, from the start: everything kept, the response last.
        again = await sse(client, "GET", Accept="text/event-stream", Last_Event_ID=seen[0])
        assert again.messages[-1] == final
        unknown = await client.http.get(
            client.url, headers=client.headers(Accept="text/event-stream", Last_Event_ID="999-1")
        )
        assert unknown.status_code == 400


async def test_last_event_id_with_non_ascii_digits_is_refused_with_400(daemon: Any) -> None:
    # Found by the soak: "\xb2" (superscript two) passes str.isdigit() but not int(): a 500.
    async with mcp_session(daemon.http_url) as client:
        for last in (b"\xb2-1", b"1-\xb3", b"\xb9"):
            headers = {**client.headers(Accept="text/event-stream"), "Last-Event-ID": last}
            response = await client.http.get(client.url, headers=headers)
            assert response.status_code == 400, response.text
            assert "Last-Event-ID" in response.json()["error"]["message"]
        await valid_call_works(client)


async def test_a_kept_alive_connection_closes_when_idle_after_an_sse_answer(
    daemons: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The end of an SSE answer must leave hypercorn's connection in its keep-alive state
    # (its idle timer running), not cut its bookkeeping short: else an idle client's
    # connection stays open for good. Several at once, as the cut depended on task order.
    monkeypatch.setattr(http_transport, "KEEP_ALIVE_S", 0.3)
    bound = await daemons.start()
    async with mcp_session(bound.http_url) as client:
        url = httpx.URL(client.url)

        async def call_then_idle(n: int) -> None:
            body = json.dumps(call(n, "chat", {"prompt": "hi"}, progressToken=n)).encode()
            head = "".join(f"{k}: {v}\r\n" for k, v in client.headers().items())
            raw = f"POST /mcp HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n{head}Content-Length: {len(body)}\r\n\r\n"
            received = b""
            async with await trio.open_tcp_stream(url.host, url.port) as sock:
                await sock.send_all(raw.encode() + body)
                with trio.fail_after(3):
                    while not received.endswith(b"\r\n0\r\n\r\n"):  # the answer's last chunk
                        received += await sock.receive_some()
                assert b'"result"' in received
                with trio.fail_after(3):  # then nothing more: the server closes the idle connection
                    assert await sock.receive_some() == b""

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(call_then_idle, n)


async def test_requests_keep_a_session_from_its_idle_timeout(daemons: Any) -> None:
    bound = await daemons.start(http_session_idle_secs=0.4)
    async with mcp_session(bound.http_url) as client:
        for n in range(8):  # 1.2 s in all, past the idle timeout three times over
            await trio.sleep(0.15)
            assert (await client.rpc(request(n, "ping")))["result"] == {}
        await eventually(lambda: len(bound.daemon.connections) == 0, what="the idle session ended")


async def test_idle_session_is_ended_with_its_calls(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(http_session_idle_secs=0.5)
    async with mcp_session(bound.http_url) as client:
        # A request stream that the client drops: the call runs on, the session goes idle.
        with trio.move_on_after(0.3):
            await client.post(call("idle", "chat", {"prompt": f"x\n{HANG}"}))
        assert simulator.stats.inflight == 1
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.aborted == 1)
        assert (await client.post(request(1, "ping"))).status_code == 404
        assert len(bound.daemon.connections) == 0


async def test_open_get_stream_keeps_an_idle_session(daemons: Any) -> None:
    bound = await daemons.start(http_session_idle_secs=0.3)
    async with mcp_session(bound.http_url) as client:
        with trio.move_on_after(0.8) as held:
            async with aconnect_sse(client.http, "GET", client.url, headers=client.headers()) as source:
                assert source.response.status_code == 200
                conflict = await client.http.get(client.url, headers=client.headers())
                assert conflict.status_code == 409
                async for _ in source.aiter_sse():
                    pass
        assert held.cancelled_caught, "the GET stream ended before the client closed it"
        assert (await client.rpc(request(1, "ping")))["result"] == {}
        await trio.sleep(0.6)
        assert (await client.post(request(2, "ping"))).status_code == 404


async def test_cancel_notification_ends_the_stream_without_a_response(daemon: Any, simulator: Any) -> None:
    async with mcp_session(daemon.http_url) as client, trio.open_nursery() as nursery:
        replies: list[HttpAnswer] = []

        async def post_call() -> None:
            replies.append(await sse(client, "POST", call("to-cancel", "chat", {"prompt": f"x\n{HANG}"})))

        nursery.start_soon(post_call)
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "to-cancel"}}
        assert (await client.post(note)).status_code == 202
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 1)
        await eventually(lambda: bool(replies), what="the call's stream ended")
        assert replies[0].status == 200 and replies[0].event_ids and replies[0].response() is None
        await valid_call_works(client)


async def test_shutdown_refuses_new_sessions_and_lets_calls_finish(daemons: Any) -> None:
    bound = await daemons.start(shutdown_grace_secs=2.0)
    async with mcp_session(bound.http_url) as client, trio.open_nursery() as nursery:
        replies: list[dict[str, Any]] = []

        async def slow_call() -> None:
            replies.append(await client.call_tool("chat", {"prompt": sim_prompt("slow", latency_s=0.5)}))

        nursery.start_soon(slow_call)
        await eventually(lambda: len(bound.daemon.calls) == 1)
        bound.daemon.request_shutdown()
        await eventually(lambda: bound.daemon.draining)
        async with httpx.AsyncClient() as http:
            late = await McpHttp(http, bound.http_url).post(
                request(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
            )
        assert late.status_code == 503
        await eventually(lambda: bool(replies), timeout=3, what="the call finished in the grace period")
        assert replies[0]["result"]["isError"] is False
        with trio.fail_after(5):
            await bound.daemon.stopped.wait()


async def test_shutdown_cancels_calls_past_the_grace_and_ends_streams(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(shutdown_grace_secs=0.2)
    async with mcp_session(bound.http_url) as client, trio.open_nursery() as nursery:
        replies: list[dict[str, Any]] = []

        async def hanging_call() -> None:
            replies.append(await client.call_tool("chat", {"prompt": f"x\n{HANG}"}))

        nursery.start_soon(hanging_call)
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
        bound.daemon.request_shutdown()
        with trio.fail_after(5):
            await bound.daemon.stopped.wait()
        await eventually(lambda: bool(replies), what="the stream ended with an answer")
        assert replies[0]["error"]["data"] == {"reason": "shutdown"}
        assert simulator.stats.aborted == 1


async def test_replay_kept_is_bounded_per_session(daemon: Any) -> None:
    async with mcp_session(daemon.http_url) as client:
        for n in range(3):
            await client.rpc(call(n, "version", {}))
        session = next(iter(daemon.daemon.connections.active.values()))
        http_session = session.send.__self__
        assert 0 < len(http_session.replay) <= REPLAY_MAX_EVENTS
        assert 2 in http_session.streams  # the first call's stream, done, kept for replay
        for _ in range(REPLAY_MAX_EVENTS):
            http_session._push(http_session.open_stream(None, resumable=True), "x")
        assert len(http_session.replay) == REPLAY_MAX_EVENTS
        assert 2 not in http_session.streams  # its events evicted: the stream is gone
        assert (await client.delete()).status_code == 204
    await eventually(lambda: not http_session.replay and not http_session.streams, what="freed")


# -- the contract's error table: tests/test_error_table.py (both transports); here what HTTP adds


@pytest.mark.parametrize("frame", ["{not json", *(frame for frame, _ in INVALID_FRAMES)])
async def test_a_frame_the_error_table_refuses_is_http_400(daemon: Any, frame: str) -> None:
    async with mcp_session(daemon.http_url) as client:
        response = await client.post(frame)
        assert response.status_code == 400
        assert response.json()["error"]["code"] in (-32700, -32600)


async def test_without_a_session_only_initialize_and_a_failed_one_makes_none(daemon: Any) -> None:
    async with httpx.AsyncClient() as http:
        client = McpHttp(http, daemon.http_url)
        bad = await client.post(request(0, "initialize", {"protocolVersion": 5}))
        assert bad.json()["error"]["code"] == -32602 and "mcp-session-id" not in bad.headers
        assert (await client.post(request(1, "tools/list"))).status_code == 400
        await client.initialize("2025-06-18")
        again = await client.rpc(request(2, "initialize", {"protocolVersion": "2025-11-25"}))
        assert again["error"]["code"] == -32600
        await valid_call_works(client)
        assert (await client.delete()).status_code == 204


# -- small pure parts ---------------------------------------------------------------------------


def test_accept_parsing() -> None:
    assert accepts("application/json, text/event-stream", "text/event-stream")
    assert accepts("text/*;q=0.5", "text/event-stream") and accepts("*/*", "application/json")
    assert not accepts("text/html", "application/json")


async def test_a_fault_in_one_session_ends_only_that_session(daemon: Any, log_lines: list[str]) -> None:
    async with mcp_session(daemon.http_url) as broken, mcp_session(daemon.http_url) as healthy:
        sessions = {s.send.__self__.secret: s for s in daemon.daemon.connections.active.values()}
        session = sessions[broken.session_id]

        async def explode(frame: bytes) -> None:
            raise RuntimeError("dispatch broke")

        session.dispatch = explode  # type: ignore[method-assign]
        await broken.post(request(1, "ping"))
        await eventually(lambda: len(daemon.daemon.connections) == 1, what="the broken session ended")
        failures = [line for line in log_lines if "failed, error id" in line]
        assert len(failures) == 1 and session.id in failures[0]
        assert (await broken.post(request(2, "ping"))).status_code == 404
        await valid_call_works(healthy)


# -- property: whatever arrives, a clear 4xx or an answer, never a 5xx; the session goes on ----
# pytest-trio fixtures do not outlive one hypothesis example, so each example runs its own
# daemon (demo mode: no provider needed) in its own trio.run.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from exai.server import serve  # noqa: E402

_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=10,
        ).map(json.dumps),
    ),
    method=st.sampled_from(["POST", "GET", "DELETE", "PUT"]),
    accept=_header_text | st.just(ACCEPT_BOTH),
    version=st.none() | _header_text | st.just("2025-11-25"),
    last_event_id=st.none() | _header_text,
)
def test_any_request_gets_a_clear_answer_and_the_session_goes_on(
    tmp_path: Any, body: Any, method: str, accept: str, version: str | None, last_event_id: str | None
) -> None:
    from conftest import test_settings

    async def example() -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(partial(serve, test_settings(tmp_path, None), demo=True))
            async with mcp_session(bound.http_url) as client:
                headers = client.headers(Accept=accept)
                if version is not None:
                    headers["MCP-Protocol-Version"] = version
                if last_event_id is not None:
                    headers["Last-Event-ID"] = last_event_id
                # A GET may open the server stream, which stays open: read the status only.
                with trio.fail_after(5):
                    async with client.http.stream(method, client.url, content=body, headers=headers) as response:
                        assert response.status_code < 500, response.status_code
                if method != "DELETE":
                    assert (await client.rpc(request("after", "ping")))["result"] == {}
            bound.daemon.request_shutdown()

    trio.run(example)
