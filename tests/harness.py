"""Test harness shared by the tests and the scripts that drive a real daemon (scripts/soak.py,
scripts/bench.py): the leak invariant, the one raw Streamable HTTP sender, process helpers.

Why here and not in the package: it is harness, not product (the daemon and the client
library never need it), and `exai` must not carry test code. Why not in scripts/: the tests
import it as a top-level module (pytest puts tests/ on sys.path), and the scripts put tests/
on theirs (`sys.path.insert(0, .../tests)`) before importing it; scripts/ on the tests' path
would bring the scripts' own modules (h11sim, ...) into every test.

Well-behaved MCP traffic goes through the client library (`exai.client.connect`); the raw
sender below is for what a library must never send: bad bodies, headers, session ids, and
streams dropped on purpose, with every status, header and SSE event id visible.
"""

from __future__ import annotations

import json
import math
import re
import signal
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import trio
from httpx_sse import EventSource

ACCEPT_BOTH: Final = "application/json, text/event-stream"
PROTOCOL_VERSION: Final = "2025-11-25"

# -- the leak invariant -------------------------------------------------------------------------

PROVIDER_LEAKS: Final = {
    "inflight": "provider requests still open",
    "busy_connections": "provider connections still busy",
    "rpm_waiting": "calls still waiting for a request-rate turn",
    "probes_inflight": "circuit probes still in flight",
}


def status_leaks(status: dict[str, Any], *, simulator_inflight: int = 0) -> list[str]:
    """What a daemon at rest must not show in its status snapshot (`Daemon.status()`, the body
    of /api/status): a limiter token borrowed or a task waiting on one, a session limiter left
    behind, anything in flight, queued, open or alive, a provider request open, a provider
    connection busy, a caller waiting for a request-rate turn, a circuit probe in flight; and,
    given, a simulator request still open. One list, for the tests (in-process and subprocess
    daemons) and the soak alike."""
    found = []
    limiters = status["limiters"]
    borrowed = {n: s["borrowed"] for n, s in limiters.items() if s["borrowed"]}
    if borrowed:
        found.append(f"limiter tokens still borrowed: {borrowed}")
    waiting = {n: s["waiting"] for n, s in limiters.items() if s["waiting"]}
    if waiting:
        found.append(f"tasks still waiting on limiters: {waiting}")
    sessions = [name for name in limiters if name.startswith("session:")]
    if sessions:
        found.append(f"session limiters left: {sessions[:5]}")
    for name in ("inflight", "queued", "connections"):
        if status[name]:
            found.append(f"{name} is {status[name]}, not 0")
    if status["requests"]:
        found.append(f"calls still alive: {[r.get('id') for r in status['requests']]}")
    for name, provider in status["providers"].items():
        for key, what in PROVIDER_LEAKS.items():
            if provider.get(key):
                found.append(f"{name}: {what}: {provider[key]}")
    if simulator_inflight:
        found.append(f"the simulator still has {simulator_inflight} request(s) in flight")
    return found


# -- the raw Streamable HTTP sender -------------------------------------------------------------


