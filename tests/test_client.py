"""The client library and the `exai call/tools/status/top` commands, against a small fake
MCP daemon (defined here) over real loopback WebSockets.

Rules: 127.0.0.1 and port 0 only; real time with short delays and generous bounds (the
sockets are real, so `autojump_clock` would jump while bytes are in flight). The exit-code
tests run the real `exai` command in a subprocess.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
from rich.console import Console
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

from exai import clientcli
from exai.client import CannotConnect, ConnectionLost, RpcError, ToolResult, connect

BOUND = 5.0  # generous bound on anything that should take milliseconds
EXAI = [sys.executable, "-c", "from exai.cli import main; main()"]
# With --url and --token given, a client command has no need to load the configuration;
# the subprocess tests pass both to start faster. test_bridge covers the configured path.
NO_CONFIG = ["--token", "unused"]


# -- the fake daemon ---------------------------------------------------------------------


def _reply(request_id: Any, result: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def _error(request_id: Any, code: int, message: str, data: Any = None) -> str:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error})


TOOLS = [
    {"name": "echo", "description": "Echo the text.\nSecond line.", "inputSchema": {}},
    {"name": "hang", "description": "Never answers.", "inputSchema": {}},
]


class FakeDaemon:
    """A minimal MCP daemon. Tools: `echo` {text, delay?, steps?} (progress when asked),
    `fail` (isError), `pretty` (an indented frame), `overload` (-32000), `timeout` (-32001), `hang` (never answers).
    Records calls, cancellations and how each connection was closed."""

    def __init__(self, *, token: str | None = None, reject_status: int | None = None) -> None:
        self.token = token
        self.reject_status = reject_status
        self.url = ""
        self.calls: list[dict[str, Any]] = []
        self.cancelled: list[dict[str, Any]] = []
        self.methods: list[str] = []
        self.close_codes: list[int | None] = []
        self.subprotocols: list[str | None] = []
        self.connections: list[WebSocketConnection] = []
        self._scopes: dict[Any, trio.CancelScope] = {}
        self._changed = trio.Event()

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    self._handler,
                    "127.0.0.1",
                    0,
                    None,
                    max_message_size=32 * 1024 * 1024,
                )
            )
            self.url = f"ws://127.0.0.1:{server.port}/"
            task_status.started(self)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(BOUND):
            while not predicate():
                await self._changed.wait()

    async def close_all(self, code: int = 1011, reason: str = "daemon going away") -> None:
        for ws in self.connections:
            await ws.aclose(code, reason)

    def _bump(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _handler(self, request: WebSocketRequest) -> None:
        headers = {key.lower(): value for key, value in request.headers}
        if self.reject_status is not None:
            await request.reject(self.reject_status, body=b"too many connections")
            return
        if self.token and headers.get(b"authorization") != f"Bearer {self.token}".encode():
            await request.reject(401, body=b"missing or wrong bearer token")
            return
        subprotocol = "mcp" if "mcp" in request.proposed_subprotocols else None
        ws = await request.accept(subprotocol=subprotocol)
        self.connections.append(ws)
        self.subprotocols.append(ws.subprotocol)
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        text = await ws.get_message()
                    except ConnectionClosed as exc:
                        self.close_codes.append(exc.reason.code if exc.reason else None)
                        break
                    try:
                        message = json.loads(text)
                    except ValueError:
                        await ws.send_message(_error(None, -32700, "Parse error"))
                        continue
                    nursery.start_soon(self._handle, ws, message)
                nursery.cancel_scope.cancel()
        finally:
            self._bump()

    async def _handle(self, ws: WebSocketConnection, message: dict[str, Any]) -> None:
        method, request_id = str(message.get("method", "")), message.get("id")
        params = message.get("params") or {}
        self.methods.append(method)
        self._bump()
        try:
            if method == "notifications/cancelled":
                self.cancelled.append(params)
                scope = self._scopes.get(params.get("requestId"))
                if scope is not None:
                    scope.cancel()
                return
            if request_id is None:
                return
            answer = await self._answer(ws, request_id, method, params)
            if answer is not None:
                await ws.send_message(answer)
        except ConnectionClosed:
            pass

    async def _answer(
        self, ws: WebSocketConnection, request_id: Any, method: str, params: dict[str, Any]
    ) -> str | None:
        if method == "initialize":
            return _reply(
                request_id,
                {
                    "protocolVersion": params.get("protocolVersion"),
                    "serverInfo": {"name": "fake-exai", "version": "0"},
                    "capabilities": {"tools": {}},
                },
            )
        if method == "ping":
            return _reply(request_id, {})
        if method == "tools/list":
            return _reply(request_id, {"tools": TOOLS})
        if method != "tools/call":
            return _error(request_id, -32601, f"Method not found: {method}")
        name, arguments = params.get("name"), params.get("arguments") or {}
        meta = params.get("_meta") or {}
        self.calls.append({"id": request_id, "name": name, "arguments": arguments, "meta": meta})
        self._bump()
        with trio.CancelScope() as scope:
            self._scopes[request_id] = scope
            if name == "echo":
                token = meta.get("progressToken")
                steps = int(arguments.get("steps", 0))
                for step in range(1, steps + 1):
                    if token is not None:
                        note = {"progressToken": token, "progress": step, "total": steps}
                        note["message"] = f"step {step}"
                        await ws.send_message(
                            json.dumps(
                                {
                                    "jsonrpc": "2.0",
                                    "method": "notifications/progress",
                                    "params": note,
                                }
                            )
                        )
                    await trio.sleep(0.001)
                await trio.sleep(float(arguments.get("delay", 0)))
                text = str(arguments.get("text", ""))
                return _reply(
                    request_id,
                    {
                        "content": [{"type": "text", "text": text}],
                        "isError": False,
                        "structuredContent": {"echo": text, "timeout": meta.get("exai/timeout")},
                    },
                )
            if name == "pretty":  # a frame with newlines inside, as some servers send
                return json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": request_id,
                        "result": {"content": [], "isError": False},
                    },
                    indent=2,
                )
            if name == "fail":
                return _reply(
                    request_id,
                    {
                        "content": [{"type": "text", "text": "tool failed: bad input"}],
                        "isError": True,
                    },
                )
            if name == "overload":
                return _error(request_id, -32000, "Server overloaded", {"retry_after_s": 2})
            if name == "timeout":
                return _error(request_id, -32001, "Request timed out after 1 s", {"timeout_s": 1})
            if name == "hang":
                await trio.sleep_forever()
            return _error(request_id, -32602, f"Unknown tool: {name}")
        return None  # cancelled: no response at all


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeDaemon:
    daemon: FakeDaemon = await nursery.start(FakeDaemon().serve)
    return daemon


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/"


# -- the client library ------------------------------------------------------------------


async def test_connect_falls_back_to_initialize_with_an_older_daemon_and_closes_with_1000(fake: FakeDaemon) -> None:
    """The fake is a legacy-only daemon: the modern probe (server/discover) is refused, so the
    client opens the legacy way on the same connection."""
    async with connect(fake.url) as client:
        assert client.protocol_version == "2025-11-25"
        assert client.server_info == {"name": "fake-exai", "version": "0"}
        assert client.capabilities == {"tools": {}}
        await client.ping()
    await fake.wait_until(lambda: fake.close_codes == [1000])
    assert fake.methods == ["server/discover", "initialize", "notifications/initialized", "ping"]
    assert fake.subprotocols == ["mcp"]


async def test_connect_without_initialize_sends_nothing(fake: FakeDaemon) -> None:
    async with connect(fake.url, initialize=False, protocol_version="2025-06-18") as client:
        assert client.protocol_version is None
        await client.ping()
    assert fake.methods == ["ping"]


async def test_call_tool_result_fields(fake: FakeDaemon) -> None:
    async with connect(fake.url) as client:
        result = await client.call_tool("echo", {"text": "hello"}, timeout=7.5)
        assert not result.is_error
        assert result.text == "hello"
        assert result.structured == {"echo": "hello", "timeout": 7.5}
        assert fake.calls[0]["meta"] == {"exai/timeout": 7.5}

        failed = await client.call_tool("fail")
        assert failed.is_error
        assert failed.text == "tool failed: bad input"
        assert failed.structured is None


def test_tool_result_text_joins_text_parts_only() -> None:
    result = ToolResult.from_result(
        {
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image", "data": "..."},
                {"type": "text", "text": "b"},
            ],
            "_meta": {"k": 1},
        }
    )
    assert result.text == "a\nb"
    assert result.meta == {"k": 1}
    assert not result.is_error
    with pytest.raises(RpcError):
        ToolResult.from_result(["not", "a", "dict"])


async def test_list_tools(fake: FakeDaemon) -> None:
    async with connect(fake.url) as client:
        assert [tool["name"] for tool in await client.list_tools()] == ["echo", "hang"]


async def test_concurrent_calls_answered_out_of_order(fake: FakeDaemon) -> None:
    count = 60
    results: dict[int, str] = {}
    async with connect(fake.url) as client:

        async def one(index: int) -> None:
            # later calls answer first
            delay = (count - index) * 0.002
            result = await client.call_tool("echo", {"text": f"call {index}", "delay": delay})
            results[index] = result.text

        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                for index in range(count):
                    nursery.start_soon(one, index)
    assert results == {index: f"call {index}" for index in range(count)}
    assert len({call["id"] for call in fake.calls}) == count


async def test_progress_callback_in_order_and_before_result(fake: FakeDaemon) -> None:
    seen: list[Any] = []

    async def on_progress(params: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        seen.append((params["progress"], params["total"], params["message"]))

    async with connect(fake.url) as client:
        result = await client.call_tool(
            "echo", {"text": "done", "steps": 5}, on_progress=on_progress
        )
        assert result.text == "done"
        assert seen == [(step, 5, f"step {step}") for step in range(1, 6)]
        token = fake.calls[0]["meta"]["progressToken"]

        plain: list[int] = []
        await client.call_tool(
            "echo", {"steps": 3}, on_progress=lambda params: plain.append(params["progress"])
        )
        assert plain == [1, 2, 3]
        assert fake.calls[1]["meta"]["progressToken"] != token

        # without a callback no token is asked for, and nothing is left unclaimed
        await client.call_tool("echo", {"steps": 2})
        assert "progressToken" not in fake.calls[2]["meta"]


async def test_rpc_errors_are_raised_with_code_and_data(fake: FakeDaemon) -> None:
    async with connect(fake.url) as client:
        with pytest.raises(RpcError) as overloaded:
            await client.call_tool("overload")
        assert overloaded.value.code == -32000
        assert overloaded.value.message == "Server overloaded"
        assert overloaded.value.data == {"retry_after_s": 2}

        with pytest.raises(RpcError) as unknown:
            await client.call_tool("nope")
        assert unknown.value.code == -32602
        assert "nope" in str(unknown.value)

        with pytest.raises(RpcError) as method:
            await client.request("no/such/method")
        assert method.value.code == -32601
        await client.ping()  # the connection goes on


async def test_cancelling_a_call_tells_the_daemon(fake: FakeDaemon) -> None:
    async with connect(fake.url) as client:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_when_started() -> None:
                    await fake.wait_until(lambda: len(fake.calls) == 1)
                    scope.cancel()

                nursery.start_soon(cancel_when_started)
                await client.call_tool("hang")
        assert scope.cancelled_caught
        await fake.wait_until(lambda: len(fake.cancelled) == 1)
        assert fake.cancelled[0]["requestId"] == fake.calls[0]["id"]
        assert fake.cancelled[0]["reason"] == "client cancelled"
        # the connection stays usable
        assert (await client.call_tool("echo", {"text": "after"})).text == "after"


async def test_an_already_cancelled_call_sends_nothing(fake: FakeDaemon) -> None:
    async with connect(fake.url) as client:
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.call_tool("hang")
        assert scope.cancelled_caught
        await client.ping()
    assert fake.calls == [] and fake.cancelled == []


async def test_cancel_during_a_large_send_keeps_the_frame_whole(fake: FakeDaemon) -> None:
    blob = "x" * (8 * 1024 * 1024)
    async with connect(fake.url) as client:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_soon() -> None:
                    await trio.sleep(0.001)  # most likely while the 8 MiB frame is on its way
                    scope.cancel()

                nursery.start_soon(cancel_soon)
                await client.call_tool("hang", {"blob": blob})
        assert scope.cancelled_caught
        # the frame was not cut short: the connection still works ...
        assert (await client.call_tool("echo", {"text": "intact"})).text == "intact"
    # ... and a call the daemon saw was also cancelled on it
    hang_calls = [call for call in fake.calls if call["name"] == "hang"]
    assert [c["requestId"] for c in fake.cancelled] == [c["id"] for c in hang_calls]
    assert all(call["arguments"]["blob"] == blob for call in hang_calls)


async def test_failing_progress_callback_cancels_the_call(fake: FakeDaemon) -> None:
    def explode(params: dict[str, Any]) -> None:
        raise RuntimeError("callback failed")

    async with connect(fake.url) as client:
        with pytest.raises(RuntimeError, match="callback failed"):
            await client.call_tool("echo", {"steps": 3, "delay": 10}, on_progress=explode)
        await fake.wait_until(lambda: len(fake.cancelled) == 1)
        assert fake.cancelled[0]["requestId"] == fake.calls[0]["id"]
        assert "RuntimeError" in fake.cancelled[0]["reason"]


async def test_daemon_close_fails_every_waiting_caller(fake: FakeDaemon) -> None:
    errors: list[str] = []
    async with connect(fake.url) as client:

        async def waiting() -> None:
            with pytest.raises(ConnectionLost) as lost:
                await client.call_tool("hang")
            errors.append(str(lost.value))

        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(waiting)
                await fake.wait_until(lambda: len(fake.calls) == 3)
                await fake.close_all(1011, "daemon going away")
        assert len(errors) == 3
        assert all("1011" in error and "daemon going away" in error for error in errors)
        assert "1011" in (client.closed_reason or "")
        with pytest.raises(ConnectionLost):
            await client.call_tool("echo")
        with pytest.raises(ConnectionLost):
            await client.receive_raw()
    assert not fake.cancelled  # nobody to tell


async def test_cannot_connect_when_rejected_with_401(nursery: trio.Nursery) -> None:
    daemon: FakeDaemon = await nursery.start(FakeDaemon(token="s3cret").serve)
    with pytest.raises(CannotConnect) as rejected:
        async with connect(daemon.url):
            pass
    assert "401" in str(rejected.value)
    assert "missing or wrong bearer token" in str(rejected.value)
    assert rejected.value.__cause__ is None and rejected.value.__suppress_context__
    with pytest.raises(CannotConnect, match="401"):
        async with connect(daemon.url, token="wrong"):
            pass
    async with connect(daemon.url, token="s3cret") as client:
        await client.ping()


async def test_cannot_connect_when_rejected_with_503(nursery: trio.Nursery) -> None:
    daemon: FakeDaemon = await nursery.start(FakeDaemon(reject_status=503).serve)
    with pytest.raises(CannotConnect, match="HTTP 503: too many connections"):
        async with connect(daemon.url):
            pass


async def test_cannot_connect_to_a_closed_port() -> None:
    url = closed_port_url()
    with pytest.raises(CannotConnect) as refused:
        async with connect(url):
            pass
    assert url in str(refused.value)
    assert isinstance(refused.value, ConnectionLost)


async def test_cannot_connect_to_an_invalid_url() -> None:
    with pytest.raises(CannotConnect, match="invalid daemon URL"):
        async with connect("ftp://127.0.0.1:1/"):
            pass


async def test_cannot_connect_over_http_to_a_closed_port() -> None:
    with pytest.raises(CannotConnect, match=r"cannot connect to http://127\.0\.0\.1:1/mcp"):
        async with connect("http://127.0.0.1:1/mcp"):
            pass


async def test_send_raw_and_receive_raw(fake: FakeDaemon) -> None:
    async with connect(fake.url) as client:
        await client.send_raw("{not json")
        assert await client.receive_raw() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32700, "message": "Parse error"},
        }
        await client.send_raw(json.dumps({"jsonrpc": "2.0", "id": "raw-1", "method": "ping"}))
        # a real call in between is still dispatched to its caller, not to the raw queue
        assert (await client.call_tool("echo", {"text": "x"})).text == "x"
        assert await client.receive_raw() == {"jsonrpc": "2.0", "id": "raw-1", "result": {}}


async def test_errors_in_the_body_propagate_unwrapped(fake: FakeDaemon) -> None:
    with pytest.raises(KeyError):
        async with connect(fake.url):
            raise KeyError("mine")
    await fake.wait_until(lambda: fake.close_codes == [1000])


# -- exai call / tools, the real command in a subprocess ---------------------------------


async def run_exai(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(20):
        return await trio.run_process(
            [*EXAI, *args], capture_stdout=True, capture_stderr=True, check=False
        )


@pytest.mark.slow
async def test_exai_call_exit_codes(fake: FakeDaemon) -> None:
    url = fake.url
    runs = {}

    async def run(label: str, *args: str) -> None:
        runs[label] = await run_exai(*args)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            run, "ok", "call", "echo", "text=hello world", "steps=2", "--url", url, *NO_CONFIG
        )
        nursery.start_soon(run, "tool_error", "call", "fail", "--url", url, *NO_CONFIG)
        nursery.start_soon(run, "unknown", "call", "nope", "--url", url, *NO_CONFIG)
        nursery.start_soon(run, "overload", "call", "overload", "--url", url, *NO_CONFIG)
        nursery.start_soon(run, "timeout", "call", "timeout", "--url", url, *NO_CONFIG)
        nursery.start_soon(run, "refused", "call", "echo", "--url", closed_port_url(), *NO_CONFIG)

    ok = runs["ok"]
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"hello world\n"
    assert b"step 1" in ok.stderr and b"step 2" in ok.stderr  # not a TTY: one line each
    assert runs["tool_error"].returncode == 1
    assert runs["tool_error"].stdout == b"tool failed: bad input\n"
    assert runs["unknown"].returncode == 2
    assert b"Unknown tool: nope" in runs["unknown"].stderr
    assert runs["overload"].returncode == 1
    assert b"Server overloaded; retry after 2 s" in runs["overload"].stderr
    assert runs["timeout"].returncode == 3
    assert b"timed out" in runs["timeout"].stderr
    assert runs["refused"].returncode == 4
    assert b"cannot connect" in runs["refused"].stderr
    assert b"Traceback" not in b"".join(run.stderr for run in runs.values())


@pytest.mark.slow
async def test_exai_call_exit_4_when_the_daemon_drops(fake: FakeDaemon) -> None:
    async with trio.open_nursery() as nursery:

        async def drop_when_called() -> None:
            await fake.wait_until(lambda: len(fake.calls) == 1)
            await fake.close_all(1001, "shutting down")

        nursery.start_soon(drop_when_called)
        lost = await run_exai("call", "hang", "--url", fake.url, *NO_CONFIG)
    assert lost.returncode == 4
    assert b"1001" in lost.stderr and b"shutting down" in lost.stderr


@pytest.mark.slow
async def test_exai_call_ctrl_c_cancels_on_the_daemon(fake: FakeDaemon) -> None:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*EXAI, "call", "hang", "--url", fake.url, *NO_CONFIG],
                check=False,
                stderr=subprocess.DEVNULL,
            )
        )
        await fake.wait_until(lambda: len(fake.calls) == 1)
        process.send_signal(signal.SIGINT)
    assert process.returncode == 130
    assert fake.cancelled == [{"requestId": fake.calls[0]["id"], "reason": "client cancelled"}]
    await fake.wait_until(lambda: fake.close_codes == [1000])


async def test_run_call_client_side_timeout(
    fake: FakeDaemon,
    in_thread: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(clientcli, "CLIENT_GRACE_SECS", 0.05)
    code = await in_thread(clientcli.run_call, "hang", {}, timeout=0.05, url=fake.url, token=None)
    assert code == 3
    assert "gave up" in capsys.readouterr().err
    assert fake.calls[0]["meta"]["exai/timeout"] == 0.05
    await fake.wait_until(lambda: len(fake.cancelled) == 1)
    assert fake.cancelled[0]["requestId"] == fake.calls[0]["id"]


async def test_run_call_rejects_a_non_positive_timeout(in_thread: Any) -> None:
    assert clientcli.run_call("echo", {}, timeout=0, url="ws://127.0.0.1:1/", token=None) == 2


@pytest.fixture
def in_thread(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Run a blocking `run_*` command in a worker thread, leaving the test's logging alone."""
    monkeypatch.setattr(clientcli, "quiet_logs", lambda *args: None)

    async def run(function: Callable[..., int], *args: Any, **kwargs: Any) -> int:
        with trio.fail_after(BOUND):
            return await trio.to_thread.run_sync(partial(function, *args, **kwargs))

    return run


