"""MCP over Streamable HTTP (MCP 2025-11-25) on hypercorn, on the daemon's own event loop.

Only moves messages. Each session runs as one task in the daemon's connection nursery that
owns its Session (a connection like any WebSocket one: limits, `session:<id>` limiter,
calls, status). ASGI handlers dispatch the POSTed messages to it and write back what it
sends: a request's answer, and the progress of a call, go to that request's stream. Calls
belong to the session, not to an HTTP response: a dropped stream cancels nothing, and a
client that comes back with `Last-Event-ID` gets what it missed.

Per call, the handler hypercorn spawns is the only task beside the call's own: it dispatches
the message itself and waits for the stream's events and for the client leaving in one wait
(see `Stream.wait`), so each event costs one wakeup and one write.
"""

from __future__ import annotations

import itertools
import json
import secrets
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from functools import lru_cache, partial
from typing import Any, Final
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from loguru import logger

from exai.asgi import lifespan
from exai.auth import bearer_ok
from exai.lifecycle import CancelReason
from exai.protocol import (
    INVALID_REQUEST,
    OVERLOADED,
    SUPPORTED_VERSIONS,
    BadMessage,
    Message,
    Request,
    RequestId,
    error_message,
    parse_message,
)
from exai.protocol import dump as dump_message
from exai.session import CLOSE_TIMEOUT_S, Session, open_session

MCP_PATH: Final = "/mcp"
# What one session keeps for Last-Event-ID replays; the oldest events go first.
REPLAY_MAX_EVENTS: Final = 1024
REPLAY_MAX_BYTES: Final = 4 * 1024 * 1024
SESSION_ID_BYTES: Final = 24  # secrets.token_urlsafe: 32 visible ASCII characters
# hypercorn closes a kept-alive connection idle this long (its default, stated here).
KEEP_ALIVE_S: Final = 5.0
PRIMING_SINCE: Final = "2025-11-25"  # older clients may choke on an event with empty data

Headers = list[tuple[bytes, bytes]]
AsgiSend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]

_session_numbers = itertools.count(1)


@lru_cache(maxsize=64)  # a client sends the same Accept with every request
def accepts(accept: str, media_type: str) -> bool:
    """Whether an Accept header value admits `media_type` (wildcards included)."""
    kind = media_type.split("/")[0]
    ranges = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(ranges & {media_type, f"{kind}/*", "*/*"})


class Event:
    """One SSE event of a stream; `data` is one JSON-RPC message, or "" to prime a client."""

    __slots__ = ("data", "seq", "stream")

    def __init__(self, seq: int, stream: Stream, data: str):
        self.seq = seq
        self.stream = stream
        self.data = data

    @property
    def id(self) -> str:
        return f"{self.stream.number}-{self.seq}"

    def encode(self) -> bytes:
        return f"id: {self.id}\nevent: message\ndata: {self.data}\n\n".encode()


