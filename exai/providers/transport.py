"""An HTTP/1.1 transport for httpx on trio and h11, with an O(1) keep-alive pool.

Why not httpcore's pool (httpcore 1.0.9, which httpx uses): it scans every connection (and
polls every idle socket) for every request, O(n) per request and O(n^2) under load at the
concurrency the daemon runs; and a request cancelled while it waits for a connection can leave
its slot behind (encode/httpcore#1093), so a pool sized to the provider's limit slowly shrinks.
This transport keeps httpx.AsyncClient (its API, timeouts and exception types) and replaces only
the connection handling:

- per origin (scheme, host, port) a LIFO stack of idle connections; a request takes the
  most recent one, after one cheap check (expired, or readable: the peer closed it or sent
  something unasked), or opens a new TCP or TLS connection;
- no cap on concurrent connections (the caller's provider limiter bounds concurrency); at
  most `max_keepalive` idle connections are kept per origin;
- a connection goes back to the pool only after its response was read completely and h11
  says it can carry another request; every other ending closes the socket at once.

Cancellation never leaves a socket behind: whatever phase a request is in (connect, send,
waiting for the head, reading the body), cancelling it closes the socket before
`trio.Cancelled` propagates, so the server sees the disconnect immediately.
"""

from __future__ import annotations

import math
import select
import ssl
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import certifi
import h11
import httpx
import trio

DEFAULT_MAX_KEEPALIVE: Final = 64
DEFAULT_KEEPALIVE_EXPIRY_S: Final = 30.0
RECEIVE_BYTES: Final = 65536
DEFAULT_PORTS: Final = {"http": 80, "https": 443}

Origin = tuple[str, str, int]
_IO_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


# Per I/O phase: (timeout error, I/O error, "too slow" message, "failed" message).
_PHASES: Final = {
    "connect": (httpx.ConnectTimeout, httpx.ConnectError,
                "connecting to {where} took longer than {limit} s", "cannot connect to {where}"),
    "write": (httpx.WriteTimeout, httpx.WriteError,
              "sending the request to {where} took longer than {limit} s", "sending the request to {where} failed"),
    "read": (httpx.ReadTimeout, httpx.ReadError,
             "no response data from {where} for {limit} s", "reading the response from {where} failed"),
}


class _io_phase:
    """Bound one I/O phase by `limit` and map its failures to that phase's httpx errors.

    `trio.fail_after` inside a generator-based context manager, written as one class: this
    runs around every socket read and write, and the class costs half as much. When an
    enclosing deadline comes strictly first (the call's, a stream's idle limit), the phase's
    own could never fire, and no cancel scope is opened for it.
    """

    __slots__ = ("_limit", "_origin", "_phase", "_request", "_scope")

    def __init__(self, phase: str, origin: Origin, limit: float, request: httpx.Request):
        self._phase = phase
        self._origin = origin
        self._limit = limit
        self._request = request
        deadline = trio.current_time() + limit
        needed = deadline < math.inf and deadline <= trio.current_effective_deadline()
        self._scope = trio.CancelScope(deadline=deadline) if needed else None

    def __enter__(self) -> None:
        if self._scope is not None:
            self._scope.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        scope = self._scope
        if scope is not None:
            scope.__exit__(kind, exc, tb)  # True also when there was nothing to suppress
        if scope is not None and scope.cancelled_caught:  # our own deadline cancelled the phase
            timeout_error, _, too_slow, _ = _PHASES[self._phase]
            message = too_slow.format(where=_host_port(self._origin), limit=self._limit)
            raise timeout_error(message, request=self._request) from None
        if isinstance(exc, _IO_ERRORS):
            _, io_error, _, failed = _PHASES[self._phase]
            message = f"{failed.format(where=_host_port(self._origin))}: {_why(exc)}"
            raise io_error(message, request=self._request) from None


def _why(exc: BaseException) -> str:
    """The useful text of an I/O error: trio wraps the OSError as __cause__."""
    cause = exc.__cause__ or exc
    return str(cause) or type(cause).__name__


@dataclass(frozen=True, slots=True)
class _Timeouts:
    """Per-phase limits in seconds; `math.inf` is no limit. The pool phase does not exist here."""

    connect: float
    read: float
    write: float

    @classmethod
    def of(cls, request: httpx.Request) -> _Timeouts:
        given = request.extensions.get("timeout", {})

        def limit(name: str) -> float:
            value = given.get(name)
            return math.inf if value is None else float(value)

        return cls(limit("connect"), limit("read"), limit("write"))