async def test_run_tools(
    nursery: trio.Nursery, in_thread: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon: FakeDaemon = await nursery.start(FakeDaemon(token="tok").serve)
    assert await in_thread(clientcli.run_tools, url=daemon.url, token="tok") == 0
    assert capsys.readouterr().out.splitlines() == ["echo  Echo the text.", "hang  Never answers."]
    assert await in_thread(clientcli.run_tools, url=daemon.url, token=None) == 4
    assert "HTTP 401" in capsys.readouterr().err


def test_progress_line_on_a_terminal_and_in_a_pipe() -> None:
    terminal = io.StringIO()
    live = clientcli.ProgressLine(terminal, live=True)
    live.update({"progress": 1, "total": 3, "message": "thinking"})
    live.update({"progress": 2})
    live.clear()
    assert "\n" not in terminal.getvalue()
    frames = terminal.getvalue().split("\r\x1b[K")
    assert "thinking (1/3)" in frames[1] and "s]" in frames[1]
    assert frames[2].endswith("progress 2")
    assert frames[-1] == ""  # cleared at the end

    pipe = io.StringIO()
    lines = clientcli.ProgressLine(pipe, live=False)
    lines.update({"progress": 1, "message": "one"})
    lines.update({"progress": 2, "message": "two"})
    lines.render()
    lines.clear()
    assert [line.split("] ")[1] for line in pipe.getvalue().splitlines()] == ["one", "two"]


# -- where the daemon is -----------------------------------------------------------------


def test_resolve_url_and_token_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_HOST", "0.0.0.0")
    monkeypatch.setenv("EXAI_PORT", "9100")
    monkeypatch.setenv("EXAI_AUTH_TOKEN", "from-env")
    monkeypatch.setenv("EXAI_MONITOR_PORT", "9101")
    assert clientcli.resolve_url(None) == "ws://127.0.0.1:9100/"
    assert clientcli.resolve_token(None) == "from-env"
    assert clientcli.resolve_monitor_url(None) == "http://127.0.0.1:9101"
    assert clientcli.resolve_url("ws://h:1/") == "ws://h:1/"
    assert clientcli.resolve_token("flag") == "flag"
    assert clientcli.resolve_monitor_url("http://m:2/") == "http://m:2"


def test_resolve_from_dotenv_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("EXAI_HOST", "EXAI_PORT", "EXAI_AUTH_TOKEN", "EXAI_MONITOR_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert clientcli.resolve_url(None) == "ws://127.0.0.1:8079/"
    assert clientcli.resolve_token(None) is None
    (tmp_path / ".env").write_text('EXAI_PORT=9200\nEXAI_AUTH_TOKEN="dot-env"\n# comment\n')
    assert clientcli.resolve_url(None) == "ws://127.0.0.1:9200/"
    assert clientcli.resolve_token(None) == "dot-env"


def test_invalid_configuration_falls_back_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXAI_PORT", "not-a-port")
    monkeypatch.setenv("EXAI_HOST", "::1")
    monkeypatch.setenv("EXAI_GLOBAL_MAX_INFLIGHT", "-5")
    assert clientcli.resolve_url(None) == "ws://[::1]:8079/"


# -- exai status / exai top --------------------------------------------------------------

STATUS = {
    "connections": 2,
    "inflight": 1,
    "queued": 0,
    "uptime_s": 3725.2,
    "limiters": {
        "global": {"borrowed": 1, "total": 24, "waiting": 0},
        "kimi": {"borrowed": 1, "total": 6, "waiting": 0},
        "session:c1": {"borrowed": 1, "total": 8, "waiting": 3},
    },
    "providers": {
        "kimi": {"circuit": "closed", "inflight": 1, "calls_total": 17, "errors_total": 2, "cost_usd": 0.012345},
        "glm": {"circuit": "open", "inflight": 0, "calls_total": 5, "errors_total": 5},
    },
    "requests": [{"id": 7, "tool": "thinkdeep", "age_s": 12.34, "deadline_s": 167.66}],
}


class FakeMonitor:
    """Answers every HTTP request with one fixed response; counts requests."""

    def __init__(self, status: int = 200, body: bytes = json.dumps(STATUS).encode()) -> None:
        self.status, self.body, self.requests = status, body, 0
        self.url = ""
        self.served_three = trio.Event()

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            self.requests += 1
            if self.requests >= 3:
                self.served_three.set()
            head = (
                f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
            )
            await stream.send_all(head.encode() + self.body)


async def test_run_status(
    nursery: trio.Nursery, in_thread: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    monitor: FakeMonitor = await nursery.start(FakeMonitor().serve)
    assert await in_thread(clientcli.run_status, monitor_url=monitor.url, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == STATUS
    assert await in_thread(clientcli.run_status, monitor_url=monitor.url, as_json=False) == 0
    text = capsys.readouterr().out
    for expected in ("connections 2", "1h02m05s", "session:c1", "thinkdeep", "12.3s", "167.7s", "$0.0123"):
        assert expected in text, expected
    assert "open" in text and "closed" in text and "17" in text


def test_render_status_tolerates_missing_fields() -> None:
    console = Console(file=io.StringIO(), width=120)
    console.print(clientcli.render_status({"limiters": "?", "requests": [None, {"id": 1}]}))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "connections -" in output


@pytest.mark.parametrize("status, body", [(500, b"{}"), (200, b"not json"), (200, b"[1]")])
async def test_status_unusable_answers_exit_4(
    nursery: trio.Nursery,
    in_thread: Any,
    status: int,
    body: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monitor: FakeMonitor = await nursery.start(FakeMonitor(status, body).serve)
    assert await in_thread(clientcli.run_status, monitor_url=monitor.url, as_json=True) == 4
    assert monitor.url in capsys.readouterr().err


async def test_status_and_top_unreachable_exit_4(
    in_thread: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = closed_port_url().replace("ws://", "http://")
    assert await in_thread(clientcli.run_status, monitor_url=url, as_json=False) == 4
    assert "cannot reach" in capsys.readouterr().err
    assert await in_thread(clientcli.run_top, monitor_url=url, interval=0.1) == 4
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.slow
async def test_exai_top_refreshes_until_ctrl_c(nursery: trio.Nursery) -> None:
    monitor: FakeMonitor = await nursery.start(FakeMonitor().serve)
    async with trio.open_nursery() as inner:
        process: trio.Process = await inner.start(
            partial(
                trio.run_process,
                [*EXAI, "top", "--monitor-url", monitor.url, "--interval", "0.05"],
                check=False,
                stdout=subprocess.DEVNULL,
            )
        )
        with trio.fail_after(BOUND):
            await monitor.served_three.wait()
        process.send_signal(signal.SIGINT)
    assert process.returncode == 0


@pytest.mark.slow
async def test_exai_call_over_streamable_http_same_contract(daemon: Any, simulator: Any, log_lines: list[str]) -> None:
    """`--url http://.../mcp`: the same command through the same library, on the real daemon:
    result on stdout, progress on stderr, exit 0; Ctrl-C cancels the call on the daemon (130)."""
    prompt = 'hi\n#sim {"chunks": 3, "chunk_delay_s": 0.01}'
    ok = await run_exai("call", "chat", f"prompt={prompt}", "--url", daemon.http_url, *NO_CONFIG)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() and b"tokens" in ok.stderr
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*EXAI, "call", "chat", 'prompt=x\n#sim {"hang": true}', "--url", daemon.http_url, *NO_CONFIG],
                check=False,
                stderr=subprocess.DEVNULL,
            )
        )
        with trio.fail_after(BOUND):
            await simulator.wait_until(lambda s: s.inflight == 1)
        process.send_signal(signal.SIGINT)
    assert process.returncode == 130
    with trio.fail_after(BOUND):
        await simulator.wait_until(lambda s: s.aborted == 1)  # cancelled on the daemon, not left running
    # by closing the call's stream: the CLI speaks MCP 2026-07-28, where that is the cancel
    assert any("stream closed by the client; call cancelled" in line for line in log_lines), log_lines[-10:]


# -- Streamable HTTP: a stream the network drops is resumed ---------------------------------


class CuttingProxy:
    """A loopback TCP relay to the daemon that cuts the first connection whose answer carries
    a progress notification, as a flaky network would; it notes what the client sent."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.cuts = 0
        self.sent = b""

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.relay, listeners)

    async def relay(self, client: trio.SocketStream) -> None:
        try:
            await self._relay(client)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # either side went away: so does the relay

    async def _relay(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", self.upstream_port) as daemon:

            async def up() -> None:
                while data := await client.receive_some():
                    self.sent += data
                    await daemon.send_all(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(up)
                while data := await daemon.receive_some():
                    if self.cuts == 0 and b"notifications/progress" in data:
                        self.cuts += 1
                        break  # leaving closes both sockets mid-answer
                    await client.send_all(data)
                nursery.cancel_scope.cancel()


async def test_an_sse_stream_the_network_drops_is_resumed_with_last_event_id(
    daemon: Any, simulator: Any, nursery: trio.Nursery
) -> None:
    proxy = CuttingProxy(int(daemon.http_url.rsplit(":", 1)[1].split("/")[0]))
    port = await nursery.start(proxy.serve)
    progress: list[float] = []
    async with connect(f"http://127.0.0.1:{port}/mcp", era="legacy") as client:  # resumable: a session
        prompt = 'slow\n#sim {"chunks": 5, "chunk_delay_s": 0.1}'
        with trio.fail_after(BOUND):
            result = await client.call_tool("chat", {"prompt": prompt}, on_progress=lambda p: progress.append(p["progress"]))
        assert not result.is_error, result.text
        await client.ping()  # the client goes on after the cut
    assert proxy.cuts == 1
    assert b"last-event-id: " in proxy.sent.lower() and b"GET /mcp" in proxy.sent
    assert progress == sorted(set(progress)) and progress
    assert simulator.stats.aborted == 0  # the call ran on through the cut, as the contract says