def request(id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-RPC request message (params always present, as an object)."""
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}}


@dataclass
class HttpAnswer:
    """What one HTTP request got: its status and JSON-RPC messages (SSE events or a JSON body)."""

    status: int
    content_type: str = ""
    session_id: str | None = None
    messages: list[Any] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    text: str = ""  # what was not JSON, for reports
    dropped: bool = False  # the client left the stream before it ended
    modern: bool = False  # MCP 2026-07-28: the request's own stream, not resumable (no event ids)

    def response(self) -> dict[str, Any] | None:
        """The JSON-RPC response among the messages (on a stream, the last), if any."""
        for message in reversed(self.messages):
            if isinstance(message, dict) and "method" not in message and ("result" in message or "error" in message):
                return message
        return None

    def progress_count(self) -> int:
        return sum(1 for m in self.messages if isinstance(m, dict) and m.get("method") == "notifications/progress")

    def describe(self) -> str:
        return f"HTTP {self.status} {self.content_type}: {(self.text or json.dumps(self.messages))[:160]}"


class RawMcpHttp:
    """One Streamable HTTP session driven raw with httpx (and httpx-sse for its streams)."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str | None = None):
        self.http = http
        self.url = url
        self.token = token
        self.session_id: str | None = None

    def headers(self, **extra: str | bytes | None) -> dict[str, Any]:
        """A well-behaved client's headers; `extra` changes some (`_` for `-`; None leaves
        one out)."""
        headers: dict[str, Any] = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        for name, value in extra.items():
            name = name.replace("_", "-")
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value
        return headers

    async def post(self, message: Any, **headers: str | bytes | None) -> httpx.Response:
        """POST one message (or raw text/bytes), its answer read whole."""
        body = message if isinstance(message, str | bytes) else json.dumps(message)
        return await self.http.post(self.url, content=body, headers=self.headers(**headers))

    async def initialize(self, version: str = PROTOCOL_VERSION) -> dict[str, Any]:
        """Open the session: initialize (its answer names the session), then initialized."""
        params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "exai-tests", "version": "0"}}
        response = await self.post(request(0, "initialize", params))
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        note = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert note.status_code == 202, note.text
        answer: dict[str, Any] = response.json()
        return answer

    async def rpc(self, message: dict[str, Any]) -> dict[str, Any]:
        """The response to one request, whether it comes as JSON or on an SSE stream."""
        answer = await self.exchange("POST", content=json.dumps(message))
        assert answer.status == 200, answer.describe()
        response = answer.response()
        assert response is not None, answer.describe()
        return response

    async def call_tool(self, tool: str, arguments: dict[str, Any], **meta: Any) -> dict[str, Any]:
        """The response to one tools/call (`meta` goes to `_meta`)."""
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        if meta:
            params["_meta"] = meta
        return await self.rpc(request(f"c-{tool}-{trio.current_time()}", "tools/call", params))

    async def delete(self) -> httpx.Response:
        return await self.http.delete(self.url, headers=self.headers())

    async def exchange(
        self,
        method: str,
        *,
        content: Any = None,
        headers: Any = None,
        url: str | None = None,
        drop_when: Callable[[HttpAnswer], bool] | None = None,
        hold_s: float = math.inf,
        progressed: trio.Event | None = None,
    ) -> HttpAnswer:
        """One HTTP request and its answer, read to its end; once `drop_when` holds of what
        came so far, or after `hold_s` seconds, the client leaves a stream early (which closes
        its connection). `progressed` is set at the stream's first progress notification."""
        async with self.http.stream(
            method, url or self.url, content=content, headers=self.headers() if headers is None else headers
        ) as response:
            answer = HttpAnswer(
                response.status_code, response.headers.get("content-type", ""), response.headers.get("mcp-session-id")
            )
            if not answer.content_type.startswith("text/event-stream"):
                body = await response.aread()
                if body:
                    try:
                        answer.messages.append(json.loads(body))
                    except ValueError:
                        answer.text = body.decode(errors="replace")
                return answer
            # Leaving is a cancellation, not a break: it unwinds httpx's own generators too
            # (a break would leave them to the garbage collector, a ResourceWarning).
            with trio.move_on_after(hold_s) as leave:
                async with aclosing(EventSource(response).aiter_sse()) as events:
                    async for event in events:
                        if leave.cancel_called:
                            continue  # already buffered; the next read raises Cancelled
                        answer.event_ids.append(event.id)
                        if event.data:
                            try:
                                answer.messages.append(json.loads(event.data))
                            except ValueError:
                                answer.text += event.data
                            if progressed is not None and answer.progress_count():
                                progressed.set()
                        if drop_when is not None and drop_when(answer):
                            leave.cancel()
            # Left, even when the rest was already buffered (and skipped): its end unseen.
            answer.dropped = leave.cancel_called
            return answer


# -- processes ---------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """A process's resident set size, KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def read_until(stream: Any, pattern: bytes, seen: bytearray | None = None) -> re.Match[bytes]:
    """Read a process's output until `pattern` matches what came (kept in `seen`)."""
    seen = bytearray() if seen is None else seen
    while True:
        match = re.search(pattern, seen)
        if match:
            return match
        chunk = await stream.receive_some()
        if not chunk:
            raise RuntimeError(f"process exited before printing {pattern!r}: {bytes(seen)!r}")
        seen += chunk


async def stop_process(proc: trio.Process, timeout: float = 15.0) -> int | None:
    """SIGTERM, then wait; kill if it does not end. The exit code, or None if it was killed."""
    if proc.returncode is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(timeout):
        return await proc.wait()
    proc.kill()
    await proc.wait()
    return None
