"""One client can never take the daemon down: the issue's reproductions, and the fault
boundary around each connection.

Each test keeps a bystander: another client with a call in flight while the bad client
does its thing; the bystander's call must complete. Real loopback sockets, real time with
short, generous bounds.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from support import eventually, port_of, raw_handshake, serve_process, upgrade_request
from trio_websocket import ConnectionClosed

from exai.client import CannotConnect, ExaiClient, open_websocket
from exai.client import connect as connect_any_era
from exai.protocol import MAX_DEPTH

ERROR_ID = re.compile(r"error id [0-9a-f]{12}")

# These are the legacy revisions' rules (contract sections 3 and 3b, unchanged beside the
# modern era): raw frames here are legacy frames, so the client speaks legacy too.
connect = partial(connect_any_era, era="legacy")


def sim_prompt(text: str, **behaviour: Any) -> str:
    return f"{text}\n#sim {json.dumps(behaviour)}"


@asynccontextmanager
async def bystander(url: str, **connect_args: Any) -> AsyncIterator[ExaiClient]:
    """Another client whose call (0.5 s at the simulator) is in flight for the body; on
    exit, that call must have completed normally."""
    results: list[Any] = []

    async with connect(url, **connect_args) as client, trio.open_nursery() as nursery:

        async def call() -> None:
            results.append(await client.call_tool("chat", {"prompt": sim_prompt("steady", latency_s=0.5)}))

        nursery.start_soon(call)
        yield client
    assert len(results) == 1 and not results[0].is_error, results


async def still_serves(client: ExaiClient) -> None:
    result = await client.call_tool("chat", {"prompt": "still there?"})
    assert not result.is_error, result.text


def error_id_lines(log_lines: list[str]) -> list[str]:
    return [line for line in log_lines if ERROR_ID.search(line)]


def no_traceback(log_lines: list[str]) -> None:
    """A traceback appears only inside the one log event of an error id."""
    assert all(ERROR_ID.search(line) for line in log_lines if "Traceback" in line)


def reset_on_close(stream: trio.SocketStream) -> None:
    """Make closing the socket send RST instead of FIN, as a crashed client would."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


# -- the five reproductions -----------------------------------------------------


async def test_100000_brackets_get_an_error_and_the_daemon_stays_up(
    daemon: Any, log_lines: list[str]
) -> None:
    async with bystander(daemon.url), connect(daemon.url) as client:
        await client.send_raw("[" * 100_000)
        reply = await client.receive_raw()
        assert reply["id"] is None
        assert reply["error"]["code"] in (-32700, -32600), reply
        await still_serves(client)
    assert not error_id_lines(log_lines)
    no_traceback(log_lines)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 5000])
async def test_nesting_deeper_than_the_limit_is_refused(daemon: Any, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    async with connect(daemon.url) as client:
        await client.send_raw(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})[:-1] + f',"x":{nested}}}')
        reply = await client.receive_raw()
        if depth <= 1000:
            assert reply["error"]["code"] == -32600, reply
            assert str(MAX_DEPTH) in reply["error"]["message"]
        else:  # the parser itself stops at 1024 levels
            assert reply["error"]["code"] == -32700, reply
        await still_serves(client)


async def test_nesting_at_the_limit_is_fine(daemon: Any) -> None:
    # The message object is level 1, "x" holds the rest.
    nested = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    async with connect(daemon.url) as client:
        await client.send_raw(f'{{"jsonrpc":"2.0","id":1,"method":"ping","x":{nested}}}')
        reply = await client.receive_raw()
        assert reply == {"jsonrpc": "2.0", "id": 1, "result": {}}


@pytest.mark.parametrize("request_id", [[1], {"a": 1}, 1.5, None, True])
async def test_cancelled_with_a_request_id_of_the_wrong_type_is_ignored(
    daemon: Any, log_lines: list[str], request_id: Any
) -> None:
    async with bystander(daemon.url), connect(daemon.url) as client:
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "chat", "arguments": {"prompt": sim_prompt("x", latency_s=0.3)}},
        }
        await client.send_raw(json.dumps(call))
        await eventually(lambda: len(daemon.daemon.calls) >= 1)
        await client.notify("notifications/cancelled", {"requestId": request_id})
        # `true == 1` in Python: a bool must not cancel call 1.
        with trio.fail_after(5):
            reply = await client.receive_raw()
        assert reply["id"] == 1 and reply["result"]["isError"] is False, reply
        await still_serves(client)
    assert not error_id_lines(log_lines)
    no_traceback(log_lines)