class _Connection:
    """One socket and its h11 state machine. `close()` is synchronous and idempotent."""

    __slots__ = (
        "closed",
        "idle_since",
        "origin",
        "parser",
        "peer_closed",
        "received_any",
        "sock",
        "stream",
    )

    def __init__(self, origin: Origin, stream: trio.abc.Stream, sock: trio.socket.SocketType):
        self.origin = origin
        self.stream = stream
        self.sock = sock
        self.parser = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.received_any = False  # a response byte arrived in the current request/response cycle
        self.peer_closed = False
        self.closed = False

    def close(self) -> None:
        # Closing the OS socket directly works in any context (cancelled, finally, no await)
        # and wakes a task blocked on it; TLS close_notify is not needed by HTTP.
        if not self.closed:
            self.closed = True
            self.sock.close()

    def readable(self) -> bool:
        """True if the peer closed the socket or sent data while the connection sat idle."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))


class TrioH11Transport(httpx.AsyncBaseTransport):
    """httpx transport: HTTP/1.1 over trio sockets, h11 as the parser, an O(1) keep-alive pool.

    Errors reach the caller as httpx exceptions (ConnectError, ConnectTimeout, WriteError,
    WriteTimeout, ReadError, ReadTimeout, RemoteProtocolError); `trio.Cancelled` passes
    through untouched. A request on a reused connection that fails before any response byte
    arrived (the server closed the idle connection meanwhile) is sent again once on a fresh
    connection if its body is replayable bytes.
    """

    def __init__(
        self,
        *,
        max_keepalive: int = DEFAULT_MAX_KEEPALIVE,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY_S,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self._max_keepalive = max_keepalive
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._idle_count = 0
        self._active: set[_Connection] = set()
        self._opened_total = 0
        self._closed = False

    def statistics(self) -> dict[str, int]:
        """Sockets `open` now = `idle` (in the pool) + `active` (carrying a request or response)."""
        active = len(self._active)
        return {
            "open": active + self._idle_count,
            "idle": self._idle_count,
            "active": active,
            "opened_total": self._opened_total,
        }

    async def aclose(self) -> None:
        """Close every socket, idle or active, at once; requests still running fail with ReadError
        or WriteError, and later requests raise RuntimeError."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        for conn in self._active:
            conn.close()
        self._active.clear()
        await trio.lowlevel.checkpoint()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return the response once its head arrived; the body streams.

        The returned response owns its connection until the body was read to the end (then
        the connection is pooled or closed) or the response is closed (then the socket is
        closed). On any exception, including cancellation, the socket is closed before it
        propagates.
        """
        if self._closed:
            raise RuntimeError("the transport is closed")
        origin = _origin_of(request)
        timeouts = _Timeouts.of(request)
        conn = self._take_idle(origin)
        if conn is not None:
            try:
                return await self._exchange(conn, request, timeouts)
            except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
                if conn.received_any or not isinstance(request.stream, httpx.ByteStream):
                    raise
            # The server closed the idle connection before reading our request: try a fresh one.
        conn = await self._connect(origin, request, timeouts)
        return await self._exchange(conn, request, timeouts)

    # --- the pool -------------------------------------------------------------------------

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = trio.current_time()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if now - conn.idle_since > self._keepalive_expiry:
                # The stack is ordered by idle_since: everything below is older still.
                self._idle_count -= len(idle)
                for older in idle:
                    older.close()
                idle.clear()
                conn.close()
                return None
            if conn.readable():
                conn.close()
                continue
            self._active.add(conn)
            return conn
        return None

    def _release(self, conn: _Connection) -> None:
        """The response was read to its end: pool the connection if h11 allows reuse, else close."""
        self._active.discard(conn)
        parser = conn.parser
        if self._closed or parser.our_state is not h11.DONE or parser.their_state is not h11.DONE:
            conn.close()
            return
        parser.start_next_cycle()
        idle = self._idle.setdefault(conn.origin, deque())
        now = trio.current_time()
        while idle and (
            len(idle) >= self._max_keepalive or now - idle[0].idle_since > self._keepalive_expiry
        ):
            idle.popleft().close()
            self._idle_count -= 1
        if self._max_keepalive <= 0:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)
        self._idle_count += 1

    def _discard(self, conn: _Connection) -> None:
        self._active.discard(conn)
        conn.close()

    async def _connect(
        self, origin: Origin, request: httpx.Request, timeouts: _Timeouts
    ) -> _Connection:
        """Open a TCP or TLS connection within the connect timeout; nothing is left open on failure."""
        scheme, host, port = origin
        stream: trio.abc.Stream
        with _io_phase("connect", origin, timeouts.connect, request):
            tcp = await trio.open_tcp_stream(host, port)
            stream, sock = tcp, tcp.socket
            if scheme == "https":
                try:
                    tls = trio.SSLStream(tcp, self._tls_context(), server_hostname=host, https_compatible=True)
                    await tls.do_handshake()
                except BaseException:
                    sock.close()
                    raise
                stream = tls
        conn = _Connection(origin, stream, sock)
        self._opened_total += 1
        self._active.add(conn)
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=certifi.where())
        return self._ssl_context

    # --- one request/response cycle -------------------------------------------------------

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, timeouts: _Timeouts
    ) -> httpx.Response:
        """Send the request and read the response head; on any exception the socket is closed."""
        conn.received_any = False
        try:
            await self._send_request(conn, request, timeouts.write)
            while True:
                event = await self._next_event(conn, request, timeouts.read)
                if isinstance(event, h11.Response):
                    break
                if not isinstance(event, h11.InformationalResponse) or event.status_code == 101:
                    raise httpx.RemoteProtocolError(
                        f"unexpected response from {_where(conn)}: {event!r}", request=request
                    )
        except BaseException:
            self._discard(conn)
            raise
        return httpx.Response(
            event.status_code,
            headers=list(event.headers.raw_items()),
            stream=_ResponseBody(self, conn, request, timeouts.read),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason},
        )

    async def _send_request(
        self, conn: _Connection, request: httpx.Request, write_timeout: float
    ) -> None:
        parser = conn.parser
        headers = request.headers.raw
        body = request.stream
        try:
            if isinstance(body, httpx.ByteStream):
                content = b"".join(body)
                if content and not _declares_length(request):
                    headers = [*headers, (b"Content-Length", str(len(content)).encode())]
                # Head, body and end in one write: one syscall for the common small request.
                out = parser.send(
                    h11.Request(method=request.method, target=request.url.raw_path, headers=headers)
                )
                if content:
                    out += parser.send(h11.Data(data=content))
                out += parser.send(h11.EndOfMessage())
                await self._send_all(conn, out, request, write_timeout)
                return
            if not _declares_length(request):
                headers = [*headers, (b"Transfer-Encoding", b"chunked")]
            head = parser.send(
                h11.Request(method=request.method, target=request.url.raw_path, headers=headers)
            )
            await self._send_all(conn, head, request, write_timeout)
            assert isinstance(body, httpx.AsyncByteStream), "an async client sends async streams"
            chunks = body.__aiter__()
            try:
                async for chunk in chunks:
                    if chunk:
                        await self._send_all(
                            conn, parser.send(h11.Data(data=chunk)), request, write_timeout
                        )
            except BaseException:
                # Socket first, then the body's generator (trio warns about unclosed ones).
                self._discard(conn)
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
                raise
            await self._send_all(conn, parser.send(h11.EndOfMessage()), request, write_timeout)
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(f"invalid request: {exc}", request=request) from None

    async def _send_all(
        self, conn: _Connection, data: bytes | None, request: httpx.Request, write_timeout: float
    ) -> None:
        if not data:
            return
        with _io_phase("write", conn.origin, write_timeout, request):
            await conn.stream.send_all(data)

    async def _next_event(
        self, conn: _Connection, request: httpx.Request, read_timeout: float
    ) -> h11.Event:
        """The next h11 event of the response, receiving data as needed within `read_timeout` each."""
        parser = conn.parser
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                if not conn.peer_closed:
                    message = f"invalid response from {_where(conn)}: {exc}"
                elif conn.received_any:
                    message = f"server {_where(conn)} closed the connection mid-response ({exc})"
                else:
                    message = (
                        f"server {_where(conn)} closed the connection without sending a response"
                    )
                raise httpx.RemoteProtocolError(message, request=request) from None
            if event is h11.PAUSED:
                raise httpx.RemoteProtocolError(
                    f"{_where(conn)} switched protocols, which this transport does not support",
                    request=request,
                )
            if event is not h11.NEED_DATA:
                assert not isinstance(event, type)
                return event
            with _io_phase("read", conn.origin, read_timeout, request):
                data = await conn.stream.receive_some(RECEIVE_BYTES)
            if data:
                conn.received_any = True
            else:
                conn.peer_closed = True
            parser.receive_data(bytes(data))  # no copy: trio streams return bytes


class _ResponseBody(httpx.AsyncByteStream):
    """The response body, chunk by chunk as it arrives; iterate it once.

    Read to its end, it returns the connection to the pool (or closes it if it cannot be
    reused). `aclose()` before the end, an error, or cancellation while reading closes the
    socket at once; a half-read connection never goes back to the pool.
    """

    def __init__(
        self,
        transport: TrioH11Transport,
        conn: _Connection,
        request: httpx.Request,
        read_timeout: float,
    ):
        self._transport = transport
        self._conn: _Connection | None = conn
        self._request = request
        self._read_timeout = read_timeout

    def __aiter__(self) -> _ResponseBody:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        try:
            event = await self._transport._next_event(conn, self._request, self._read_timeout)
        except BaseException:
            self._conn = None
            self._transport._discard(conn)
            raise
        if isinstance(event, h11.Data):
            return bytes(event.data)
        self._conn = None
        if isinstance(event, h11.EndOfMessage):
            self._transport._release(conn)
            raise StopAsyncIteration
        self._transport._discard(conn)
        raise httpx.RemoteProtocolError(
            f"unexpected event in the response body: {event!r}", request=self._request
        )

    async def aclose(self) -> None:
        if self._conn is not None:
            self._transport._discard(self._conn)
            self._conn = None


def _origin_of(request: httpx.Request) -> Origin:
    url = request.url
    scheme = url.scheme
    if scheme not in DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
    host = url.raw_host.decode("ascii")
    return scheme, host, url.port or DEFAULT_PORTS[scheme]


def _declares_length(request: httpx.Request) -> bool:
    return "content-length" in request.headers or "transfer-encoding" in request.headers


def _where(conn: _Connection) -> str:
    return _host_port(conn.origin)


def _host_port(origin: Origin) -> str:
    _, host, port = origin
    return f"{host}:{port}"
