"""Small helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import trio

QUIET_GRACE_S = 2.0


async def eventually(condition: Callable[[], bool], timeout: float = 2.0, what: str = "condition") -> None:
    """Wait until `condition()` holds, polling; fail after `timeout` seconds."""
    with trio.move_on_after(timeout):
        while not condition():  # noqa: ASYNC110 - state owned by another task, no event to wait on
            await trio.sleep(0.002)
    assert condition(), f"{what} did not hold within {timeout} s"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].strip("/"))


async def raw_handshake(url: str, *headers: bytes) -> bytes:
    """What the daemon answers (within 1 s, until it closes) to a handshake over raw TCP."""
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
    answer = b""
    async with stream:
        await stream.send_all(upgrade_request(*headers))
        with trio.move_on_after(1):  # a refused handshake is closed; an accepted one is not
            try:
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            except trio.BrokenResourceError:  # reset: the daemon closed with our bytes unread
                pass
    return answer


def upgrade_request(*headers: bytes) -> bytes:
    lines = [
        b"GET / HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: Upgrade",
        b"Upgrade: websocket",
        b"Sec-WebSocket-Version: 13",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        *headers,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def status_leaks(status: dict[str, Any]) -> list[str]:
    """What a quiet daemon's /api/status must not show: the conftest invariants, from outside."""
    found = []
    limiters = status["limiters"]
    borrowed = {n: s["borrowed"] for n, s in limiters.items() if s["borrowed"]}
    if borrowed:
        found.append(f"limiter tokens still borrowed: {borrowed}")
    waiting = {n: s["waiting"] for n, s in limiters.items() if s["waiting"]}
    if waiting:
        found.append(f"tasks still waiting on limiters: {waiting}")
    for field in ("inflight", "queued", "connections"):
        if status[field]:
            found.append(f"{field} is {status[field]}, not 0")
    if status["requests"]:
        found.append(f"calls still alive: {status['requests']}")
    for name, provider in status["providers"].items():
        for field in ("inflight", "busy_connections", "rpm_waiting", "probes_inflight"):
            if provider[field]:
                found.append(f"provider {name} {field} is {provider[field]}, not 0")
    return found


async def assert_quiet_status(monitor_url: str, *, token: str | None = None, grace: float = QUIET_GRACE_S) -> None:
    """For a daemon in a subprocess, before it is stopped: its /api/status settles, within
    `grace` seconds, to nothing borrowed, queued, open or alive (see `status_leaks`)."""
    problems = [f"no answer from {monitor_url}/api/status within {grace} s"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=monitor_url, timeout=grace, headers=headers) as http:
        with trio.move_on_after(grace):
            while True:
                response = await http.get("/api/status")
                response.raise_for_status()
                problems = status_leaks(response.json())
                if not problems:
                    return
                await trio.sleep(0.02)
    assert not problems, "; ".join(problems)
