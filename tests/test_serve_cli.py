"""`exai serve` as a user runs it: a real process, real signals, real exit codes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio
from support import assert_quiet_status

from exai.client import connect

EXAI = [sys.executable, "-c", "from exai.cli import main; main()"]


def clean_env(tmp_path: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
    env.update(EXAI_STATE_DIR=str(tmp_path / "state"), EXAI_PORT="0", EXAI_MONITOR_PORT="0", EXAI_HTTP_PORT="0")
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "variable, value",
    [
        ("EXAI_PORT", "not-a-port"),
        ("EXAI_PORT", "70000"),
        ("EXAI_GLOBAL_MAX_INFLIGHT", "-3"),
        ("EXAI_PROVIDER_TIMEOUT_SECS", "500"),  # more than the tool timeout
        ("EXAI_SESSION_MAX_INFLIGHT", "100"),  # more than the global limit
        ("EXAI_HOST", "0.0.0.0"),  # non-loopback without a token
        ("EXAI_LOG_FORMAT", "xml"),
        ("KIMI_BASE_URL", "ftp://example.invalid"),
        ("EXAI_TOOL_TIMEOUT_SEC", "5"),  # not a setting: one letter short
        ("EXAI_STORE_URL", "redis://127.0.0.1:6379/16"),  # Redis has databases 0 to 15
        ("EXAI_DISABLED_TOOLS", "nonesuch"),
        ("EXAI_CLINK_CLIS", "gemini"),
    ],
)
def test_invalid_configuration_exits_2_with_one_line(tmp_path: Any, variable: str, value: str) -> None:
    env = clean_env(tmp_path, **{variable: value})
    proc = subprocess.run([*EXAI, "serve"], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert variable in lines[0]
    assert "Traceback" not in proc.stderr


def test_unknown_variable_in_dotenv_exits_2_with_one_line(tmp_path: Any) -> None:
    (tmp_path / ".env").write_text("EXAI_PORT=0\nEXAI_TOOL_TIMEOUT_SEC=5\n")
    proc = subprocess.run(
        [*EXAI, "serve"], env=clean_env(tmp_path), capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "exai: invalid configuration: EXAI_TOOL_TIMEOUT_SEC is not a setting; "
        "did you mean EXAI_TOOL_TIMEOUT_SECS?\n"
    )


async def test_serve_demo_call_and_sigterm_with_a_call_in_flight(tmp_path: Any) -> None:
    env = clean_env(tmp_path, EXAI_SHUTDOWN_GRACE_SECS="1")
    proc = await trio.lowlevel.open_process(
        [*EXAI, "serve"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        buffer = b""
        with trio.fail_after(20):
            while not re.search(rb"exai http on .*\n", buffer):  # the whole line, not its start
                chunk = await proc.stdout.receive_some()
                assert chunk, "serve exited early"
                buffer += chunk
        match = re.search(rb"exai listening on (ws://127\.0\.0\.1:\d+)", buffer)
        monitor = re.search(rb"exai monitor on (http://127\.0\.0\.1:\d+)", buffer)
        assert match and monitor, buffer
        assert re.search(rb"exai http on http://127\.0\.0\.1:\d+/mcp\n", buffer), buffer
        url = match.group(1).decode()
        answers: list[Any] = []
        async with connect(url) as client:
            result = await client.call_tool("chat", {"prompt": "hello"})
            assert not result.is_error and result.text
            version = await client.call_tool("version", {})
            assert version.structured["demo"] is True
        await assert_quiet_status(monitor.group(1).decode())
        async with connect(url) as client:

            async def hanging() -> None:
                try:
                    await client.call_tool("chat", {"prompt": 'wait\n#sim {"hang": true}'})
                except Exception as exc:
                    answers.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hanging)
                await trio.sleep(0.3)
                started = trio.current_time()
                proc.send_signal(signal.SIGTERM)
                with trio.fail_after(10):
                    code = await proc.wait()
        assert code == 0
        assert trio.current_time() - started < 3.5  # grace 1 s, then cancel and close
        assert answers and "shutting down" in str(answers[0])
        errors = (await proc.stderr.receive_some(1 << 20)).decode()
        assert "DEMO" in errors
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_busy_port_exits_1_with_one_line(tmp_path: Any) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = clean_env(tmp_path, EXAI_PORT=str(port))
        proc = subprocess.run([*EXAI, "serve"], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr


def test_corrupt_store_exits_1_with_one_line(tmp_path: Any) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "conversations.sqlite3").write_bytes(b"this is not a sqlite database" * 100)
    env = clean_env(tmp_path, EXAI_STATE_DIR=str(state), EXAI_PORT="0", EXAI_MONITOR_PORT="0")
    proc = subprocess.run([*EXAI, "serve"], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("exai:")]
    assert len(lines) == 1 and "conversation store" in lines[0] and "EXAI_STATE_DIR" in lines[0]
    assert "Traceback" not in proc.stderr
