"""Server-sent events: one request's stream of messages, and writing it to a client.

A Stream holds what one request (or a session's GET stream) gets back, in order, until it
is done; `write_events` sends it as an SSE response and wakes once per change.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import trio

from exai.asgi import Headers, Receive, Reply
from exai.protocol import RequestId

SSE_HEADERS: Final[Headers] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]
KEEP_ALIVE_COMMENT: Final = b":\n\n"


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
        if self.stream.resumable:
            return f"id: {self.id}\nevent: message\ndata: {self.data}\n\n".encode()
        return f"event: message\ndata: {self.data}\n\n".encode()


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

    async def wait(self, receive: Receive | None = None) -> bool:
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


async def write_events(
    stream: Stream,
    cursor: int,
    reply: Reply,
    receive: Receive | None,
    headers: Headers | None = None,
    keep_alive_s: float = float("inf"),
) -> bool:
    """Write the stream's events after `cursor` until it is done or the client leaves;
    True when the client left first.

    What is there when the writer wakes goes out in one write; a done stream's last write
    ends the response. Silent for `keep_alive_s`, the writer sends an SSE comment.
    """
    await reply.start(200, [*SSE_HEADERS, *(headers or [])])
    stream.writers += 1
    try:
        while True:
            events = stream.after(cursor)
            if not events and not stream.done:
                if keep_alive_s == float("inf"):  # no scope of its own on the hot path
                    if await stream.wait(receive):
                        return True
                    continue
                with trio.move_on_after(keep_alive_s) as quiet:
                    if await stream.wait(receive):
                        return True
                if quiet.cancelled_caught:
                    await reply.body(KEEP_ALIVE_COMMENT, more=True)
                continue
            ended = stream.done  # a done stream gets no more events: this is the rest
            if events:
                cursor = events[-1].seq
            await reply.body(b"".join(event.encode() for event in events), more=not ended)
            if ended:
                return False
    finally:
        stream.writers -= 1


async def wait_done(stream: Stream) -> str | None:
    """The last message of a stream kept for a JSON answer; None if it ended without one."""
    while not stream.done:
        await stream.wait()
    return stream.events[-1].data if stream.events else None
