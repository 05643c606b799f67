"""`exai setup CLIENT`: each snippet parses and carries this daemon's URL, token and timeout."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
from click.testing import CliRunner

from exai.cli import setup
from exai.clientsetup import CLIENTS, run_setup


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_HTTP_PORT", "9123")
    monkeypatch.setenv("EXAI_PORT", "9100")
    monkeypatch.setenv("EXAI_AUTH_TOKEN", "tok-123")
    monkeypatch.setenv("EXAI_TOOL_TIMEOUT_SECS", "100")
    monkeypatch.setenv("EXAI_PROVIDER_TIMEOUT_SECS", "90")


def snippet(client: str, capsys: Any) -> tuple[str, str]:
    assert run_setup(client) == 0
    out = capsys.readouterr()
    return out.out, out.err


def test_json_clients_get_url_and_token(configured: None, capsys: Any) -> None:
    cursor, where = snippet("cursor", capsys)
    assert "~/.cursor/mcp.json" in where
    server = json.loads(cursor)["mcpServers"]["exai"]
    assert server == {"url": "http://127.0.0.1:9123/mcp", "headers": {"Authorization": "Bearer tok-123"}}
    vscode, _ = snippet("vscode", capsys)
    server = json.loads(vscode)["servers"]["exai"]
    assert server["type"] == "http" and server["url"] == "http://127.0.0.1:9123/mcp"
    assert server["headers"] == {"Authorization": "Bearer tok-123"}
    desktop, _ = snippet("claude-desktop", capsys)
    server = json.loads(desktop)["mcpServers"]["exai"]
    assert server["args"] == ["stdio"] and server["command"].endswith("exai")
    assert server["env"] == {"EXAI_HOST": "127.0.0.1", "EXAI_PORT": "9100", "EXAI_AUTH_TOKEN": "tok-123"}


def test_codex_and_claude_code_get_a_timeout_beyond_the_tool_timeout(configured: None, capsys: Any) -> None:
    codex, where = snippet("codex", capsys)
    table = tomllib.loads(codex)["mcp_servers"]["exai"]
    assert table == {
        "url": "http://127.0.0.1:9123/mcp",
        "bearer_token_env_var": "EXAI_AUTH_TOKEN",
        "tool_timeout_sec": 130,
    }
    assert "export EXAI_AUTH_TOKEN='tok-123'" in where
    claude, where = snippet("claude-code", capsys)
    assert claude.startswith("claude mcp add --transport http")
    assert 'http://127.0.0.1:9123/mcp --header "Authorization: Bearer tok-123"' in claude
    assert "MCP_TOOL_TIMEOUT=130000" in where
    stdio, _ = snippet("claude-code-stdio", capsys)
    assert "-e EXAI_PORT=9100 -e EXAI_AUTH_TOKEN=tok-123 exai -- " in stdio and stdio.endswith(" stdio\n")


def test_without_a_token_no_header_is_written(capsys: Any) -> None:
    cursor, _ = snippet("cursor", capsys)
    assert json.loads(cursor) == {"mcpServers": {"exai": {"url": "http://127.0.0.1:8081/mcp"}}}
    codex, _ = snippet("codex", capsys)
    assert "bearer_token_env_var" not in codex and "tool_timeout_sec = 210" in codex


def test_cli_offers_every_client_and_refuses_others() -> None:
    runner = CliRunner()
    for client in CLIENTS:
        assert runner.invoke(setup, [client]).exit_code == 0
    refused = runner.invoke(setup, ["emacs"])
    assert refused.exit_code == 2 and "emacs" in refused.output
