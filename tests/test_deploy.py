"""deploy/: the systemd unit passes `systemd-analyze verify`, the HAProxy configuration passes
`haproxy -c` and, run by a real haproxy in front of two replicas on one Redis, keeps a legacy
session on its replica and sends nothing to one that is not ready (each skipped only when its
tool is absent; CI installs haproxy and redis-server)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from harness import request
from redis_support import free_port
from test_http import mcp_session

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "exai.service").read_text()
    # verify checks that ExecStart's program exists: point it at this checkout's exai.
    exai = Path(sys.executable).with_name("exai")
    assert "ExecStart=/opt/exai/.venv/bin/exai serve" in unit
    (tmp_path / "exai.service").write_text(unit.replace("/opt/exai/.venv/bin/exai", str(exai)))
    done = subprocess.run([analyze, "verify", str(tmp_path / "exai.service")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "exai.service" not in done.stderr, done.stderr


def test_the_systemd_unit_restarts_reloads_and_reads_its_environment() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "exai.service")
    service = parser["Service"]
    assert service["Restart"] == "on-failure"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["EnvironmentFile"].startswith("-/etc/exai/exai-")  # the last one, optional


def _haproxy() -> str | None:
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)


def test_the_haproxy_configuration_is_valid() -> None:
    haproxy = _haproxy()
    if haproxy is None:
        pytest.skip("haproxy is not installed")
    config = (DEPLOY / "haproxy.cfg").read_text()
    done = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "balance roundrobin" in config and "option httpchk GET /readyz" in config
    assert "stick on req.hdr(Mcp-Session-Id)" in config and "stick store-response res.hdr(Mcp-Session-Id)" in config


# -- behind a real HAProxy: two replicas on one Redis ---------------------------------------


def _haproxy_config(port: int, replicas: list[Any]) -> str:
    """deploy/haproxy.cfg with this test's ports: its own directives, its own health check."""
    shipped = (DEPLOY / "haproxy.cfg").read_text()
    lines = [line for line in shipped.splitlines() if not line.strip().startswith(("server ", "log "))]
    text = "\n".join(lines).replace("bind 127.0.0.1:8081", f"bind 127.0.0.1:{port}")
    for n, bound in enumerate(replicas, 1):
        http_port = httpx.URL(bound.http_url).port
        monitor_port = httpx.URL(bound.monitor_url).port
        text += f"\n    server r{n} 127.0.0.1:{http_port} check port {monitor_port} inter 100ms fall 1 rise 1"
    return text + "\n"


async def test_behind_haproxy_a_legacy_session_stays_on_its_replica(
    daemons: Any, redis_url: str, tmp_path: Path
) -> None:
    """Without the shipped `stick` lines this fails: round-robin sends every other request of
    a session to the replica that does not hold it, which answers 404."""
    haproxy = _haproxy()
    if haproxy is None:
        pytest.skip("haproxy is not installed")
    replicas = [await daemons.start(store_url=redis_url) for _ in range(2)]
    port = free_port()
    (tmp_path / "haproxy.cfg").write_text(_haproxy_config(port, replicas))
    process = await trio.lowlevel.open_process(
        [haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        await trio.sleep(0.5)  # both replicas checked ready (every 100 ms, one success)
        for _ in range(2):
            async with mcp_session(url) as client:
                for n in range(6):
                    assert (await client.rpc(request(n, "ping")))["result"] == {}
                answer = await client.rpc(request(9, "tools/call", {"name": "chat", "arguments": {"prompt": "hi"}}))
                assert not answer["result"]["isError"]
        # A replica that is not ready (here: stopped) gets nothing: every session goes to the other.
        replicas[0].daemon.request_shutdown()
        with trio.fail_after(5):
            await replicas[0].daemon.stopped.wait()
        await trio.sleep(0.3)
        for _ in range(3):
            async with mcp_session(url) as client:
                assert (await client.rpc(request(1, "ping")))["result"] == {}
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