async def test_client_closing_mid_handshake_ends_only_that_connection(
    daemons: Any, log_lines: list[str]
) -> None:
    for token in (None, "tok-en"):  # the accept path and the reject path
        bound = await daemons.start(auth_token=token)
        port = port_of(bound.url)
        auth = (b"Authorization: Bearer tok-en",) if token else ()
        async with bystander(bound.url, token=token):
            for attempt in range(20):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                reset_on_close(stream)
                if attempt % 2:
                    await stream.send_all(upgrade_request(*auth))
                else:  # half a request
                    await stream.send_all(upgrade_request(*auth)[:40])
                await stream.aclose()
                await trio.sleep(0.01)
        with trio.fail_after(2):
            await bound.daemon.connections.wait_empty()
    assert not error_id_lines(log_lines)
    no_traceback(log_lines)


async def test_non_ascii_bearer_is_401_not_a_crash(
    daemons: Any, log_lines: list[str]
) -> None:
    bound = await daemons.start(auth_token="s3cret-token")
    async with bystander(bound.url, token="s3cret-token"):
        for value in (b"Bearer s3cret-t\xc3\xb6ken", b"Bearer \xff\xfe", "Bearer s3cret-tokén".encode()):
            answer = await raw_handshake(bound.url, b"Authorization: " + value)
            assert answer.startswith(b"HTTP/1.1 401"), answer
    assert not error_id_lines(log_lines)
    no_traceback(log_lines)


async def test_a_burst_of_handshakes_never_opens_more_than_the_limit(daemons: Any) -> None:
    bound = await daemons.start(max_connections=10)
    opened: list[int] = []
    refused: list[str] = []
    most = 0
    all_tried = trio.Event()

    async def watch() -> None:
        nonlocal most
        while True:
            daemon = bound.daemon
            most = max(most, len(daemon.connections), daemon.connection_slots.borrowed_tokens)
            await trio.lowlevel.checkpoint()

    async def one() -> None:
        try:
            async with open_websocket(bound.url):
                opened.append(1)
                await all_tried.wait()
        except CannotConnect as exc:
            refused.append(str(exc))

    async with trio.open_nursery() as watcher:
        watcher.start_soon(watch)
        async with trio.open_nursery() as clients:
            for _ in range(60):
                clients.start_soon(one)
            await eventually(lambda: len(opened) + len(refused) == 60, timeout=10, what="60 handshakes answered")
            all_tried.set()
        watcher.cancel_scope.cancel()
    assert len(opened) == 10
    assert most <= 10
    assert len(refused) == 50
    assert all("HTTP 503" in text and "EXAI_MAX_CONNECTIONS=10" in text for text in refused), refused[0]
    with trio.fail_after(2):
        await bound.daemon.connections.wait_empty()
    async with connect(bound.url) as client:
        await still_serves(client)


# -- the fault boundary around a connection ---------------------------------------------


def explode_on(monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    """A bug nobody has found yet: the session raises on any frame containing `marker`."""
    from exai.session import Session

    real_dispatch = Session.dispatch

    async def dispatch(self: Session, frame: str | bytes) -> None:
        if marker in str(frame):
            raise RuntimeError("a bug nobody has found yet")
        await real_dispatch(self, frame)

    monkeypatch.setattr(Session, "dispatch", dispatch)


async def test_a_bug_in_a_connection_closes_it_with_1011_and_nothing_else(
    daemon: Any, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    explode_on(monkeypatch, "explode")
    async with bystander(daemon.url):
        async with open_websocket(daemon.url) as ws:
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": "explode", "method": "ping"}))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1011
            error_id = ERROR_ID.search(closed.value.reason.reason).group()  # type: ignore[union-attr]
    await eventually(lambda: bool(error_id_lines(log_lines)), what="the failure logged")  # after the close
    lines = error_id_lines(log_lines)
    assert len(lines) == 1, lines
    assert error_id in lines[0] and "1011" in lines[0]
    no_traceback(log_lines)


async def test_a_bug_in_a_connection_cancels_its_calls_as_a_disconnect(
    daemon: Any, simulator: Any, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    from exai import metrics

    explode_on(monkeypatch, "explode")
    disconnects = metrics.cancellations_total.labels("disconnect")._value.get()
    async with connect(daemon.url) as client:
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "chat", "arguments": {"prompt": 'x\n#sim {"hang": true}'}},
        }
        await client.send_raw(json.dumps(call))
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
        await client.send_raw(json.dumps({"jsonrpc": "2.0", "id": "explode", "method": "ping"}))
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 0)
    await eventually(lambda: bool(error_id_lines(log_lines)), what="the failure logged")
    assert metrics.cancellations_total.labels("disconnect")._value.get() == disconnects + 1
    assert len(error_id_lines(log_lines)) == 1