class Stream:
    """What one request (or the GET stream) gets back, in order, until it is done."""

    __slots__ = ("_waiters", "done", "events", "number", "request_id", "resumable", "token", "writers")

    def __init__(self, number: int, request_id: RequestId | None, resumable: bool):
        self.number = number
        self.request_id = request_id
        self.resumable = resumable  # SSE: its events have ids and are kept for replay
        self.token: str | int | None = None  # the progress token of its call, if any
        self.events: deque[Event] = deque()
        self.done = False
        self.writers = 0
        self._waiters: list[trio.CancelScope] = []

    def push(self, event: Event) -> None:
        self.events.append(event)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def after(self, seq: int) -> list[Event]:
        """The events after `seq`, oldest first (read from the newest end: no scan of the rest)."""
        newer: list[Event] = []
        for event in reversed(self.events):
            if event.seq <= seq:
                break
            newer.append(event)
        newer.reverse()
        return newer

    async def wait(self, receive: AsgiReceive | None = None) -> bool:
        """Wait until the stream changes, or the client leaves; True when it left.

        One wait for both, in the caller's task: a change cancels the wait (`_wake`), while
        the caller listens for hypercorn's `http.disconnect` on `receive` (a request's other
        messages are skipped). No message is lost to the cancel: trio's channels are
        cancel-safe. Outside cancellation passes through.
        """
        scope = trio.CancelScope()
        self._waiters.append(scope)
        try:
            with scope:
                if receive is None:
                    await trio.sleep_forever()
                else:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    return True
            return False
        finally:
            if not scope.cancel_called:
                self._waiters.remove(scope)

    def _wake(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for scope in waiters:
                scope.cancel()


class HttpSession:
    """One Streamable HTTP session: its Session, its streams, what it keeps for replay."""

    def __init__(self, transport: HttpTransport, secret: str, connection_id: str):
        self.transport = transport
        self.daemon = transport.daemon
        self.secret = secret  # the Mcp-Session-Id: a capability, never logged
        self.id = connection_id  # logs, /api/status, the session:<id> limiter
        self.session: Session | None = None
        self.pending: dict[RequestId, Stream] = {}  # requests not answered yet
        self.progress: dict[str | int, Stream] = {}  # progress tokens of pending calls
        self.streams: dict[int, Stream] = {}  # resumable streams, for Last-Event-ID
        self.standalone: Stream | None = None  # the GET stream
        self.replay: deque[Event] = deque()
        self.replay_bytes = 0
        self._numbers = itertools.count(1)
        self._seqs = itertools.count(1)
        self.open_streams = 0
        self._no_open_streams = trio.Event()
        self._no_open_streams.set()
        self.last_active = trio.current_time()
        self.ended = False  # no message reaches the session any more
        self.expiry_scope = trio.CancelScope()
        self.finished = trio.Event()
        self.log = logger.bind(conn=connection_id)

    # -- the session's own task -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the session until it ends; on return none of its calls runs, nothing is kept.

        Its own fault boundary: an unexpected error is logged once with an error id and ends
        this session only.
        """
        try:
            async with open_session(self.daemon, self.id, self.send, self._close) as session:
                self.session = session
                session.end_transport = partial(self.end, "server shutting down")
                session.call_ended = self._call_ended
                task_status.started()
                try:
                    with self.expiry_scope:
                        await self._expire()
                except Exception:
                    self.end(f"ended by error {self._log_fault()}")
                finally:
                    self.ended = True  # whatever ended it, before its calls are waited for
        except Exception:
            self._log_fault()
        finally:
            self.ended = True
            self.daemon.connection_slots.release_on_behalf_of(self)
            self.transport.sessions.pop(self.secret, None)
            self.replay.clear()
            self.streams.clear()
            self.finished.set()
            self.log.info("http session {} ended", self.id)

    def _log_fault(self) -> str:
        error_id = uuid.uuid4().hex[:12]
        self.log.exception("http session {} failed, error id {}", self.id, error_id)
        return error_id

    async def _expire(self) -> None:
        """Return when the session has been idle for EXAI_HTTP_SESSION_IDLE_SECS: no request
        and no open stream. Wakes only at deadlines and when its last stream closes."""
        idle = float(self.daemon.settings.http_session_idle_secs)
        while True:
            if self.open_streams:
                await self._no_open_streams.wait()
                continue
            if trio.current_time() >= self.last_active + idle:
                self.end(f"idle for {idle:g} s with no request and no open stream")
                return
            await trio.sleep_until(self.last_active + idle)

    def end(self, why: str) -> None:
        """End the session: no new request reaches it, its calls are cancelled at once."""
        if self.ended:
            return
        self.ended = True
        self.transport.sessions.pop(self.secret, None)
        count = self.session.cancel_calls(CancelReason.DISCONNECT) if self.session else 0
        self.log.info("http session {} {}; cancelling {} call(s)", self.id, why, count)
        self.expiry_scope.cancel()

    async def _close(self) -> None:
        """Every stream ends; wait (bounded by open_session) until each writer has flushed."""
        for stream in [*self.pending.values(), *([self.standalone] if self.standalone else [])]:
            stream.finish()
        self.pending.clear()
        self.progress.clear()
        await self._no_open_streams.wait()

    # -- messages in ------------------------------------------------------------------------

    async def deliver(self, message: Message) -> bool:
        """Dispatch one POSTed message in the caller's task; False when the session has ended.

        Dispatch never waits here (a call starts in the session's nursery, `send` only routes
        to streams), so messages reach the session in the order they arrived. The session's
        fault boundary: an unexpected error is logged once with an error id and ends it.
        """
        if self.ended or self.session is None:
            return False
        self.touch()
        try:
            await self.session.dispatch(message)
        except Exception:
            self.end(f"ended by error {self._log_fault()}")
        return True

    def touch(self) -> None:
        self.last_active = trio.current_time()

    def open_stream(self, request_id: RequestId | None, resumable: bool) -> Stream:
        stream = Stream(next(self._numbers), request_id, resumable)
        if request_id is not None:
            self.pending[request_id] = stream
        if resumable:
            self.streams[stream.number] = stream
            version = self.session.protocol_version if self.session else None
            if version is not None and version >= PRIMING_SINCE:
                self._push(stream, "")
        return stream

    def open_standalone(self) -> Stream:
        if self.standalone is not None:
            self.standalone.finish()
        self.standalone = self.open_stream(None, resumable=True)
        return self.standalone

    def forget(self, stream: Stream) -> None:
        """A stream that never reached the session (it ended first)."""
        if stream.request_id is not None and self.pending.get(stream.request_id) is stream:
            del self.pending[stream.request_id]
        self._drop_progress(stream)
        stream.finish()

    # -- messages out -----------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """The Session's `send`: route a message to the stream it belongs to. Never blocks."""
        method = message.get("method")
        if method is None:  # a response: it answers exactly one pending request
            stream = self.pending.pop(message.get("id"), None)  # type: ignore[arg-type]
            if stream is not None:
                self._push(stream, dump_message(message))
                self._drop_progress(stream)
                stream.finish()
                return
        elif method == "notifications/progress":
            stream = self.progress.get(message.get("params", {}).get("progressToken"))
            if stream is not None and stream.resumable:
                self._push(stream, dump_message(message))
                return
        elif self.standalone is not None and not self.standalone.done:
            self._push(self.standalone, dump_message(message))
            return
        self.log.debug("http session {}: no stream for {}", self.id, method or "a response")

    def _call_ended(self, request_id: RequestId) -> None:
        """A call ended without a response (cancelled): its stream ends too."""
        stream = self.pending.pop(request_id, None)
        if stream is not None:
            self._drop_progress(stream)
            stream.finish()

    def _drop_progress(self, stream: Stream) -> None:
        if stream.token is not None and self.progress.get(stream.token) is stream:
            del self.progress[stream.token]

    def _push(self, stream: Stream, data: str) -> None:
        event = Event(next(self._seqs), stream, data)
        stream.push(event)
        if not stream.resumable:
            return
        self.replay.append(event)
        self.replay_bytes += len(data)
        while len(self.replay) > REPLAY_MAX_EVENTS or self.replay_bytes > REPLAY_MAX_BYTES:
            oldest = self.replay.popleft()
            self.replay_bytes -= len(oldest.data)
            oldest.stream.events.popleft()  # the session's oldest is its stream's oldest
            if oldest.stream.done and not oldest.stream.events:
                self.streams.pop(oldest.stream.number, None)

    # -- streams open, for the idle timeout and for closing -------------------------------

    def stream_opened(self) -> None:
        if self.open_streams == 0:
            self._no_open_streams = trio.Event()
        self.open_streams += 1
        self.touch()

    def stream_closed(self) -> None:
        self.open_streams -= 1
        self.touch()
        if self.open_streams == 0:
            self._no_open_streams.set()


class ClientGone(Exception):
    """The client disconnected while sending its request."""


class Reply:
    """One ASGI response; knows whether it has started (an error after that cannot be sent)."""

    def __init__(self, send: AsgiSend):
        self._send = send
        self.started = False
        # hypercorn closes a connection whose request body was not read to its end; an answer
        # sent before then says so, or a keep-alive client sends its next request into it.
        self.body_unread = False

    async def start(self, status: int, headers: Headers) -> None:
        self.started = True
        if self.body_unread:
            headers = [*headers, (b"connection", b"close")]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = False) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, body: bytes, headers: Headers | None = None) -> None:
        await self.start(status, [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *(headers or []),
        ])
        await self.body(body)

    async def empty(self, status: int) -> None:
        await self.start(status, [(b"content-length", b"0")])
        await self.body(b"")

    async def refuse(
        self,
        status: int,
        message: str,
        code: int = INVALID_REQUEST,
        data: Any = None,
        headers: Headers | None = None,
    ) -> None:
        """An HTTP error whose body is a JSON-RPC error without an id (the spec's form)."""
        body = dump_message(error_message(None, code, message, data)).encode()
        await self.json(status, body, headers)


