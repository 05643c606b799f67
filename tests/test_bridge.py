"""`exai stdio`, the real command in a subprocess, against the fake daemon of test_client
over real loopback WebSockets (127.0.0.1, port 0; real time with generous bounds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import trio
from support import eventually
from test_client import BOUND, FakeDaemon

pytestmark = pytest.mark.slow

STDIO = [sys.executable, "-c", "from exai.cli import main; main()", "stdio"]
NO_CONFIG = ["--token", "unused"]  # as test_client: skips loading the configuration


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


INITIALIZE = line(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t"},
        },
    }
)
INITIALIZED = line({"jsonrpc": "2.0", "method": "notifications/initialized"})
TOOLS_LIST = line({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})


def call(request_id: Any, name: str, arguments: dict[str, Any] | None = None) -> bytes:
    params = {"name": name, "arguments": arguments or {}}
    return line({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})


async def bridge(
    *args: str, stdin: bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(20):
        return await trio.run_process(
            [*STDIO, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeDaemon:
    daemon: FakeDaemon = await nursery.start(FakeDaemon().serve)
    return daemon


async def test_requests_in_responses_out_and_exit_0_at_eof(fake: FakeDaemon) -> None:
    done = await bridge("--url", fake.url, *NO_CONFIG, stdin=INITIALIZE + INITIALIZED + TOOLS_LIST)
    assert done.returncode == 0, done.stderr
    responses = [json.loads(text) for text in done.stdout.splitlines()]
    assert [response["id"] for response in responses] == [1, 2]
    assert responses[0]["result"]["protocolVersion"] == "2025-06-18"  # passed through as is
    assert [tool["name"] for tool in responses[1]["result"]["tools"]] == ["echo", "hang"]
    # the bridge passes initialize through itself; it adds nothing of its own
    assert fake.methods == ["initialize", "notifications/initialized", "tools/list"]
    assert fake.subprotocols == ["mcp"]
    await fake.wait_until(lambda: fake.close_codes == [1000])


async def test_eof_waits_for_answers_but_not_for_cancelled_calls(fake: FakeDaemon) -> None:
    cancel = line(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "h"}}
    )
    stdin = (
        INITIALIZE
        + b"{not json\n"
        + b"\n"  # blank lines are skipped
        + call(3, "echo", {"text": "slow", "delay": 0.3})
        + call("h", "hang")
        + cancel
        + call(4, "pretty")
        + call(5, "echo", {"text": "no newline at the end"}).rstrip(b"\n")
    )
    with trio.fail_after(BOUND):
        done = await bridge("--url", fake.url, *NO_CONFIG, stdin=stdin)
    assert done.returncode == 0, done.stderr
    responses = {}
    for text in done.stdout.splitlines():
        message = json.loads(text)
        responses[message["id"]] = message
    assert set(responses) == {1, None, 3, 4, 5}
    assert responses[None]["error"]["code"] == -32700
    assert responses[3]["result"]["content"][0]["text"] == "slow"
    assert responses[4]["result"] == {"content": [], "isError": False}  # re-framed on one line
    assert responses[5]["result"]["content"][0]["text"] == "no newline at the end"
    assert fake.cancelled == [{"requestId": "h"}]


async def test_exit_4_when_the_daemon_closes(fake: FakeDaemon) -> None:
    process = await trio.lowlevel.open_process(
        [*STDIO, "--url", fake.url, *NO_CONFIG],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdin is not None and process.stderr is not None
        await process.stdin.send_all(INITIALIZE)
        await fake.wait_until(lambda: "initialize" in fake.methods)
        await fake.close_all(1001, "shutting down")
        with trio.fail_after(BOUND):
            assert await process.wait() == 4
            stderr = b""
            while chunk := await process.stderr.receive_some():
                stderr += chunk
        assert b"1001" in stderr and b"shutting down" in stderr
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()


async def test_token_from_the_environment(nursery: trio.Nursery) -> None:
    daemon: FakeDaemon = await nursery.start(FakeDaemon(token="tok").serve)
    env = {**os.environ, "EXAI_AUTH_TOKEN": "tok"}
    runs: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(label: str, env: dict[str, str] | None) -> None:
        runs[label] = await bridge("--url", daemon.url, stdin=INITIALIZE, env=env)

    async with trio.open_nursery() as both:
        both.start_soon(run, "with token", env)
        both.start_soon(run, "without", None)
    done, refused = runs["with token"], runs["without"]
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == 1
    assert refused.returncode == 4
    assert b"HTTP 401: missing or wrong bearer token" in refused.stderr
    assert refused.stdout == b""


async def test_the_bridge_speaks_streamable_http_when_the_url_is_http(daemon: Any) -> None:
    stdin = INITIALIZE + INITIALIZED + TOOLS_LIST + call(3, "chat", {"prompt": "over http"})
    done = await bridge("--url", daemon.http_url, *NO_CONFIG, stdin=stdin)
    assert done.returncode == 0, done.stderr
    responses = {message["id"]: message for message in map(json.loads, done.stdout.splitlines())}
    assert sorted(responses) == [1, 2, 3]
    assert responses[1]["result"]["protocolVersion"] == "2025-06-18"
    assert "chat" in [tool["name"] for tool in responses[2]["result"]["tools"]]
    assert responses[3]["result"]["isError"] is False, responses[3]
    await eventually(lambda: len(daemon.daemon.connections) == 0, what="the bridge's session ended (DELETE)")
