"""TrioH11Transport against a real h11 server on loopback.

Rules: 127.0.0.1 and port 0 only; real time with short, generous bounds (the transport's
work is socket I/O, which the autojump clock cannot drive). The server below is built on
h11 so each path's behaviour (hang, stream, close, reset, garbage) is exact, and it counts
accepted connections and timestamps every client disconnect.

Run by hand for throughput (not a test): `python tests/test_transport.py` compares this
transport with httpx's default one, 64 concurrent requests for 2 s each, the server in a
separate process.
"""

from __future__ import annotations

import json
import math
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
from httpx_sse import aconnect_sse

from exai.providers.transport import TrioH11Transport

WAIT_S = 2.0  # generous bound for anything the server should observe
ABORT_S = 0.1  # the server must see a cancelled request's disconnect within this


class Server:
    """The test server's observable state; one `ServerConnection` per accepted socket."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.client_closes: list[float] = []  # trio.current_time() of each client disconnect
        self.server_closes = 0
        self.parked = 0  # requests that wait for the client to go away
        self.drain = trio.Event()  # /sink starts reading the body once this is set
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.accepted += 1
        self.notify()
        await ServerConnection(self, stream).run()


class ServerConnection:
    def __init__(self, server: Server, stream: trio.abc.Stream):
        self.server = server
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER)
        self.served = 0
        self.head_request = False

    async def run(self) -> None:
        try:
            while True:
                event = await self.next_event()
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request)
                self.served += 1
                self.head_request = event.method == b"HEAD"
                path = event.target.decode().partition("?")[0]
                keep_open = await ROUTES[path](self, event)
                if (
                    not keep_open
                    or self.h11.our_state is not h11.DONE
                    or self.h11.their_state is not h11.DONE
                ):
                    break
                self.h11.start_next_cycle()
            await trio.aclose_forcefully(self.stream)
            self.server.server_closes += 1
            self.server.notify()
        except trio.BrokenResourceError:  # the client reset the connection
            self.client_closed()

    def client_closed(self) -> None:
        self.server.client_closes.append(trio.current_time())
        self.server.notify()

    async def receive(self) -> bytes:
        data = await self.stream.receive_some(65536)
        if not data:
            self.client_closed()
        return bytes(data)

    async def next_event(self) -> Any:
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            self.h11.receive_data(await self.receive())
        return event

    async def body(self) -> bytes:
        chunks = []
        while isinstance(event := await self.next_event(), h11.Data):
            chunks.append(bytes(event.data))
        assert isinstance(event, h11.EndOfMessage)
        return b"".join(chunks)

    async def wait_for_client_close(self) -> None:
        while await self.receive():
            pass

    async def send(self, *events: Any) -> None:
        await self.stream.send_all(b"".join(self.h11.send(e) or b"" for e in events))

    async def send_json(self, value: Any, *headers: tuple[str, str]) -> None:
        data = json.dumps(value).encode()
        head = [("content-type", "application/json"), ("content-length", str(len(data))), *headers]
        response = h11.Response(status_code=200, headers=head, reason=b"OK")
        if self.head_request:  # a HEAD response has no body
            await self.send(response, h11.EndOfMessage())
        else:
            await self.send(response, h11.Data(data=data), h11.EndOfMessage())

    async def reset(self) -> None:
        """Close with an RST (SO_LINGER 0) instead of a FIN."""
        assert isinstance(self.stream, trio.SocketStream), "plain TCP only"
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(self.stream)


def query(request: h11.Request) -> dict[str, str]:
    return dict(httpx.URL(request.target.decode()).params)


async def route_json(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    await conn.send_json(
        {"method": request.method.decode(), "query": query(request), "served": conn.served}
    )
    return True


async def route_echo(conn: ServerConnection, request: h11.Request) -> bool:
    body = await conn.body()
    await conn.send_json({"echo": json.loads(body) if body else None, "length": len(body)})
    return True


async def route_slow(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    await trio.sleep(float(query(request)["delay"]))
    await conn.send_json({"slow": True})
    return True


async def route_hang(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    conn.server.parked += 1
    conn.server.notify()
    await conn.wait_for_client_close()
    return False


async def route_stream(conn: ServerConnection, request: h11.Request) -> bool:
    """Server-sent events, one chunk each; `hang=1` sends one and then waits for the client."""
    await conn.body()
    params = query(request)
    head = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]
    await conn.send(h11.Response(status_code=200, headers=head))
    for i in range(int(params.get("lines", "1"))):
        await conn.send(h11.Data(data=f"data: {i}\n\n".encode()))
        await trio.sleep(0.005)
    if params.get("hang"):
        conn.server.parked += 1
        conn.server.notify()
        await conn.wait_for_client_close()
        return False
    await conn.send(h11.EndOfMessage())
    return True


async def route_close_after(conn: ServerConnection, request: h11.Request) -> bool:
    """A complete keep-alive response, then the server closes the connection anyway."""
    await conn.body()
    await conn.send_json({"closing": True})
    return False


async def route_once(conn: ServerConnection, request: h11.Request) -> bool:
    """Answers a connection's first request; closes without an answer on any later one."""
    await conn.body()
    if conn.served > 1:
        return False
    await conn.send_json({"once": True})
    return True


