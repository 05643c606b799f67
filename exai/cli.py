"""The `exai` command. Each subcommand is a thin shell over a function of its module."""

from __future__ import annotations

import json
import sys

import click

CONTEXT = {"help_option_names": ["-h", "--help"]}


# Usage errors exit 2, click's default, as the contract asks.
@click.group(context_settings=CONTEXT)
@click.version_option(package_name="exai")
def main() -> None:
    """exai: AI workflow tools over MCP on WebSocket (GLM and Kimi)."""


@main.command()
@click.option("--host", default=None, help="bind address (EXAI_HOST)")
@click.option("--port", type=int, default=None, help="WebSocket port, 0 = any free (EXAI_PORT)")
@click.option("--monitor-port", type=int, default=None, help="monitor HTTP port (EXAI_MONITOR_PORT)")
@click.option("--http-port", type=int, default=None, help="MCP Streamable HTTP port (EXAI_HTTP_PORT)")
@click.option("--demo", is_flag=True, help="serve the built-in simulated model")
def serve(
    host: str | None, port: int | None, monitor_port: int | None, http_port: int | None, demo: bool
) -> None:
    """Run the daemon in the foreground."""
    from exai.server import run_serve

    sys.exit(
        run_serve(host=host, port=port, monitor_port=monitor_port, http_port=http_port, demo=demo)
    )


@main.command()
@click.argument("tool")
@click.argument("pairs", nargs=-1)
@click.option("--json", "json_args", default=None, help="arguments as a JSON object")
@click.option("--timeout", type=float, default=None, help="deadline of the call in seconds")
@click.option("--url", default=None, help="daemon URL, ws://HOST:PORT/")
@click.option("--token", default=None, help="bearer token (EXAI_AUTH_TOKEN)")
def call(
    tool: str,
    pairs: tuple[str, ...],
    json_args: str | None,
    timeout: float | None,
    url: str | None,
    token: str | None,
) -> None:
    """Call one tool: exai call chat prompt='hello'."""
    from exai.clientcli import run_call

    arguments: dict[str, object] = {}
    if json_args is not None:
        try:
            loaded = json.loads(json_args)
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"--json is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise click.UsageError("--json must be a JSON object")
        arguments.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"argument {pair!r} is not key=value")
        arguments[key] = _parse_value(value)
    sys.exit(run_call(tool, arguments, timeout=timeout, url=url, token=token))


def _parse_value(text: str) -> object:
    """`n=3` gives 3, `flag=true` gives True, `files=["/a"]` a list; anything else is text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, int | float | bool | list | dict) or value is None else text


@main.command()
@click.option("--url", default=None)
@click.option("--token", default=None)
def tools(url: str | None, token: str | None) -> None:
    """List the daemon's tools."""
    from exai.clientcli import run_tools

    sys.exit(run_tools(url=url, token=token))


@main.command()
@click.option("--monitor-url", default=None, help="http://HOST:PORT of the monitor")
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON")
@click.option("--token", default=None, help="the monitor's token (default: EXAI_AUTH_TOKEN)")
def status(monitor_url: str | None, as_json: bool, token: str | None) -> None:
    """One snapshot of connections, requests, limiters and providers."""
    from exai.clientcli import run_status

    sys.exit(run_status(monitor_url=monitor_url, as_json=as_json, token=token))


@main.command()
@click.option("--monitor-url", default=None)
@click.option("--interval", type=float, default=1.0, show_default=True)
@click.option("--token", default=None, help="the monitor's token (default: EXAI_AUTH_TOKEN)")
def top(monitor_url: str | None, interval: float, token: str | None) -> None:
    """A live view of the daemon: rates, latency, calls in flight, recent failures."""
    from exai.clientcli import run_top

    sys.exit(run_top(monitor_url=monitor_url, interval=interval, token=token))


@main.command()
@click.option("--url", default=None)
@click.option("--token", default=None)
def stdio(url: str | None, token: str | None) -> None:
    """MCP stdio bridge to the daemon."""
    from exai.bridge import run_stdio

    sys.exit(run_stdio(url=url, token=token))


@main.command("mock-provider")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8090, show_default=True, help="0 = any free port")
def mock_provider(host: str, port: int) -> None:
    """Run the OpenAI-compatible simulator."""
    from exai.providers.simulator import run_mock_provider

    sys.exit(run_mock_provider(host=host, port=port))


@main.command()
@click.option("--check", is_flag=True, help="validate only; exit non-zero when invalid")
def config(check: bool) -> None:
    """Show the effective configuration and where each value came from."""
    sys.exit(run_config_command(check=check))


def run_config_command(check: bool) -> int:
    """`exai config [--check]`: 0 when valid, 2 with one line on stderr when not."""
    from exai.config import ConfigError, describe_settings, load_settings
    from exai.providers.catalog import ModelsFileError, catalog
    from exai.tools import TOOL_NAMES

    try:
        rows = describe_settings(known_tools=TOOL_NAMES)
        catalog(demo=False, models_file=load_settings().models_file)
    except (ConfigError, ModelsFileError) as exc:
        print(f"exai: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if check:
        print("configuration ok")
        return 0
    env_width = max(len(env) for env, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    for env, value, source in rows:
        print(f"{env:<{env_width}}  {value:<{value_width}}  ({source})")
    return 0


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def threads(as_json: bool) -> None:
    """List the stored conversation threads (id, tool, turns, last use, expires)."""
    from exai.threadscli import run_threads

    sys.exit(run_threads(as_json=as_json))


@main.command()
@click.argument("thread_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def thread(thread_id: str, as_json: bool) -> None:
    """Print one conversation thread's turns."""
    from exai.threadscli import run_thread

    sys.exit(run_thread(thread_id, as_json=as_json))


@main.command()
@click.argument("client", type=click.Choice(
    ["claude-code", "claude-code-stdio", "claude-desktop", "vscode", "cursor", "codex"]
))
def setup(client: str) -> None:
    """Print the MCP configuration snippet for CLIENT, filled in for this daemon."""
    from exai.clientsetup import run_setup

    sys.exit(run_setup(client))
