"""One legacy Streamable HTTP session (MCP 2025-11-25 and older): its Session, its streams,
and what it keeps so a client that comes back with `Last-Event-ID` gets what it missed.

The session runs as one task in the daemon's connection nursery (a connection like any
WebSocket one: limits, `session:<id>` limiter, calls, status). Calls belong to it, not to an
HTTP response: a dropped stream cancels nothing; DELETE, its idle timeout and shutdown do.
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio
from loguru import logger

from exai.lifecycle import CancelReason
from exai.protocol import Message, RequestId
from exai.protocol import dump as dump_message
from exai.session import Hooks, Session, open_session
from exai.transports.http.sse import Event, Stream

if TYPE_CHECKING:
    from exai.server import Daemon

# What one session keeps for Last-Event-ID replays; the oldest events go first.
REPLAY_MAX_EVENTS: Final = 1024
REPLAY_MAX_BYTES: Final = 4 * 1024 * 1024
PRIMING_SINCE: Final = "2025-11-25"  # older clients may choke on an event with empty data


class HttpSession:
    """One Streamable HTTP session: its Session, its streams, what it keeps for replay."""

    def __init__(self, daemon: Daemon, sessions: dict[str, HttpSession], secret: str, connection_id: str):
        self.daemon = daemon
        self.sessions = sessions  # the live sessions by secret, this one included once it runs
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
        self.slot_held = True  # its connection slot, taken before it was built
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
            hooks = Hooks(end_transport=partial(self.end, "server shutting down"), call_ended=self._call_ended)
            async with open_session(
                self.daemon.services,
                self.id,
                self.send,
                hooks=hooks,
                close=self._close,
                registry=self.daemon.connections,
            ) as session:
                self.session = session
                self.daemon.connection_slots.yieldable.add(self)
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
            self.daemon.connection_slots.yieldable.discard(self)
            self.release_slot()
            self.sessions.pop(self.secret, None)
            self.replay.clear()
            self.streams.clear()
            self.finished.set()
            self.log.info("http session {} ended", self.id)

    def release_slot(self) -> None:
        if self.slot_held:
            self.slot_held = False
            self.daemon.connection_slots.release(self)

    # -- giving its slot up (limits.Yieldable) ---------------------------------------------

    def idle_since(self) -> float | None:
        session = self.session
        busy = self.ended or self.open_streams or session is None or not session.initialized or session.calls
        return None if busy else self.last_active

    def evict(self) -> None:
        self.end("ended to make room for a new client at EXAI_MAX_CONNECTIONS (idle, no call, no stream)")
        self.release_slot()

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
        self.sessions.pop(self.secret, None)
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