async def route_drop(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    return False


async def route_reset(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    await conn.reset()
    return False


async def route_mid_body(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    await conn.send(
        h11.Response(status_code=200, headers=[("content-length", "100")]), h11.Data(data=b"x" * 10)
    )
    return False


async def route_connection_close(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    await conn.send_json({"bye": True}, ("connection", "close"))
    return True  # h11 itself refuses another cycle after "Connection: close"


async def route_garbage(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    await conn.stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
    await conn.wait_for_client_close()
    return False


async def route_sink(conn: ServerConnection, request: h11.Request) -> bool:
    """Reads no body until the test sets `drain`, so the client's upload blocks; then drains."""
    conn.server.parked += 1
    conn.server.notify()
    await conn.server.drain.wait()
    await conn.wait_for_client_close()
    return False


async def route_sink_reset(conn: ServerConnection, request: h11.Request) -> bool:
    """Resets the connection while the client is still uploading."""
    await conn.reset()
    return False


async def route_early_hints(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    await conn.send(
        h11.InformationalResponse(status_code=103, headers=[("link", "</x.css>; rel=preload")])
    )
    await conn.send_json({"hinted": True})
    return True


async def route_switch(conn: ServerConnection, request: h11.Request) -> bool:
    await conn.body()
    await conn.send(
        h11.InformationalResponse(
            status_code=101, headers=[("upgrade", "demo"), ("connection", "upgrade")]
        )
    )
    await conn.wait_for_client_close()
    return False


ROUTES: dict[str, Callable[[ServerConnection, h11.Request], Awaitable[bool]]] = {
    "/json": route_json,
    "/echo": route_echo,
    "/slow": route_slow,
    "/hang": route_hang,
    "/stream": route_stream,
    "/close-after": route_close_after,
    "/once": route_once,
    "/drop": route_drop,
    "/reset": route_reset,
    "/mid-body": route_mid_body,
    "/connection-close": route_connection_close,
    "/garbage": route_garbage,
    "/sink": route_sink,
    "/sink-reset": route_sink_reset,
    "/early-hints": route_early_hints,
    "/switch": route_switch,
}


async def serve(
    server: Server,
    ssl_context: ssl.SSLContext | None = None,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server.port = tcp[0].socket.getsockname()[1]
    listeners: list[trio.abc.Listener[Any]] = [*tcp]
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in tcp
        ]
    await trio.serve_listeners(server.handle, listeners, task_status=task_status)


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    srv = Server()
    await nursery.start(serve, srv)
    return srv


@pytest.fixture
async def transport() -> AsyncIterator[TrioH11Transport]:
    pool = TrioH11Transport()
    yield pool
    await pool.aclose()


@pytest.fixture
async def client(server: Server, transport: TrioH11Transport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as http:
        yield http


class EndlessUpload:
    """A request body that never ends; an iterator, not a generator, so nothing to finalize."""

    def __aiter__(self) -> EndlessUpload:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return b"u" * 65536


async def small_upload() -> AsyncIterator[bytes]:
    yield b'{"streamed":'
    yield b" true}"


# --- requests and the pool ------------------------------------------------------------------


async def test_get_and_post_json(client: httpx.AsyncClient, transport: TrioH11Transport) -> None:
    got = await client.get("/json", params={"q": "a b"})
    assert got.status_code == 200
    assert got.json() == {"method": "GET", "query": {"q": "a b"}, "served": 1}
    assert got.http_version == "HTTP/1.1"
    assert got.reason_phrase == "OK"
    posted = await client.post("/echo", json={"x": [1, 2]})
    assert posted.json() == {"echo": {"x": [1, 2]}, "length": len(b'{"x":[1,2]}')}
    assert transport.statistics() == {"open": 1, "idle": 1, "active": 0, "opened_total": 1}


async def test_head_and_informational_responses_keep_the_connection(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    head = await client.head("/json")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert (await client.get("/early-hints")).json() == {"hinted": True}
    assert server.accepted == 1
    assert transport.statistics()["idle"] == 1


async def test_protocol_switch_is_refused(
    client: httpx.AsyncClient, transport: TrioH11Transport
) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="unexpected response"):
        await client.get("/switch", headers={"upgrade": "demo", "connection": "upgrade"})
    assert transport.statistics()["open"] == 0


async def test_streamed_request_body_is_sent_chunked(client: httpx.AsyncClient) -> None:
    posted = await client.post("/echo", content=small_upload())
    assert posted.json() == {"echo": {"streamed": True}, "length": 18}


async def test_sequential_requests_share_one_connection(
    client: httpx.AsyncClient, server: Server
) -> None:
    for i in range(10):
        response = await client.get("/json")
        assert response.json()["served"] == i + 1
    assert server.accepted == 1


async def test_second_concurrent_batch_reuses_the_first_batch_connections(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    async def batch() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(32):
                nursery.start_soon(client.get, "/slow?delay=0.05")

    await batch()
    assert server.accepted == 32
    assert transport.statistics() == {"open": 32, "idle": 32, "active": 0, "opened_total": 32}
    await batch()
    assert server.accepted == 32
    assert transport.statistics()["opened_total"] == 32


async def test_idle_connections_beyond_max_keepalive_are_closed(server: Server) -> None:
    async with httpx.AsyncClient(
        transport=TrioH11Transport(max_keepalive=4), base_url=server.url
    ) as http:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(http.get, "/slow?delay=0.05")
        assert isinstance(http._transport, TrioH11Transport)
        assert http._transport.statistics() == {
            "open": 4,
            "idle": 4,
            "active": 0,
            "opened_total": 10,
        }
        await server.wait_until(lambda: len(server.client_closes) == 6)


async def test_expired_idle_connection_is_replaced(server: Server) -> None:
    pool = TrioH11Transport(keepalive_expiry=0.05)
    async with httpx.AsyncClient(transport=pool, base_url=server.url) as http:
        await http.get("/json")
        await trio.sleep(0.1)
        assert (await http.get("/json")).json()["served"] == 1
    assert server.accepted == 2
    assert pool.statistics()["open"] == 0


async def test_connection_close_response_is_not_pooled(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    for _ in range(2):
        assert (await client.get("/connection-close")).json() == {"bye": True}
        assert transport.statistics()["open"] == 0
    assert server.accepted == 2


async def test_transport_aclose_closes_idle_sockets(server: Server) -> None:
    pool = TrioH11Transport()
    http = httpx.AsyncClient(transport=pool, base_url=server.url)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(http.get, "/slow?delay=0.05")
    assert pool.statistics()["idle"] == 3
    await pool.aclose()
    assert pool.statistics()["open"] == 0
    await server.wait_until(lambda: len(server.client_closes) == 3)
    with pytest.raises(RuntimeError, match="closed"):
        await pool.handle_async_request(httpx.Request("GET", server.url + "/json"))
    await http.aclose()


async def test_transport_aclose_closes_active_sockets(server: Server) -> None:
    pool = TrioH11Transport()
    async with httpx.AsyncClient(transport=pool, base_url=server.url) as http:
        async with trio.open_nursery() as nursery:
            failures: list[BaseException] = []

            async def hang() -> None:
                with pytest.raises(httpx.ReadError) as caught:
                    await http.get("/hang")
                failures.append(caught.value)

            nursery.start_soon(hang)
            await server.wait_until(lambda: server.parked == 1)
            assert pool.statistics()["active"] == 1
            await pool.aclose()
        assert len(failures) == 1
    assert pool.statistics()["open"] == 0


# --- streaming ------------------------------------------------------------------------------


async def test_stream_lines_then_connection_is_reused(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    async with client.stream("GET", "/stream?lines=4") as response:
        assert transport.statistics()["active"] == 1
        lines = [line async for line in response.aiter_lines() if line]
    assert lines == ["data: 0", "data: 1", "data: 2", "data: 3"]
    assert transport.statistics() == {"open": 1, "idle": 1, "active": 0, "opened_total": 1}
    assert (await client.get("/json")).status_code == 200
    assert server.accepted == 1


async def test_server_sent_events(client: httpx.AsyncClient) -> None:
    async with aconnect_sse(client, "GET", "/stream?lines=3") as source:
        data = [event.data async for event in source.aiter_sse()]
    assert data == ["0", "1", "2"]


async def test_aclose_mid_body_closes_the_socket(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    async with client.stream("GET", "/stream?lines=1&hang=1"):
        await server.wait_until(lambda: server.parked == 1)  # the first chunk is on its way
        closed_at = trio.current_time()
    assert transport.statistics()["open"] == 0
    await server.wait_until(lambda: len(server.client_closes) == 1)
    assert server.client_closes[0] - closed_at < ABORT_S


# --- cancellation ---------------------------------------------------------------------------


async def cancel_when(
    ready: Callable[[], Awaitable[Any]], request: Callable[[], Awaitable[Any]]
) -> float:
    """Run `request`, cancel it once `ready()` returns, and return when it was cancelled."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel() -> None:
                await ready()
                scope.cancel()

            nursery.start_soon(cancel)
            await request()
            pytest.fail("the request finished although it should hang")
    assert scope.cancelled_caught
    return trio.current_time()


def parked(server: Server) -> Callable[[], Awaitable[None]]:
    return partial(server.wait_until, lambda: server.parked == 1)


async def test_cancel_while_waiting_for_the_head_closes_the_socket(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    cancelled_at = await cancel_when(parked(server), partial(client.get, "/hang"))
    assert transport.statistics()["open"] == 0
    await server.wait_until(lambda: len(server.client_closes) == 1)
    assert server.client_closes[0] - cancelled_at < ABORT_S


async def test_cancel_while_reading_the_body_closes_the_socket(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    chunks: list[bytes] = []
    first_chunk = trio.Event()

    async def read_all() -> None:
        async with client.stream("GET", "/stream?lines=1&hang=1") as response:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                first_chunk.set()

    cancelled_at = await cancel_when(first_chunk.wait, read_all)
    assert chunks == [b"data: 0\n\n"]  # streamed before the body ended
    assert transport.statistics()["open"] == 0
    await server.wait_until(lambda: len(server.client_closes) == 1)
    assert server.client_closes[0] - cancelled_at < ABORT_S


async def test_cancel_while_reading_the_body_closes_the_socket_without_response_close(
    server: Server, transport: TrioH11Transport
) -> None:
    """The transport itself closes the socket; it does not rely on httpx closing the response."""
    first_chunk = trio.Event()

    async def read_all() -> None:
        request = httpx.Request("GET", server.url + "/stream?lines=1&hang=1")
        response = await transport.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        async for _ in response.stream:
            first_chunk.set()

    await cancel_when(first_chunk.wait, read_all)
    assert transport.statistics()["open"] == 0
    await server.wait_until(lambda: len(server.client_closes) == 1)


async def test_cancel_while_sending_the_body_closes_the_socket(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    await cancel_when(parked(server), partial(client.post, "/sink", content=EndlessUpload()))
    assert transport.statistics()["open"] == 0
    server.drain.set()  # the server must read the buffered upload before it can see the FIN
    await server.wait_until(lambda: len(server.client_closes) == 1)


async def test_cancel_on_a_reused_connection_closes_it(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    await client.get("/json")
    cancelled_at = await cancel_when(parked(server), partial(client.get, "/hang"))
    assert server.accepted == 1
    assert transport.statistics()["open"] == 0
    await server.wait_until(lambda: len(server.client_closes) == 1)
    assert server.client_closes[0] - cancelled_at < ABORT_S


# --- stale connections and retries ----------------------------------------------------------


async def test_connection_closed_by_the_server_while_idle_is_not_reused(
    client: httpx.AsyncClient, server: Server
) -> None:
    await client.get("/close-after")
    await server.wait_until(lambda: server.server_closes == 1)
    # A streamed body cannot be retried, so this succeeds only if the dead idle connection
    # was noticed before sending on it.
    posted = await client.post("/echo", content=small_upload())
    assert posted.json()["echo"] == {"streamed": True}
    assert server.accepted == 2


async def test_request_on_a_stale_connection_is_retried_once_on_a_fresh_one(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    await client.get("/once")
    again = await client.post("/once", json={"replayable": True})
    assert again.json() == {"once": True}
    assert server.accepted == 2
    assert transport.statistics()["opened_total"] == 2


async def test_streamed_body_on_a_stale_connection_is_not_retried(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    await client.get("/once")
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await client.post("/once", content=small_upload())
    assert server.accepted == 1
    assert transport.statistics()["open"] == 0


async def test_failure_on_a_fresh_connection_is_not_retried(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await client.get("/drop")
    assert server.accepted == 1
    assert transport.statistics()["open"] == 0


# --- errors and timeouts --------------------------------------------------------------------


async def test_read_timeout(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.get("/hang", timeout=httpx.Timeout(5.0, read=0.05))
    assert transport.statistics()["open"] == 0
    await server.wait_until(lambda: len(server.client_closes) == 1)


async def test_write_timeout(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    with pytest.raises(httpx.WriteTimeout):
        await client.post("/sink", content=EndlessUpload(), timeout=httpx.Timeout(5.0, write=0.1))
    assert transport.statistics()["open"] == 0
    server.drain.set()
    await server.wait_until(lambda: len(server.client_closes) == 1)


async def test_connect_error_on_a_closed_port(transport: TrioH11Transport) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ConnectError, match=f"127.0.0.1:{port}"):
            await http.get(f"http://127.0.0.1:{port}/")
    assert transport.statistics() == {"open": 0, "idle": 0, "active": 0, "opened_total": 0}


async def test_connect_timeout(transport: TrioH11Transport) -> None:
    # A listener with backlog 0 and one queued connection drops further SYNs (Linux).
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        port = listener.getsockname()[1]
        async with httpx.AsyncClient(transport=transport) as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get(f"http://127.0.0.1:{port}/", timeout=httpx.Timeout(5.0, connect=0.1))
    assert transport.statistics()["open"] == 0


async def test_mid_body_close_is_a_remote_protocol_error(
    client: httpx.AsyncClient, transport: TrioH11Transport
) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="mid-response"):
        await client.get("/mid-body")
    assert transport.statistics()["open"] == 0


async def test_reset_is_a_read_error(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    with pytest.raises(httpx.ReadError):
        await client.get("/reset")
    assert server.accepted == 1
    assert transport.statistics()["open"] == 0


async def test_reset_during_upload_is_a_write_error(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    with pytest.raises(httpx.WriteError):
        await client.post("/sink-reset", content=EndlessUpload())
    assert server.accepted == 1
    assert transport.statistics()["open"] == 0


async def test_invalid_response_is_a_remote_protocol_error(
    client: httpx.AsyncClient, server: Server, transport: TrioH11Transport
) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="invalid response"):
        await client.get("/garbage")
    assert transport.statistics()["open"] == 0
    await server.wait_until(lambda: len(server.client_closes) == 1)


async def test_unsupported_scheme(transport: TrioH11Transport) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/file"))


async def test_invalid_request_header_is_a_local_protocol_error(
    client: httpx.AsyncClient, transport: TrioH11Transport
) -> None:
    with pytest.raises(httpx.LocalProtocolError):
        await client.get("/json", headers={"bad header": "x"})
    assert transport.statistics()["open"] == 0


async def test_every_head_is_checked_however_often_a_like_one_went_through(client: httpx.AsyncClient) -> None:
    """h11 checks each request head; a good head sent before lets no bad one through."""
    for length in (1, 22, 333):  # same head, different Content-Length
        posted = await client.post("/echo", json={"x": "y" * length}, headers={"X-Same": "a"})
        assert posted.json()["echo"] == {"x": "y" * length}
    with pytest.raises(httpx.LocalProtocolError):
        await client.post("/echo", json={"x": "y"}, headers={"X-Same": "a\x00b"})


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.skip("the openssl command is not installed")
    return cert, key


async def test_https_with_keep_alive(nursery: trio.Nursery, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    srv = Server()
    await nursery.start(serve, srv, server_context)
    url = f"https://127.0.0.1:{srv.port}"

    trusting = TrioH11Transport(ssl_context=ssl.create_default_context(cafile=str(cert)))
    async with httpx.AsyncClient(transport=trusting, base_url=url) as http:
        for i in range(3):
            assert (await http.post("/echo", json={"i": i})).json()["echo"] == {"i": i}
        async with http.stream("GET", "/stream?lines=2") as response:
            assert [line async for line in response.aiter_lines() if line] == ["data: 0", "data: 1"]
    assert srv.accepted == 1

    default = TrioH11Transport()  # certifi's roots do not trust our certificate
    async with httpx.AsyncClient(transport=default, base_url=url) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get("/json")
    assert default.statistics()["open"] == 0


# --- throughput, by hand ----------------------------------------------------------------------


async def measure(
    url: str, transport: httpx.AsyncBaseTransport | None, workers: int, seconds: float
) -> float:
    done = 0
    async with httpx.AsyncClient(transport=transport, base_url=url, timeout=30) as http:

        async def worker() -> None:
            nonlocal done
            while True:
                (await http.get("/json")).raise_for_status()
                done += 1

        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for _ in range(workers):
                    nursery.start_soon(worker)
    return done / seconds


async def run_server_forever() -> None:
    srv = Server()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, srv)
        print(srv.port, flush=True)
        await trio.sleep(math.inf)


def benchmark() -> None:
    with subprocess.Popen(
        [sys.executable, __file__, "serve"], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            url = f"http://127.0.0.1:{proc.stdout.readline().strip()}"
            for workers in (1, 64):
                for name, make in (
                    ("httpx default", lambda: None),
                    ("TrioH11Transport", TrioH11Transport),
                ):
                    cpu_before = time.process_time()
                    rate = trio.run(measure, url, make(), workers, 2.0)
                    cpu_ms = (time.process_time() - cpu_before) * 1000 / max(1.0, rate * 2.0)
                    print(
                        f"{name:18} {workers:3} concurrent: {rate:6.0f} req/s, "
                        f"client CPU {cpu_ms:.2f} ms/request"
                    )
        finally:
            proc.terminate()


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        trio.run(run_server_forever)
    else:
        benchmark()
