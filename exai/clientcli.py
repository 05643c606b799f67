"""The client commands of the `exai` CLI: call, tools, status, top.

Each `run_*` function is synchronous, prints for a human and returns the exit status:
0 ok, 1 tool or daemon error, 2 usage, 3 timed out, 4 cannot connect or connection lost,
130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import trio
from loguru import logger

from exai.client import ConnectionLost, RpcError, ToolResult, connect

if TYPE_CHECKING:
    import httpx
    from rich.console import RenderableType
    from rich.text import Text

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_TIMEOUT: Final = 3
EXIT_UNREACHABLE: Final = 4
EXIT_INTERRUPTED: Final = 130

# The daemon answers a timed-out call itself (-32001); the client waits this much longer
# before giving up on its own.
CLIENT_GRACE_SECS: Final = 5.0
STATUS_HTTP_TIMEOUT_SECS: Final = 5.0
PROGRESS_TICK_SECS: Final = 0.5

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8079
DEFAULT_MONITOR_PORT: Final = 8080
DEFAULT_HTTP_PORT: Final = 8081
DEFAULT_TOOL_TIMEOUT_SECS: Final = 180.0

ERR_TIMEOUT: Final = -32001
ERR_OVERLOADED: Final = -32000
ERR_INVALID_PARAMS: Final = -32602


# -- where the daemon is ---------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where the client commands find the daemon."""

    host: str
    port: int
    monitor_port: int
    auth_token: str | None
    http_port: int = DEFAULT_HTTP_PORT
    tool_timeout_secs: float = DEFAULT_TOOL_TIMEOUT_SECS


