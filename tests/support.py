"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio
from harness import status_leaks

EXAI = [sys.executable, "-c", "from exai.cli import main; main()"]

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


async def assert_quiet_status(monitor_url: str, *, token: str | None = None, grace: float = QUIET_GRACE_S) -> None:
    """For a daemon in a subprocess, before it is stopped: its /api/status settles, within
    `grace` seconds, to nothing borrowed, queued, open or alive (`harness.status_leaks`)."""
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


@dataclass
class ServeProcess:
    """A running `exai serve` subprocess and what it printed."""

    proc: trio.Process
    url: str = ""
    monitor_url: str = ""
    http_url: str = ""
    stdout: bytes = b""
    stderr: bytearray = field(default_factory=bytearray)


@asynccontextmanager
async def serve_process(cwd: Path, *args: str, **env_extra: str) -> AsyncIterator[ServeProcess]:
    """`exai serve` in a subprocess on free loopback ports, with a clean environment plus
    `env_extra`; yields once it printed its URLs. Killed on exit if it still runs; its stderr
    stays readable after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
    env.update(EXAI_STATE_DIR=str(cwd / "state"), EXAI_PORT="0", EXAI_MONITOR_PORT="0", EXAI_HTTP_PORT="0")
    env.update(env_extra)
    proc = await trio.lowlevel.open_process(
        [*EXAI, "serve", *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    served = ServeProcess(proc)

    async def read_stderr() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.receive_some():
            served.stderr += chunk

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_stderr)
            assert proc.stdout is not None
            with trio.fail_after(20):
                while not re.search(rb"exai http on .*\n", served.stdout):
                    chunk = await proc.stdout.receive_some()
                    assert chunk, served.stderr.decode()
                    served.stdout += chunk
            for name, pattern in (("url", rb"exai listening on (ws://\S+)"), ("monitor_url", rb"exai monitor on (http://\S+)"), ("http_url", rb"exai http on (http://\S+)")):
                setattr(served, name, re.search(pattern, served.stdout).group(1).decode())  # type: ignore[union-attr]
            yield served
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
