"""`exai tasks`, `exai task ID` and `exai call --task`.

`tasks` and `task` read the store at EXAI_STORE_URL directly (read-only, like `exai threads`),
whether the daemon runs or not; `call --task` asks the daemon to run a call as a task (legacy
2025-11-25 tasks over WebSocket) and polls it to its end, showing its status message.
Each `run_*` function returns the exit status: 0 ok, 1 tool error, unknown task or unreadable
store, 2 usage, 3 timed out, 4 cannot connect.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Final

import trio

from exai.client import ConnectionLost, ExaiClient, RpcError, ToolResult, connect
from exai.clientcli import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ProgressLine,
    _Interrupts,
    _print_result,
    _rpc_error_exit,
    quiet_logs,
    resolve_token,
    resolve_url,
)
from exai.store import StoreUnavailable, TaskNotFound, TaskRecord, open_reader
from exai.threadscli import _console, _relative, _settings, _unreadable, _when

DEFAULT_POLL_S: Final = 1.0


# -- exai tasks / exai task ID ------------------------------------------------------------


def run_tasks(*, as_json: bool) -> int:
    """List the live tasks, the newest first."""
    settings = _settings()
    if settings is None:
        return EXIT_USAGE
    reader = open_reader(settings)
    try:
        tasks = reader.tasks()
    except StoreUnavailable as exc:
        return _unreadable(exc)
    if as_json:
        print(json.dumps([task.summary() for task in tasks], indent=2))
        return EXIT_OK
    if not tasks:
        print(f"no tasks in {reader.where}")
        return EXIT_OK
    from rich.table import Table

    now = time.time()
    table = Table(title=f"tasks in {reader.where}", title_justify="left", expand=False)
    for column in ("id", "tool", "status", "created", "expires", "message"):
        table.add_column(column, no_wrap=column in ("id", "status"))
    for task in tasks:
        table.add_row(
            task.id, task.tool, task.status.value, _relative(task.created, now), _relative(task.expires, now), task.message
        )
    _console().print(table)
    return EXIT_OK


def run_task(task_id: str, *, as_json: bool) -> int:
    """Show one live task and, once it has finished, its result or error."""
    settings = _settings()
    if settings is None:
        return EXIT_USAGE
    try:
        task = open_reader(settings).task(task_id)
    except TaskNotFound as exc:
        print(f"exai: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except StoreUnavailable as exc:
        return _unreadable(exc)
    if as_json:
        print(json.dumps(task.summary() | {"outcome": task.outcome}, indent=2))
    else:
        _show(task)
    return EXIT_OK


def _show(task: TaskRecord) -> None:
    from rich.text import Text

    now = time.time()
    console = _console()
    head = Text.assemble(
        ("task ", "bold"), task.id, ("   tool ", "bold"), task.tool, ("   status ", "bold"), task.status.value,
        ("\ncreated ", "bold"), _when(task.created, now),
        ("   updated ", "bold"), _when(task.updated, now),
        ("   expires ", "bold"), _when(task.expires, now),
        ("\nmessage ", "bold"), task.message,
    )  # fmt: skip
    console.print(head)
    outcome = task.outcome or {}
    if "result" in outcome:
        result = ToolResult.from_result(outcome["result"])
        console.print(Text("result" + (" (tool error)" if result.is_error else ""), style="bold"))
        console.print(Text(result.text or json.dumps(result.structured, indent=2)))
    elif "error" in outcome:
        error = outcome["error"]
        console.print(Text(f"error {error.get('code')}: {error.get('message')}", style="bold"))


# -- exai call --task -----------------------------------------------------------------------


async def _call_task(tool: str, arguments: dict[str, Any], timeout: float | None, url: str, token: str | None) -> int:
    progress = ProgressLine(sys.stderr, live=sys.stderr.isatty())
    interrupts = _Interrupts()
    params: dict[str, Any] = {"name": tool, "arguments": arguments, "task": {}}
    if timeout is not None:
        params["_meta"] = {"exai/timeout": timeout}
    task_id: str | None = None
    answer: Any = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(interrupts.watch)
        try:
            async with connect(url, token=token, era="legacy") as client:
                nursery.start_soon(progress.tick)
                with interrupts.scope:
                    created = (await client.request("tools/call", params))["task"]
                    task_id = created["taskId"]
                    progress.update({"message": f"task {task_id}: {created['statusMessage']}"})
                    answer = await _poll(client, task_id, created, progress)
                if interrupts.hit and task_id is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await client.request("tasks/cancel", {"taskId": task_id})
        except RpcError as exc:
            progress.clear()
            return _rpc_error_exit(exc)
        except ConnectionLost as exc:
            progress.clear()
            print(f"exai: {exc}", file=sys.stderr)
            if task_id is not None:
                print(f"exai: the task goes on in the daemon: exai task {task_id}", file=sys.stderr)
            return EXIT_UNREACHABLE
        finally:
            nursery.cancel_scope.cancel()
    progress.clear()
    if interrupts.hit:
        print("exai: interrupted; the task was cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    result = ToolResult.from_result(answer)
    _print_result(result)
    return EXIT_ERROR if result.is_error else EXIT_OK


async def _poll(client: ExaiClient, task_id: str, task: dict[str, Any], progress: ProgressLine) -> Any:
    """Poll the task at its pollInterval until it ends; then its result (RpcError for an error)."""
    while task["status"] == "working":
        await trio.sleep(float(task.get("pollInterval") or DEFAULT_POLL_S * 1000) / 1000)
        task = await client.request("tasks/get", {"taskId": task_id})
        progress.update({"message": task.get("statusMessage") or task["status"]})
    return await client.request("tasks/result", {"taskId": task_id})


def run_call_task(tool: str, arguments: dict[str, Any], *, timeout: float | None, url: str | None, token: str | None) -> int:
    """`exai call --task`: run the call as a task, poll it, print its result like `exai call`."""
    quiet_logs()
    if timeout is not None and not timeout > 0:
        print("exai: --timeout must be a positive number of seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        return trio.run(_call_task, tool, arguments, timeout, resolve_url(url), resolve_token(token))
    except KeyboardInterrupt:
        print("exai: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
