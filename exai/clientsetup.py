"""`exai setup CLIENT`: the exact configuration snippet for one MCP client.

Filled in from the same configuration the client commands use (`load_endpoint`): this
daemon's Streamable HTTP URL, its token, and a client-side tool timeout longer than
EXAI_TOOL_TIMEOUT_SECS, so the daemon's own deadline answers first. The snippet goes to
stdout (redirect it into the file), where to put it goes to stderr.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Callable
from typing import Any, Final

from exai.clientcli import Endpoint, _connectable, load_endpoint

# The client waits this much longer than the daemon's deadline, so a timed-out call still
# gets the daemon's -32001 answer instead of a client-side abort.
TIMEOUT_MARGIN_S: Final = 30


def http_url(endpoint: Endpoint) -> str:
    return f"http://{_connectable(endpoint.host)}:{endpoint.http_port}/mcp"


def client_timeout_s(endpoint: Endpoint) -> int:
    return math.ceil(endpoint.tool_timeout_secs) + TIMEOUT_MARGIN_S


def _bearer(endpoint: Endpoint) -> dict[str, str]:
    return {"Authorization": f"Bearer {endpoint.auth_token}"} if endpoint.auth_token else {}


def _stdio_env(endpoint: Endpoint) -> dict[str, str]:
    env = {"EXAI_HOST": _connectable(endpoint.host).strip("[]"), "EXAI_PORT": str(endpoint.port)}
    if endpoint.auth_token:
        env["EXAI_AUTH_TOKEN"] = endpoint.auth_token
    return env


def _exai_command() -> str:
    """The absolute path of `exai`: desktop apps do not see the shell's PATH."""
    return shutil.which("exai") or "exai"


def claude_code(endpoint: Endpoint) -> tuple[str, str]:
    header = "".join(f' --header "{k}: {v}"' for k, v in _bearer(endpoint).items())
    ms = client_timeout_s(endpoint) * 1000
    snippet = f"claude mcp add --transport http --scope user exai {http_url(endpoint)}{header}\n"
    where = (
        "Run this once. Claude Code's MCP tool timeout is MCP_TOOL_TIMEOUT (milliseconds): "
        f'add "MCP_TOOL_TIMEOUT": "{ms}" to "env" in ~/.claude/settings.json, '
        f"or start it as MCP_TOOL_TIMEOUT={ms} claude"
    )
    return snippet, where


def claude_code_stdio(endpoint: Endpoint) -> tuple[str, str]:
    env = "".join(f" -e {k}={v}" for k, v in _stdio_env(endpoint).items())
    ms = client_timeout_s(endpoint) * 1000
    snippet = f"claude mcp add --transport stdio --scope user{env} exai -- {_exai_command()} stdio\n"
    where = f"Run this once (stdio bridge to the daemon's WebSocket); tool timeout as for HTTP: MCP_TOOL_TIMEOUT={ms}"
    return snippet, where


def claude_desktop(endpoint: Endpoint) -> tuple[str, str]:
    config = {"mcpServers": {"exai": {"command": _exai_command(), "args": ["stdio"], "env": _stdio_env(endpoint)}}}
    where = (
        "Merge into claude_desktop_config.json (Settings > Developer > Edit Config) and restart "
        "Claude Desktop. It has no tool-timeout setting: keep EXAI_TOOL_TIMEOUT_SECS within what it waits."
    )
    return json.dumps(config, indent=2) + "\n", where


def vscode(endpoint: Endpoint) -> tuple[str, str]:
    server: dict[str, Any] = {"type": "http", "url": http_url(endpoint)}
    if endpoint.auth_token:
        server["headers"] = _bearer(endpoint)
    where = "Save as .vscode/mcp.json (or merge into the user mcp.json: MCP: Open User Configuration)."
    return json.dumps({"servers": {"exai": server}}, indent=2) + "\n", where


def cursor(endpoint: Endpoint) -> tuple[str, str]:
    server: dict[str, Any] = {"url": http_url(endpoint)}
    if endpoint.auth_token:
        server["headers"] = _bearer(endpoint)
    where = "Save as ~/.cursor/mcp.json (all projects) or .cursor/mcp.json (one project); merge if it exists."
    return json.dumps({"mcpServers": {"exai": server}}, indent=2) + "\n", where


def codex(endpoint: Endpoint) -> tuple[str, str]:
    lines = ["[mcp_servers.exai]", f'url = "{http_url(endpoint)}"']
    if endpoint.auth_token:
        lines.append('bearer_token_env_var = "EXAI_AUTH_TOKEN"')
    lines.append(f"tool_timeout_sec = {client_timeout_s(endpoint)}")
    where = "Append to ~/.codex/config.toml."
    if endpoint.auth_token:
        where += f" Codex reads the token from the environment: export EXAI_AUTH_TOKEN='{endpoint.auth_token}'"
    return "\n".join(lines) + "\n", where


CLIENTS: Final[dict[str, Callable[[Endpoint], tuple[str, str]]]] = {
    "claude-code": claude_code,
    "claude-code-stdio": claude_code_stdio,
    "claude-desktop": claude_desktop,
    "vscode": vscode,
    "cursor": cursor,
    "codex": codex,
}


def run_setup(client: str) -> int:
    """Print `client`'s snippet on stdout and where it goes on stderr; 0."""
    snippet, where = CLIENTS[client](load_endpoint())
    print(f"# {where}", file=sys.stderr)
    sys.stdout.write(snippet)
    return 0
