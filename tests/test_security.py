"""Security at the edge: the bearer token, handshake abuse, and secrets that never leak.

Real loopback sockets (raw TCP for malformed handshakes), real time with short bounds. The
non-loopback-bind rule is tested in test_config.py (`test_non_loopback_host_needs_token`)
and test_serve_cli.py (exit 2); the burst against the connection cap and the stalled
handshake in test_containment.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from support import EXAI, port_of, raw_handshake, serve_process, upgrade_request

from exai.auth import bearer_ok
from exai.client import connect

TOKEN = "tok-3f9a1c77e2b04d5e"
CANARY_KEY = "sk-canary-KIMI-8d2e41b7c9"
CANARY_GLM = "glm-canary-0c5fd37a91"
CANARY_TOKEN = "canary-token-6b1e9f20ad"


# -- the bearer check ------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, ok",
    [
        ([(b"Authorization", f"Bearer {TOKEN}".encode())], True),
        ([(b"authorization", f"bearer {TOKEN}".encode())], True),
        ([(b"Authorization", f"Bearer  {TOKEN} ".encode())], True),
        ([(b"Host", b"x"), (b"Authorization", b"Bearer nope"), (b"Authorization", f"Bearer {TOKEN}".encode())], True),
        ([], False),
        ([(b"Authorization", b"Bearer")], False),
        ([(b"Authorization", b"Bearer ")], False),
        ([(b"Authorization", f"Basic {TOKEN}".encode())], False),
        ([(b"Authorization", f"Bearer {TOKEN[:-1]}".encode())], False),
        ([(b"Authorization", f"Bearer {TOKEN[:-1]}X".encode())], False),
        ([(b"Authorization", f"Bearer {TOKEN}x".encode())], False),
        ([(b"Authorization", b"Bearer \xff\xfe\x00\x80")], False),
        ([(b"Authorization", f"Bearer {TOKEN[:-1]}\u00e9".encode())], False),
        ([(b"Authorization", b"Bearer " + b"A" * 60_000)], False),
        ([(b"X-Token", f"Bearer {TOKEN}".encode())], False),
    ],
)
def test_bearer_ok(headers: list[tuple[bytes, bytes]], ok: bool) -> None:
    assert bearer_ok(headers, TOKEN) is ok


# -- the handshake ----------------------------------------------------------------------


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert match, answer[:200]
    return int(match.group(1))


@pytest.mark.parametrize(
    "headers, status",
    [
        ((), 401),
        ((b"Authorization: Bearer wrong",), 401),
        ((f"Authorization: Bearer {TOKEN[:-1]}0".encode(),), 401),  # differs in the last character
        ((f"Authorization: Bearer {TOKEN[:-1]}".encode(),), 401),
        ((b"Authorization: Bearer \xc3\xa9\xff\x80",), 401),
        ((b"Authorization: \xff\xfe Bearer",), 401),
        # 60 KB of header: 400, or the socket reset before the client reads it
        ((b"X-Filler: " + b"a" * 60_000, f"Authorization: Bearer {TOKEN}".encode()), 400),
        ((b"Authorization: Bearer " + b"a" * 60_000,), 400),
        ((f"Authorization: Bearer {TOKEN}".encode(),), 101),
    ],
)
async def test_handshake_refusals(daemons: Any, log_lines: list[str], headers: tuple[bytes, ...], status: int) -> None:
    bound = await daemons.start(auth_token=TOKEN)
    answer = await raw_handshake(bound.url, *headers)
    if status == 400:
        assert answer == b"" or status_of(answer) == 400, answer[:200]
    else:
        assert status_of(answer) == status
    async with connect(bound.url, token=TOKEN) as client:
        await client.ping()
    assert not any("error id" in line for line in log_lines)
    assert not any(TOKEN in line for line in log_lines)


async def test_handshake_status_codes_with_httpx(daemons: Any) -> None:
    bound = await daemons.start(auth_token=TOKEN)
    base = bound.url.replace("ws://", "http://")
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    for auth, status in [
        (None, 401),
        (b"Bearer " + TOKEN[:-1].encode() + b"\xe9", 401),
        (f"Bearer {TOKEN}".encode(), 101),
    ]:
        headers: dict[str, Any] = dict(upgrade)
        if auth is not None:
            headers["Authorization"] = auth
        async with httpx.AsyncClient() as http:  # a refused handshake closes its connection
            response = await http.get(base, headers=headers)
            assert response.status_code == status
            if status == 401:
                assert "Bearer" in response.text and TOKEN not in response.text


@pytest.mark.parametrize("trickle", [False, True])
async def test_slow_handshake_is_dropped(daemons: Any, monkeypatch: pytest.MonkeyPatch, trickle: bool) -> None:
    from exai.transports import ws as transport

    monkeypatch.setattr(transport, "HANDSHAKE_TIMEOUT_S", 0.5)
    bound = await daemons.start()
    request = upgrade_request()
    async with await trio.open_tcp_stream("127.0.0.1", port_of(bound.url)) as stream:
        started = trio.current_time()
        with trio.fail_after(3):
            if trickle:  # one byte every 50 ms: it never completes within the timeout
                for byte in request[:-1]:
                    try:
                        await stream.send_all(bytes([byte]))
                    except trio.BrokenResourceError:
                        break
                    await trio.sleep(0.05)
            else:
                await stream.send_all(request[:50])
            try:
                closed = await stream.receive_some(1024) == b""
            except trio.BrokenResourceError:
                closed = True
        assert closed
        assert trio.current_time() - started <= 2.0
    async with connect(bound.url) as client:
        await client.ping()


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("token", ["tok\u00e9n", "tok en", "tok\x07en", "t\u200bok"])
def test_serve_refuses_a_token_outside_printable_ascii(tmp_path: Path, token: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
    env.update(EXAI_STATE_DIR=str(tmp_path / "state"), EXAI_PORT="0", EXAI_MONITOR_PORT="0", EXAI_AUTH_TOKEN=token)
    proc = subprocess.run([*EXAI, "serve"], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "EXAI_AUTH_TOKEN" in lines[0] and "printable ASCII" in lines[0]
    assert token not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


# -- secrets never leak -------------------------------------------------------------------


async def test_canary_secrets_never_appear_anywhere(tmp_path: Path, simulator: Any, log_lines: list[str]) -> None:
    """A real `exai serve` with canary keys and token, driven through good calls, provider
    errors that echo the key, refused handshakes and bad frames: the canaries appear in no
    log line, answer, endpoint or file the run wrote."""
    (tmp_path / "note.txt").write_text("notes")
    seen: list[str] = []  # every answer, endpoint body and handshake reply
    async with serve_process(
        tmp_path,
        EXAI_LOG_LEVEL="DEBUG",
        EXAI_ALLOWED_ROOTS=str(tmp_path),
        EXAI_AUTH_TOKEN=CANARY_TOKEN,
        KIMI_API_KEY=CANARY_KEY,
        GLM_API_KEY=CANARY_GLM,
        KIMI_BASE_URL=simulator.url,
        GLM_BASE_URL=simulator.url,
        EXAI_PROVIDER_MAX_RETRIES="0",
    ) as served:
        url, monitor, proc, stdout = served.url, served.monitor_url, served.proc, served.stdout
        seen.append(stdout.decode())

        for header in (b"Authorization: Bearer " + CANARY_TOKEN[:-1].encode(), b"Authorization: Basic x"):
            seen.append((await raw_handshake(url, header)).decode(errors="replace"))
        async with connect(url, token=CANARY_TOKEN) as client:
            for model, key in (("kimi-k2-0905-preview", CANARY_KEY), ("glm-4.6", CANARY_GLM)):
                echo = {"error": {"message": f"Incorrect API key provided: {key}"}}  # as OpenAI's does
                prompt = f"x\n#sim {json.dumps({'status': 401, 'error_body': echo})}"
                result = await client.call_tool("chat", {"prompt": prompt, "model": model})
                assert result.is_error
                seen.append(result.text)
            for name, arguments in [
                ("chat", {"prompt": "hello", "files": [str(tmp_path / "note.txt")]}),
                ("chat", {"prompt": "x", "files": ["/etc/passwd"]}),
                ("chat", {"prompt": 3, "bogus": CANARY_KEY[:6]}),
                ("status", {}),
                ("listmodels", {}),
                ("version", {}),
            ]:
                seen.append(json.dumps((await client.call_tool(name, arguments)).__dict__, default=str))
            for frame in ("{", "[]", '{"jsonrpc":"2.0","id":1,"method":"nope"}', "[" * 5000):
                await client.send_raw(frame)
                seen.append(json.dumps(await client.receive_raw()))
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {CANARY_TOKEN}"}) as http:
            for path in ("/api/status", "/metrics", "/", "/healthz", "/readyz"):
                seen.append((await http.get(monitor + path)).text)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0
    log = served.stderr.decode()
    assert "connection" in log and "call" in log  # the daemon did log at DEBUG
    assert "Traceback" not in log
    for canary in (CANARY_KEY, CANARY_GLM, CANARY_TOKEN):
        assert canary not in log
        assert not [text for text in seen if canary in text], canary
        assert not any(canary in line for line in log_lines)  # this process: the simulator
    written = [path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()]  # noqa: ASYNC240 - the run is over
    assert any(written)  # the store at least
    for canary in (CANARY_KEY, CANARY_GLM, CANARY_TOKEN):
        assert not any(canary.encode() in content for content in written)
