"""A cheap OpenAI-compatible provider for the benchmark: raw h11 on trio, canned answers.

`exai mock-provider` (hypercorn, pydantic, per-request behaviour) costs about 0.6 core at
300 calls/s, enough to bound a benchmark before the daemon does. This one prebuilds its
answers and does nothing per request beyond parsing HTTP and the JSON body.

    POST /v1/chat/completions   JSON, or SSE when the body says "stream": true
    POST /_sim/config           {"latency_s", "chunks", "chunk_delay_s", "hang"} (all optional)
    GET  /_sim/stats            {"requests", "inflight", "max_inflight", "aborted"}

While a request waits (latency, chunk delays, hang) it watches its socket: a client that
goes away ends it at once and counts as `aborted` (`last_abort_at` on trio's clock, for a
simulator run in the caller's own trio loop).

    python scripts/h11sim.py [--port 0]   # prints "h11sim on http://127.0.0.1:PORT/v1"
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Final

import h11
import trio

REPLY_WORDS: Final = "The simulated model answers in a few short words".split()
RECEIVE_BYTES: Final = 65536
MAX_BODY_BYTES: Final = 4 * 1024 * 1024


@dataclass
class Behaviour:
    latency_s: float = 0.0  # before the response head
    chunks: int = 5  # SSE content chunks
    chunk_delay_s: float = 0.0  # between SSE chunks
    hang: bool = False  # never answer; wait for the client to leave


@dataclass
class Stats:
    requests: int = 0
    inflight: int = 0
    max_inflight: int = 0
    aborted: int = 0
    last_abort_at: float = -math.inf


@dataclass
class _Canned:
    """Prebuilt bodies for one behaviour."""

    json_body: bytes
    sse_chunks: list[bytes] = field(default_factory=list)


def _canned(behaviour: Behaviour) -> _Canned:
    words = REPLY_WORDS
    usage = {"prompt_tokens": 8, "completion_tokens": len(words), "total_tokens": 8 + len(words)}
    reply = " ".join(words)
    completion = {
        "id": "chatcmpl-h11sim",
        "object": "chat.completion",
        "created": 0,
        "model": "sim",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        "usage": usage,
    }
    n = max(1, behaviour.chunks)
    per = math.ceil(len(words) / n)
    pieces = [" ".join(words[i * per : (i + 1) * per]) + " " for i in range(n)]

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        chunk = {
            "id": "chatcmpl-h11sim",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "sim",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    chunks = [event({"role": "assistant", "content": pieces[0]})]
    chunks += [event({"content": piece}) for piece in pieces[1:]]
    chunks.append(event({}, "stop", usage=usage) + b"data: [DONE]\n\n")
    return _Canned(json.dumps(completion).encode(), chunks)


JSON_HEADERS: Final = [(b"content-type", b"application/json")]
SSE_HEADERS: Final = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class _Gone(Exception):
    """The client closed its connection."""


class H11Sim:
    def __init__(self) -> None:
        self.stats = Stats()
        self.behaviour = Behaviour()
        self._canned = _canned(self.behaviour)
        self.url = ""
        self._changed = trio.Event()

    def configure(self, **fields: Any) -> None:
        self.behaviour = Behaviour(**{**self.behaviour.__dict__, **fields})
        self._canned = _canned(self.behaviour)

    async def wait_until(self, predicate: Any) -> None:
        while not predicate(self.stats):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.url = f"http://{host}:{listeners[0].socket.getsockname()[1]}/v1"
        task_status.started(self)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY_BYTES)
        try:
            while True:
                request, body = await self._read_request(conn, stream)
                if request is None:
                    return
                await self._route(conn, stream, request, body)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (_Gone, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _read_request(self, conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request | None, bytes]:
        request = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECEIVE_BYTES)
                conn.receive_data(data)
                if not data and request is None:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _route(self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request, body: bytes) -> None:
        method, target = request.method, request.target.split(b"?")[0]
        if method == b"POST" and target.endswith(b"/chat/completions"):
            await self._chat(conn, stream, body)
        elif method == b"POST" and target == b"/_sim/config":
            try:
                self.configure(**json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                await _send(conn, stream, 400, JSON_HEADERS, json.dumps({"error": {"message": str(exc)}}).encode())
                return
            await _send(conn, stream, 200, JSON_HEADERS, json.dumps(self.behaviour.__dict__).encode())
        elif method == b"GET" and target == b"/_sim/stats":
            stats = {k: v for k, v in self.stats.__dict__.items() if k != "last_abort_at"}
            await _send(conn, stream, 200, JSON_HEADERS, json.dumps(stats).encode())
        else:
            await _send(conn, stream, 404, JSON_HEADERS, b'{"error": {"message": "not found"}}')

    async def _chat(self, conn: h11.Connection, stream: trio.SocketStream, body: bytes) -> None:
        stats = self.stats
        stats.requests += 1
        stats.inflight += 1
        stats.max_inflight = max(stats.max_inflight, stats.inflight)
        self._notify()
        behaviour, canned = self.behaviour, self._canned
        try:
            streaming = json.loads(body).get("stream") is True
            if behaviour.hang or behaviour.latency_s or (streaming and behaviour.chunk_delay_s):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_watch, stream, nursery.cancel_scope)
                    await self._answer(conn, stream, behaviour, canned, streaming)
                    nursery.cancel_scope.cancel()
                if conn.our_state is not h11.DONE:
                    raise _Gone
            else:
                await self._answer(conn, stream, behaviour, canned, streaming)
        except _Gone:
            stats.aborted += 1
            stats.last_abort_at = trio.current_time()
            raise
        finally:
            stats.inflight -= 1
            self._notify()

    async def _answer(
        self, conn: h11.Connection, stream: trio.SocketStream, behaviour: Behaviour, canned: _Canned, streaming: bool
    ) -> None:
        if behaviour.latency_s:
            await trio.sleep(behaviour.latency_s)
        if behaviour.hang:
            await trio.sleep_forever()
        if not streaming:
            await _send(conn, stream, 200, JSON_HEADERS, canned.json_body)
            return
        if not behaviour.chunk_delay_s:
            out = conn.send(h11.Response(status_code=200, headers=SSE_HEADERS))
            out += conn.send(h11.Data(data=b"".join(canned.sse_chunks))) + conn.send(h11.EndOfMessage())
            await stream.send_all(out)
            return
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=SSE_HEADERS)))
        for i, chunk in enumerate(canned.sse_chunks):
            if i:
                await trio.sleep(behaviour.chunk_delay_s)
            await stream.send_all(conn.send(h11.Data(data=chunk)))
        await stream.send_all(conn.send(h11.EndOfMessage()))


async def _watch(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    """Cancel `scope` when the client closes its connection. Peeks, never reads: bytes that
    arrive are the client's next request (sent as soon as it had this answer), not a goodbye."""
    await trio.lowlevel.wait_readable(stream.socket)
    try:
        gone = not await stream.socket.recv(1, socket.MSG_PEEK)
    except OSError:
        gone = True
    if gone:
        scope.cancel()


async def _send(conn: h11.Connection, stream: trio.SocketStream, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    out = conn.send(h11.Response(status_code=status, headers=[*headers, (b"content-length", str(len(body)).encode())]))
    out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(out)


async def _main(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    sim = H11Sim()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve, host, port)
            print(f"h11sim on {sim.url}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    opts = parser.parse_args()
    trio.run(_main, opts.host, opts.port)
