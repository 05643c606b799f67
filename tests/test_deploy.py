"""deploy/: the systemd unit passes `systemd-analyze verify` and the HAProxy configuration
passes `haproxy -c` (each skipped only when its tool is absent; CI installs haproxy)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_haproxy_configuration_is_valid() -> None:
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if haproxy is None:
        pytest.skip("haproxy is not installed")
    config = (DEPLOY / "haproxy.cfg").read_text()
    done = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "balance roundrobin" in config and "option httpchk GET /readyz" in config
    assert "stick on req.hdr(Mcp-Session-Id)" in config and "stick store-response res.hdr(Mcp-Session-Id)" in config