class HttpTransport:
    """The ASGI app at /mcp and the sessions it serves."""

    def __init__(self, daemon: Any):
        self.daemon = daemon
        self.settings = daemon.settings
        self.sessions: dict[str, HttpSession] = {}
        self.origins: frozenset[str] = frozenset()
        token = self.settings.auth_token
        self.token = token.get_secret_value() if token is not None else None

    def bound_to(self, port: int) -> None:
        """Origins this server answers: its own, by the names a local browser would use."""
        host = self.settings.host.strip("[]")
        shown = f"[{host}]" if ":" in host else host
        names = {"127.0.0.1", "localhost", "[::1]", shown}
        self.origins = frozenset(f"http://{name}:{port}".lower() for name in names)

    async def app(self, scope: dict[str, Any], receive: AsgiReceive, send: AsgiSend) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        reply = Reply(send)
        try:
            await self._handle(scope, receive, reply)
        except ClientGone:
            return
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            logger.exception("http {} {} failed, error id {}", scope["method"], scope["path"], error_id)
            if not reply.started:
                await reply.refuse(500, "Internal error", -32603, {"error_id": error_id})

    async def _handle(self, scope: dict[str, Any], receive: AsgiReceive, reply: Reply) -> None:
        raw: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            raw[name] = raw[name] + b", " + value if name in raw else value
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw.items()}
        reply.body_unread = "transfer-encoding" in headers or headers.get("content-length", "0").strip() != "0"
        if scope["path"].rstrip("/") != MCP_PATH:
            await reply.refuse(404, f"no MCP endpoint at {scope['path']}; use {MCP_PATH}")
            return
        refusal = self._refusal(scope["method"], headers, scope["headers"])
        if refusal is not None:
            status, message, extra = refusal
            await reply.refuse(status, message, headers=extra)
            return
        if scope["method"] == "POST":
            await self._post(headers, receive, reply)
        elif scope["method"] == "GET":
            await self._get(headers, receive, reply)
        else:
            await self._delete(headers, reply)

    def _refusal(
        self, method: str, headers: dict[str, str], raw_headers: Headers
    ) -> tuple[int, str, Headers] | None:
        if method not in ("POST", "GET", "DELETE"):
            return 405, f"method {method} not allowed", [(b"allow", b"GET, POST, DELETE")]
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in self.origins:
            return 403, "Origin not allowed: only this server's own origin may call it", []
        if self.token is not None and not bearer_ok(raw_headers, self.token):
            return 401, "missing or wrong Authorization: Bearer token", [(b"www-authenticate", b"Bearer")]
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in SUPPORTED_VERSIONS:
            supported = ", ".join(SUPPORTED_VERSIONS)
            return 400, f"unsupported MCP-Protocol-Version {version!r}; supported: {supported}", []
        return None

    def _session(self, headers: dict[str, str]) -> tuple[HttpSession | None, str]:
        secret = headers.get("mcp-session-id")
        if secret is None:
            return None, "missing Mcp-Session-Id header: send initialize first, then its session id"
        session = self.sessions.get(secret)
        if session is None:
            return None, "unknown or ended session: initialize a new one"
        return session, ""

    # -- POST: one message ------------------------------------------------------------------

    async def _post(self, headers: dict[str, str], receive: AsgiReceive, reply: Reply) -> None:
        accept = headers.get("accept", "*/*")
        json_ok, sse_ok = accepts(accept, "application/json"), accepts(accept, "text/event-stream")
        if not (json_ok or sse_ok):
            await reply.refuse(406, "Accept must include application/json or text/event-stream")
            return
        content_type = headers.get("content-type", "application/json")
        if content_type.split(";")[0].strip().lower() != "application/json":
            await reply.refuse(415, "Content-Type must be application/json")
            return
        body = await self._body(headers, receive)
        reply.body_unread = body is None
        if body is None:
            limit = self.settings.max_message_bytes
            await reply.refuse(413, f"message larger than EXAI_MAX_MESSAGE_BYTES ({limit})")
            return
        try:
            message = parse_message(body)
        except BadMessage as bad:
            await reply.json(400, dump_message(error_message(bad.id, bad.code, bad.message)).encode())
            return
        new = isinstance(message, Request) and message.method == "initialize"
        if new and "mcp-session-id" not in headers:
            await self._initialize(message, reply, json_ok)  # type: ignore[arg-type]
            return
        session, why = self._session(headers)
        if session is None:
            await reply.refuse(400 if "mcp-session-id" not in headers else 404, why)
            return
        if not isinstance(message, Request):
            if not await session.deliver(message):
                await reply.refuse(404, "unknown or ended session: initialize a new one")
                return
            await reply.empty(202)
            return
        await self._answer(session, message, receive, reply, json_ok, sse_ok)

    async def _body(self, headers: dict[str, str], receive: AsgiReceive) -> bytes | None:
        """The request body, or None when it exceeds EXAI_MAX_MESSAGE_BYTES."""
        limit = self.settings.max_message_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise ClientGone
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not event.get("more_body", False):
                return b"".join(chunks)

    async def _initialize(self, message: Request, reply: Reply, json_ok: bool) -> None:
        daemon = self.daemon
        if daemon.draining:
            await reply.refuse(503, "server shutting down", OVERLOADED, {"retry_after_s": 1})
            return
        session = HttpSession(self, secrets.token_urlsafe(SESSION_ID_BYTES), f"h{next(_session_numbers)}")
        try:  # taken with no await before it, so a burst of initializes cannot overshoot the cap
            daemon.connection_slots.acquire_on_behalf_of_nowait(session)
        except trio.WouldBlock:
            limit = self.settings.max_connections
            why = f"too many connections: the daemon is at its limit (EXAI_MAX_CONNECTIONS={limit})"
            await reply.refuse(503, why, OVERLOADED, {"retry_after_s": 1})
            return
        await daemon.connection_nursery.start(session.run)
        self.sessions[session.secret] = session
        session.log.info("http session {} open", session.id)
        stream = session.open_stream(message.id, resumable=not json_ok)
        if not await session.deliver(message):
            session.forget(stream)
            await reply.refuse(404, "the session ended before it began")
            return
        header = [(b"mcp-session-id", session.secret.encode())]
        if not json_ok:
            await self._write_events(session, stream, 0, reply, None, header)
            return
        answer = await self._wait_answer(session, stream)
        if answer is None or "error" in json.loads(answer):
            session.end("initialize failed")
            header = []
        await self._json_answer(answer, reply, header)

    async def _answer(
        self,
        session: HttpSession,
        message: Request,
        receive: AsgiReceive,
        reply: Reply,
        json_ok: bool,
        sse_ok: bool,
    ) -> None:
        if message.id in session.pending:
            error = error_message(message.id, INVALID_REQUEST, f"Invalid Request: id {message.id!r} is already in flight")
            await reply.json(200, dump_message(error).encode())
            return
        sse = sse_ok and (message.method == "tools/call" or not json_ok)
        stream = session.open_stream(message.id, resumable=sse)
        if sse and message.method == "tools/call":
            meta = message.params.get("_meta")
            token = meta.get("progressToken") if isinstance(meta, dict) else None
            if isinstance(token, str | int) and not isinstance(token, bool):
                session.progress[token] = stream
                stream.token = token
        if not await session.deliver(message):
            session.forget(stream)
            await reply.refuse(404, "unknown or ended session: initialize a new one")
            return
        if sse:
            await self._write_events(session, stream, 0, reply, receive)
        else:
            await self._json_answer(await self._wait_answer(session, stream), reply)

    async def _wait_answer(self, session: HttpSession, stream: Stream) -> str | None:
        """The response of a stream kept for a JSON answer; None if it ended without one."""
        session.stream_opened()
        try:
            while not stream.done:
                await stream.wait()
        finally:
            session.stream_closed()
        return stream.events[-1].data if stream.events else None

    async def _json_answer(
        self, answer: str | None, reply: Reply, headers: Headers | None = None
    ) -> None:
        if answer is None:  # cancelled, or the session ended: no response is owed
            await reply.empty(202)
            return
        await reply.json(200, answer.encode(), headers)

    # -- SSE streams ---------------------------------------------------------------------------

    async def _write_events(
        self,
        session: HttpSession,
        stream: Stream,
        cursor: int,
        reply: Reply,
        receive: AsgiReceive | None,
        headers: Headers | None = None,
    ) -> None:
        """Write the stream's events after `cursor` until it is done or the client leaves.

        What is there when the writer wakes goes out in one write; a done stream's last write
        ends the response. A client leaving cancels nothing: the events stay kept for a
        Last-Event-ID replay.
        """
        await reply.start(200, [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            *(headers or []),
        ])
        stream.writers += 1
        session.stream_opened()
        gone = False
        try:
            ended = False
            while not ended:
                events = stream.after(cursor)
                if not events and not stream.done:
                    gone = await stream.wait(receive)
                    if gone:
                        break
                    continue
                ended = stream.done  # a done stream gets no more events: this is the rest
                if events:
                    cursor = events[-1].seq
                await reply.body(b"".join(event.encode() for event in events), more=not ended)
            if gone and not stream.done:
                session.log.info(
                    "http session {}: stream {} dropped by the client; its work goes on",
                    session.id,
                    stream.number,
                )
        finally:
            stream.writers -= 1
            session.stream_closed()

    # -- GET: the server stream, or a replay ---------------------------------------------------

    async def _get(self, headers: dict[str, str], receive: AsgiReceive, reply: Reply) -> None:
        if not accepts(headers.get("accept", "*/*"), "text/event-stream"):
            await reply.refuse(406, "Accept must include text/event-stream")
            return
        session, why = self._session(headers)
        if session is None:
            await reply.refuse(400 if "mcp-session-id" not in headers else 404, why)
            return
        last = headers.get("last-event-id")
        if last is None:
            if session.standalone is not None and session.standalone.writers:
                await reply.refuse(409, "this session's GET stream is already open")
                return
            await self._write_events(session, session.open_standalone(), 0, reply, receive)
            return
        number, _, seq = last.strip().partition("-")
        decimal = all(part.isascii() and part.isdigit() for part in (number, seq))  # "\xb2".isdigit() too
        stream = session.streams.get(int(number)) if decimal else None
        if stream is None:
            await reply.refuse(400, f"Last-Event-ID {last!r} names no stream this session keeps")
            return
        await self._write_events(session, stream, int(seq), reply, receive)

    # -- DELETE: end the session ---------------------------------------------------------------

    async def _delete(self, headers: dict[str, str], reply: Reply) -> None:
        session, why = self._session(headers)
        if session is None:
            await reply.refuse(400 if "mcp-session-id" not in headers else 404, why)
            return
        session.end("ended by the client (DELETE)")
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await session.finished.wait()
        await reply.empty(204)


async def serve_http(
    daemon: Any, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve MCP Streamable HTTP until cancelled; task_status gets the /mcp URL (real port).

    Meant to run in `daemon.connection_nursery`: it keeps answering while the daemon drains
    (so calls finishing in the grace period still reach their clients) and stops with it.
    """
    settings = daemon.settings
    transport = HttpTransport(daemon)
    host = settings.host
    shown = f"[{host}]" if ":" in host else host
    config = Config()
    config.bind = [f"{shown}:{settings.http_port}"]
    config.accesslog = None
    config.include_server_header = False  # one header less to build and validate per response
    config.loglevel = "WARNING"
    config.graceful_timeout = CLOSE_TIMEOUT_S
    config.keep_alive_timeout = KEEP_ALIVE_S
    app: Any = transport.app  # hypercorn's ASGI types are stricter than a plain callable's
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, mode="asgi"))
        port = urlsplit(binds[0]).port
        assert port is not None
        transport.bound_to(port)
        task_status.started(f"http://{shown}:{port}{MCP_PATH}")