def _dotenv(path: Path = Path(".env")) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; used only when the configuration does not load."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return values
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _port(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def load_endpoint() -> Endpoint:
    """The daemon's address from exai.config; from the raw environment and .env (or the
    defaults) when the configuration is missing or invalid, so a client never crashes on it."""
    try:
        from exai.config import load_settings

        settings = load_settings()
        secret = settings.auth_token
        return Endpoint(
            host=settings.host,
            port=settings.port,
            monitor_port=settings.monitor_port,
            auth_token=secret.get_secret_value() if secret is not None else None,
            http_port=settings.http_port,
            tool_timeout_secs=settings.tool_timeout_secs,
        )
    except Exception as exc:  # an invalid configuration must not stop a client
        logger.debug("configuration not usable ({}); using the environment", type(exc).__name__)
    env = {**_dotenv(), **os.environ}
    return Endpoint(
        host=env.get("EXAI_HOST") or DEFAULT_HOST,
        port=_port(env.get("EXAI_PORT"), DEFAULT_PORT),
        monitor_port=_port(env.get("EXAI_MONITOR_PORT"), DEFAULT_MONITOR_PORT),
        auth_token=env.get("EXAI_AUTH_TOKEN") or None,
        http_port=_port(env.get("EXAI_HTTP_PORT"), DEFAULT_HTTP_PORT),
    )


def _connectable(host: str) -> str:
    """A host a client can reach: wildcard binds mean loopback; IPv6 gets brackets."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def resolve_url(url: str | None) -> str:
    """`--url` if given, else ws://EXAI_HOST:EXAI_PORT/."""
    if url:
        return url
    endpoint = load_endpoint()
    return f"ws://{_connectable(endpoint.host)}:{endpoint.port}/"


def resolve_token(token: str | None) -> str | None:
    """`--token` if given, else EXAI_AUTH_TOKEN (or None)."""
    if token:
        return token
    return load_endpoint().auth_token


def resolve_monitor_url(monitor_url: str | None) -> str:
    """`--monitor-url` if given, else http://EXAI_HOST:EXAI_MONITOR_PORT."""
    if monitor_url:
        return monitor_url.rstrip("/")
    endpoint = load_endpoint()
    return f"http://{_connectable(endpoint.host)}:{endpoint.monitor_port}"


def quiet_logs(level: str = "WARNING") -> None:
    """Client commands keep stderr for the user: only warnings and errors are logged."""
    logger.remove()
    logger.add(sys.stderr, level=level, format="exai: {level}: {message}")


# -- exai call -------------------------------------------------------------------------


class ProgressLine:
    """Progress on stderr: one live line rewritten in place on a terminal, else one line
    per progress message."""

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self._stream = stream
        self._live = live
        self._started = time.monotonic()
        self._message = "waiting for the daemon"
        self._shown = False

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def update(self, params: dict[str, Any]) -> None:
        progress, total = params.get("progress"), params.get("total")
        message = str(params.get("message") or "")
        if total:
            message = f"{message} ({progress}/{total})".strip()
        elif not message:
            message = f"progress {progress}"
        self._message = message
        if self._live:
            self.render()
        else:
            self._stream.write(f"[{self._elapsed():6.1f}s] {message}\n")
            self._stream.flush()

    def render(self) -> None:
        """Redraw the live line (terminal only)."""
        if not self._live:
            return
        self._stream.write(f"\r\x1b[K[{self._elapsed():6.1f}s] {self._message}")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._live and self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False

    async def tick(self) -> None:
        """Keep the elapsed seconds moving on a terminal; runs until cancelled."""
        if not self._live:
            return
        while True:
            self.render()
            await trio.sleep(PROGRESS_TICK_SECS)


class _Interrupts:
    """Ctrl-C cancels whichever scope is current: the connect phase, then the call itself
    (so the daemon is told, and the connection still closes cleanly)."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.hit = False

    def fire(self) -> None:
        self.hit = True
        self.scope.cancel()

    async def watch(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals are only delivered to the main thread
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                self.fire()


def _print_result(result: ToolResult) -> None:
    text = result.text
    if not text and result.structured is not None:
        text = json.dumps(result.structured, indent=2)
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()


def _rpc_error_exit(exc: RpcError) -> int:
    data = exc.data if isinstance(exc.data, dict) else {}
    if exc.code == ERR_INVALID_PARAMS:
        print(f"exai: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if exc.code == ERR_TIMEOUT:
        print(f"exai: {exc.message}", file=sys.stderr)
        return EXIT_TIMEOUT
    if exc.code == ERR_OVERLOADED:
        retry = data.get("retry_after_s")
        hint = f"; retry after {retry} s" if retry is not None else ""
        print(f"exai: {exc.message}{hint}", file=sys.stderr)
        return EXIT_ERROR
    print(f"exai: error {exc.code}: {exc.message}", file=sys.stderr)
    return EXIT_ERROR


async def _call(
    tool: str, arguments: dict[str, Any], timeout: float | None, url: str, token: str | None
) -> int:
    progress = ProgressLine(sys.stderr, live=sys.stderr.isatty())
    interrupts = _Interrupts()
    result: ToolResult | None = None
    timed_out = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(interrupts.watch)
        try:
            with interrupts.scope:
                async with connect(url, token=token) as client:
                    interrupts.scope = trio.CancelScope()
                    if interrupts.hit:
                        interrupts.scope.cancel()
                    nursery.start_soon(progress.tick)
                    with interrupts.scope:
                        limit = math.inf if timeout is None else timeout + CLIENT_GRACE_SECS
                        with trio.move_on_after(limit) as deadline:
                            result = await client.call_tool(
                                tool, arguments, timeout=timeout, on_progress=progress.update
                            )
                        timed_out = deadline.cancelled_caught
        except RpcError as exc:
            progress.clear()
            return _rpc_error_exit(exc)
        except ConnectionLost as exc:
            progress.clear()
            print(f"exai: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        finally:
            nursery.cancel_scope.cancel()
    progress.clear()
    if result is not None:  # an answer that won the race with Ctrl-C is still shown
        _print_result(result)
        return EXIT_ERROR if result.is_error else EXIT_OK
    if timed_out:
        print(f"exai: no answer from the daemon within {timeout} s; gave up", file=sys.stderr)
        return EXIT_TIMEOUT
    print("exai: interrupted; the call was cancelled", file=sys.stderr)
    return EXIT_INTERRUPTED


def run_call(
    tool: str,
    arguments: dict[str, Any],
    *,
    timeout: float | None,
    url: str | None,
    token: str | None,
) -> int:
    """`exai call`: one tool call; progress on stderr, result text on stdout."""
    quiet_logs()
    if timeout is not None and not timeout > 0:
        print("exai: --timeout must be a positive number of seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        return trio.run(_call, tool, arguments, timeout, resolve_url(url), resolve_token(token))
    except KeyboardInterrupt:
        print("exai: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# -- exai tools ------------------------------------------------------------------------


async def _tools(url: str, token: str | None) -> list[dict[str, Any]]:
    async with connect(url, token=token) as client:
        return await client.list_tools()


def run_tools(*, url: str | None, token: str | None) -> int:
    """`exai tools`: each tool's name and the first line of its description."""
    quiet_logs()
    try:
        tools = trio.run(_tools, resolve_url(url), resolve_token(token))
    except ConnectionLost as exc:
        print(f"exai: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RpcError as exc:
        print(f"exai: error {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    width = max((len(str(tool.get("name", ""))) for tool in tools), default=0)
    for tool in tools:
        description = str(tool.get("description") or "").strip()
        first_line = description.splitlines()[0] if description else ""
        print(f"{tool.get('name', '?')!s:<{width}}  {first_line}".rstrip())
    return EXIT_OK


# -- exai status / exai top ------------------------------------------------------------


class MonitorUnreachable(Exception):
    """The monitor did not answer /api/status with JSON."""


def fetch_json(client: httpx.Client, monitor_url: str, path: str) -> dict[str, Any]:
    """GET a monitor JSON document; raises MonitorUnreachable with a readable message."""
    import httpx

    url = f"{monitor_url}{path}"
    try:
        response = client.get(url)
        response.raise_for_status()
        data = response.json()
    except httpx.HTTPStatusError as exc:
        hint = " (set EXAI_AUTH_TOKEN or pass --token)" if exc.response.status_code == 401 else ""
        raise MonitorUnreachable(f"{url} answered HTTP {exc.response.status_code}{hint}") from None
    except httpx.HTTPError as exc:
        raise MonitorUnreachable(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    except ValueError:
        raise MonitorUnreachable(f"{url} did not answer JSON") from None
    if not isinstance(data, dict):
        raise MonitorUnreachable(f"{url} answered {type(data).__name__}, not an object")
    return data


def fetch_status(client: httpx.Client, monitor_url: str) -> dict[str, Any]:
    """GET /api/status; raises MonitorUnreachable with a readable message."""
    return fetch_json(client, monitor_url, "/api/status")


def fetch_history(client: httpx.Client, monitor_url: str) -> dict[str, Any] | None:
    """GET /api/history, or None when the monitor has none (an older daemon) or it fails."""
    try:
        history = fetch_json(client, monitor_url, "/api/history")
    except MonitorUnreachable:
        return None
    return history if isinstance(history.get("series"), list) else None


def _monitor_client(token: str | None) -> httpx.Client:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(timeout=STATUS_HTTP_TIMEOUT_SECS, headers=headers)


def _num(value: Any, fmt: str = "") -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    return "-" if value is None else str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _cost(value: object) -> str:
    return f"${value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _latency(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _mapping(data: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, dict):
        return {}
    return {str(name): item for name, item in value.items() if isinstance(item, dict)}


def _items(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


_SPARKS: Final = "▁▂▃▄▅▆▇█"
_FAILURES: Final = ("tool_error", "error", "overloaded", "cancelled_deadline", "cancelled_shutdown")
_OUTCOME_STYLE: Final = {"ok": "green", "tool_error": "yellow", "cancelled_deadline": "red", "error": "red", "overloaded": "magenta"}
_CIRCUIT_STYLE: Final = {"closed": "green", "open": "red", "misconfigured": "red"}


def _bar(fraction: float, width: int = 16) -> Text:
    """A bar of `width` cells, green, then yellow past 60%, red past 90%."""
    from rich.text import Text

    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.6 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "grey35"))


def _sparkline(values: list[float]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return _SPARKS[0] * len(values)
    return "".join(_SPARKS[min(len(_SPARKS) - 1, int(v / top * (len(_SPARKS) - 1) + 0.5))] for v in values)


def _rates(history: dict[str, Any]) -> RenderableType:
    from rich.text import Text

    raw = history.get("last_minute")
    minute: dict[str, Any] = raw if isinstance(raw, dict) else {}
    finished = {str(k): int(_number(v)) for k, v in (minute.get("finished") or {}).items()}
    seconds = max(1.0, _number(minute.get("seconds")))
    line = Text.assemble(
        ("last minute ", "bold"),
        f"{sum(finished.values()) / seconds:.1f} calls/s  ",
        *[(f"{outcome.replace('_', ' ')} {n}  ", _OUTCOME_STYLE.get(outcome, "")) for outcome, n in sorted(finished.items())],
        ("p50 ", "bold"),
        _latency(minute.get("latency_p50_s")),
        ("  p95 ", "bold"),
        _latency(minute.get("latency_p95_s")),
    )
    rows = [row for row in history.get("series", []) if isinstance(row, dict)][-60:]
    per_second = [sum(_number(v) for v in (row.get("finished") or {}).values()) for row in rows]
    failed = [sum(_number((row.get("finished") or {}).get(o)) for o in _FAILURES) for row in rows]
    spark = Text.assemble(
        ("calls/s  ", "bold"), (_sparkline(per_second), "cyan"),
        ("  failed  ", "bold"), (_sparkline(failed), "red"), ("  (last 60 s)", "grey50"),
    )
    return Text("\n").join([line, spark])


def _inflight(data: dict[str, Any], max_rows: int) -> RenderableType:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    requests = sorted(_items(data, "requests"), key=lambda r: _number(r.get("deadline_s")))
    queued = sum(1 for r in requests if r.get("state") == "queued")
    title = f"in flight ({len(requests)}: {len(requests) - queued} running, {queued} queued), most urgent first"
    table = Table(title=title, title_justify="left", expand=False, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("conn", "id", "tool", "model", "step", "age"):
        table.add_column(column, justify="right" if column == "age" else "left", no_wrap=True)
    table.add_column("deadline left", no_wrap=True, min_width=17)
    table.add_column("progress", no_wrap=True, overflow="ellipsis", ratio=1, min_width=8)
    for item in requests[:max_rows]:
        left, timeout = _number(item.get("deadline_s")), _number(item.get("timeout_s"))
        timeout = timeout or _number(item.get("age_s")) + left
        message = str(item.get("message") or ("waiting for a slot" if item.get("state") == "queued" else ""))
        step = item.get("step")
        table.add_row(
            str(item.get("connection", "-")),
            str(item.get("id", "-")),
            str(item.get("tool", "-")),
            str(item.get("model") or "-"),
            "-" if step is None else str(step),
            _num(item.get("age_s"), ".1f") + "s",
            Text.assemble(_bar(1 - left / timeout if timeout else 1.0, 10), " ", _num(item.get("deadline_s"), ".1f") + "s"),
            Text(message),
        )
    if len(requests) > max_rows:
        table.caption = f"and {len(requests) - max_rows} more (deadlines further away)"
        table.caption_justify = "left"
    return table


def _failures(history: dict[str, Any], max_rows: int) -> RenderableType:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    failures = _items(history, "failures")
    table = Table(
        title=f"recent failures ({len(failures)}), newest first", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for column in ("time", "conn / id", "tool", "outcome", "error id"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", ratio=1, min_width=20)
    for item in failures[:max_rows]:
        outcome = str(item.get("outcome", "-"))
        error_id = item.get("error_id") or (f"code {item['code']}" if item.get("code") is not None else "-")
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(_number(item.get("time")))),
            f"{item.get('connection', '-')} / {item.get('id', '-')}",
            str(item.get("tool", "-")),
            Text(outcome.replace("_", " "), style=_OUTCOME_STYLE.get(outcome, "")),
            str(error_id),
            Text(str(item.get("message", ""))),
        )
    return table


def render_status(
    data: dict[str, Any], history: dict[str, Any] | None = None, *, max_rows: int = 50
) -> RenderableType:
    """A readable snapshot of /api/status (and /api/history when given); missing fields show as '-'."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    limiters = _mapping(data, "limiters")
    summary = Text.assemble(
        ("connections ", "bold"),
        _num(data.get("connections")),
        ("   in flight ", "bold"),
        _num(data.get("inflight")),
        f"/{limiters['global'].get('total')}" if "global" in limiters else "",
        ("   queued ", "bold"),
        _num(data.get("queued")),
        ("   threads ", "bold"),
        _num(data.get("threads")) if data.get("threads") is not None else "unknown",
        ("   uptime ", "bold"),
        _duration(data.get("uptime_s")),
        ("   DEMO: simulated model", "bold yellow") if data.get("demo") else "",
    )

    limiter_table = Table(title="limiters", title_justify="left", expand=False)
    for column in ("limiter", "used", "borrowed", "total", "waiting"):
        limiter_table.add_column(column, justify="left" if column in ("limiter", "used") else "right")
    for name, item in sorted(limiters.items(), key=lambda kv: (kv[0].startswith("session:"), kv[0])):
        total = _number(item.get("total"))
        limiter_table.add_row(
            name,
            _bar(_number(item.get("borrowed")) / total if total else 0.0, 12),
            _num(item.get("borrowed")),
            _num(item.get("total")),
            _num(item.get("waiting")),
        )

    providers = Table(title="providers", title_justify="left", expand=False)
    for column in ("provider", "circuit", "in flight", "calls", "errors", "p50", "p95", "rpm", "cost"):
        providers.add_column(column, justify="left" if column in ("provider", "circuit") else "right")
    for name, item in sorted(_mapping(data, "providers").items()):
        circuit = str(item.get("circuit", "-"))
        if circuit == "open" and item.get("probe_in_s") is not None:
            circuit = f"open (probe in {_number(item.get('probe_in_s')):.0f}s)"
        providers.add_row(
            name,
            Text(circuit, style=_CIRCUIT_STYLE.get(str(item.get("circuit")), "yellow")),
            _num(item.get("inflight")),
            _num(item.get("calls_total")),
            _num(item.get("errors_total")),
            _latency(item.get("latency_p50_s")),
            _latency(item.get("latency_p95_s")),
            _num(item.get("rpm")) if item.get("rpm") else "-",
            _cost(item.get("cost_usd")),
        )

    parts: list[RenderableType] = [summary]
    if history is not None:
        parts.append(_rates(history))
    parts.append(_inflight(data, max_rows))
    if history is not None:
        parts.append(_failures(history, 5))
    parts += [providers, limiter_table]
    return Group(*parts)


def run_status(*, monitor_url: str | None, as_json: bool, token: str | None = None) -> int:
    """`exai status`: one snapshot of the daemon's monitor; exit 4 if unreachable."""
    from rich.console import Console

    quiet_logs()
    base = resolve_monitor_url(monitor_url)
    try:
        with _monitor_client(resolve_token(token)) as client:
            data = fetch_status(client, base)
            history = None if as_json else fetch_history(client, base)
    except MonitorUnreachable as exc:
        print(f"exai: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        Console().print(render_status(data, history))
    return EXIT_OK


@contextmanager
def _ctrl_c_ends() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        pass


def run_top(*, monitor_url: str | None, interval: float, token: str | None = None) -> int:
    """`exai top`: the status snapshot with rates, in-flight calls and recent failures,
    refreshed every `interval` seconds until Ctrl-C (exit 0); exit 4 if the monitor is
    unreachable at start."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    quiet_logs()
    base = resolve_monitor_url(monitor_url)
    interval = max(interval, 0.1)
    console = Console()
    rows = max(5, console.size.height - 30)  # leave room for the rest of the view
    with _monitor_client(resolve_token(token)) as client:
        try:
            data = fetch_status(client, base)
        except MonitorUnreachable as exc:
            print(f"exai: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        history = fetch_history(client, base)
        with _ctrl_c_ends(), Live(render_status(data, history, max_rows=rows), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    data = fetch_status(client, base)
                    history = fetch_history(client, base)
                    view: RenderableType = render_status(data, history, max_rows=rows)
                except MonitorUnreachable as exc:
                    view = Group(Text(f"{exc} (retrying)", style="bold red"), render_status(data, history, max_rows=rows))
                live.update(view, refresh=True)
    return EXIT_OK