async def test_an_answer_that_cannot_be_sent_becomes_32603_and_the_connection_goes_on(
    daemon: Any, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    from exai.transports import ws as transport

    real_dump = transport.dump

    def dump(message: dict[str, Any]) -> str:
        if message.get("id") == "unsendable" and "result" in message:
            raise TypeError("Type is not JSON serializable: PosixPath")
        return real_dump(message)

    monkeypatch.setattr(transport, "dump", dump)
    async with connect(daemon.url) as client:
        await client.send_raw(json.dumps({"jsonrpc": "2.0", "id": "unsendable", "method": "ping"}))
        reply = await client.receive_raw()
        assert reply["id"] == "unsendable"
        assert reply["error"]["code"] == -32603
        lines = error_id_lines(log_lines)
        assert len(lines) == 1 and reply["error"]["data"]["error_id"] in lines[0]
        await still_serves(client)


async def test_a_bug_before_the_handshake_completes_refuses_it(
    daemon: Any, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    from exai.transports import ws as transport

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the handshake check")

    async with bystander(daemon.url):
        monkeypatch.setattr(transport, "_admit", broken)
        answer = await raw_handshake(daemon.url)
        monkeypatch.undo()
    assert answer.startswith(b"HTTP/1.1 500"), answer
    lines = error_id_lines(log_lines)
    assert len(lines) == 1, lines
    assert ERROR_ID.search(answer.decode()).group() in lines[0]  # type: ignore[union-attr]
    no_traceback(log_lines)


async def test_a_bug_in_one_message_answers_32603_and_the_connection_goes_on(
    daemon: Any, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    from exai import session as session_module

    def broken(frame: Any) -> Any:
        raise RuntimeError("a parser bug")

    async with connect(daemon.url) as client:
        monkeypatch.setattr(session_module, "parse_message", broken)
        await client.send_raw('{"jsonrpc":"2.0","id":5,"method":"ping"}')
        reply = await client.receive_raw()
        monkeypatch.undo()
        assert reply["error"]["code"] == -32603
        assert reply["id"] is None
        assert any(reply["error"]["data"]["error_id"] in line for line in log_lines)
        await still_serves(client)


async def test_stalled_handshake_is_dropped(daemons: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from exai.transports import ws as transport

    monkeypatch.setattr(transport, "HANDSHAKE_TIMEOUT_S", 0.5)
    bound = await daemons.start()
    port = port_of(bound.url)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(upgrade_request()[:50])
        started = trio.current_time()
        with trio.fail_after(3):
            assert await stream.receive_some(1024) == b""  # the daemon closed it
        assert 0.4 <= trio.current_time() - started <= 2.0
    async with connect(bound.url) as client:
        await client.ping()


async def test_handshake_status_codes_over_http(daemons: Any) -> None:
    bound = await daemons.start(max_connections=1)
    base = bound.url.replace("ws://", "http://")
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with connect(bound.url), httpx.AsyncClient() as http:
        full = await http.get(base, headers=upgrade)
        assert full.status_code == 503
        assert "EXAI_MAX_CONNECTIONS=1" in full.text


# -- as a user meets it: a real `exai serve` process -------------------------------------


async def test_the_five_reproductions_against_a_real_serve_process(tmp_path: Any) -> None:
    import signal

    async with serve_process(tmp_path, "--demo", EXAI_AUTH_TOKEN="tok-en", EXAI_MAX_CONNECTIONS="10") as served:
        url, proc = served.url, served.proc
        async with bystander(url, token="tok-en"), connect(url, token="tok-en") as client:
            await client.send_raw("[" * 100_000)
            assert (await client.receive_raw())["error"]["code"] in (-32700, -32600)
            await client.notify("notifications/cancelled", {"requestId": [1]})
            answer = await raw_handshake(url, "Authorization: Bearer tök-en".encode())
            assert answer.startswith(b"HTTP/1.1 401"), answer
            for _ in range(5):
                stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
                reset_on_close(stream)
                await stream.send_all(upgrade_request(b"Authorization: Bearer tok-en"))
                await stream.aclose()
            opened = 0
            refused = 0
            all_tried = trio.Event()

            async def one() -> None:
                nonlocal opened, refused
                try:
                    async with open_websocket(url, token="tok-en"):
                        opened += 1
                        await all_tried.wait()
                except CannotConnect as exc:
                    assert "HTTP 503" in str(exc)
                    refused += 1

            async with trio.open_nursery() as burst:
                for _ in range(60):
                    burst.start_soon(one)
                await eventually(lambda: opened + refused == 60, timeout=10, what="60 answers")
                all_tried.set()
            assert opened == 10 - 2  # the bystander and this client hold two slots
            await still_serves(client)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0
    log = served.stderr.decode()
    assert "Traceback" not in log
    assert not ERROR_ID.search(log)
