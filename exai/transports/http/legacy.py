"""Streamable HTTP as the legacy revisions (2025-11-25 and older) serve it: `initialize`
mints a session (`Mcp-Session-Id`), later requests name it, GET opens its server stream or
replays what a client missed, DELETE ends it.
"""

from __future__ import annotations

import itertools
import json
import secrets
from typing import TYPE_CHECKING, Final

import trio

from exai.asgi import Headers, Receive, Reply
from exai.protocol import INVALID_REQUEST, OVERLOADED, Message, Request, error_message
from exai.protocol import dump as dump_message
from exai.session import CLOSE_TIMEOUT_S
from exai.transports.http.httpsession import HttpSession
from exai.transports.http.sse import Stream, wait_done, write_events

if TYPE_CHECKING:
    from exai.server import Daemon

SESSION_ID_BYTES: Final = 24  # secrets.token_urlsafe: 32 visible ASCII characters
ENDED: Final = "unknown or ended session: initialize a new one"

_session_numbers = itertools.count(1)


class LegacyHttp:
    """The legacy sessions of one Streamable HTTP endpoint, and its requests' handling."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.sessions: dict[str, HttpSession] = {}

    def _session(self, headers: dict[str, str]) -> tuple[HttpSession | None, str]:
        secret = headers.get("mcp-session-id")
        if secret is None:
            return None, "missing Mcp-Session-Id header: send initialize first, then its session id"
        session = self.sessions.get(secret)
        if session is None:
            return None, ENDED
        return session, ""

    async def _refuse_session(self, headers: dict[str, str], why: str, reply: Reply) -> None:
        await reply.refuse(400 if "mcp-session-id" not in headers else 404, why)

    # -- POST: one message ------------------------------------------------------------------

    async def post(
        self, message: Message, headers: dict[str, str], receive: Receive, reply: Reply, json_ok: bool, sse_ok: bool
    ) -> None:
        if isinstance(message, Request) and message.method == "initialize" and "mcp-session-id" not in headers:
            await self._initialize(message, reply, json_ok)
            return
        session, why = self._session(headers)
        if session is None:
            await self._refuse_session(headers, why, reply)
            return
        if not isinstance(message, Request):
            if not await session.deliver(message):
                await reply.refuse(404, ENDED)
                return
            await reply.empty(202)
            return
        await self._answer(session, message, receive, reply, json_ok, sse_ok)

    async def _initialize(self, message: Request, reply: Reply, json_ok: bool) -> None:
        daemon = self.daemon
        if daemon.draining:
            await reply.refuse(503, "server shutting down", OVERLOADED, {"retry_after_s": 1})
            return
        session = HttpSession(daemon, self.sessions, secrets.token_urlsafe(SESSION_ID_BYTES), f"h{next(_session_numbers)}")
        # Taken with no await before it, so a burst of initializes cannot overshoot the cap.
        if not daemon.connection_slots.take(session):
            limit = daemon.settings.max_connections
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
        receive: Receive,
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
            await reply.refuse(404, ENDED)
            return
        if sse:
            await self._write_events(session, stream, 0, reply, receive)
        else:
            await self._json_answer(await self._wait_answer(session, stream), reply)

    async def _wait_answer(self, session: HttpSession, stream: Stream) -> str | None:
        """The response of a stream kept for a JSON answer; None if it ended without one."""
        session.stream_opened()
        try:
            return await wait_done(stream)
        finally:
            session.stream_closed()

    async def _json_answer(self, answer: str | None, reply: Reply, headers: Headers | None = None) -> None:
        if answer is None:  # cancelled, or the session ended: no response is owed
            await reply.empty(202)
            return
        await reply.json(200, answer.encode(), headers)

    async def _write_events(
        self,
        session: HttpSession,
        stream: Stream,
        cursor: int,
        reply: Reply,
        receive: Receive | None,
        headers: Headers | None = None,
    ) -> None:
        """Write the stream's events after `cursor` until it is done or the client leaves.
        A client leaving cancels nothing: the events stay kept for a Last-Event-ID replay."""
        session.stream_opened()
        try:
            gone = await write_events(stream, cursor, reply, receive, headers)
            if gone and not stream.done:
                session.log.info(
                    "http session {}: stream {} dropped by the client; its work goes on",
                    session.id,
                    stream.number,
                )
        finally:
            session.stream_closed()

    # -- GET: the server stream, or a replay ---------------------------------------------------

    async def get(self, headers: dict[str, str], receive: Receive, reply: Reply) -> None:
        session, why = self._session(headers)
        if session is None:
            await self._refuse_session(headers, why, reply)
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

    async def delete(self, headers: dict[str, str], reply: Reply) -> None:
        session, why = self._session(headers)
        if session is None:
            await self._refuse_session(headers, why, reply)
            return
        session.end("ended by the client (DELETE)")
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await session.finished.wait()
        await reply.empty(204)
