"""Small helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Callable

import trio


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
