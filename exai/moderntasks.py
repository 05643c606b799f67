"""Tasks as the MCP extension `io.modelcontextprotocol/tasks` serves them (2026-07-28 framing),
over the daemon's TaskRunner: a `tools/call` from a client that declares the extension and is
still running after EXAI_TASK_AFTER_SECS is answered with a task (`resultType: "task"`);
`tasks/get` (the result or error inline once finished), `tasks/cancel` and `tasks/update`
(acknowledged with an empty result), `notifications/tasks` to followers.

Differences from legacy tasks (exai.legacytasks) are the extension's: the server decides when
a call becomes a task, a tool error is still `completed`, cancelling a finished task is
acknowledged (it keeps its status), times are `ttlMs` / `pollIntervalMs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from exai.legacytasks import iso
from exai.protocol import INVALID_PARAMS, Request, RpcError, parse_tool_call
from exai.store import TaskRecord, TaskStatus
from exai.tasks import POLL_INTERVAL_S, nobody

if TYPE_CHECKING:
    from exai.eras import Result
    from exai.session import Session

Finish = Callable[[dict[str, Any]], dict[str, Any]]
EXTENSION: Final = "io.modelcontextprotocol/tasks"
MISSING_CAPABILITY: Final = -32021
CLIENT_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"


def declares_tasks(params: dict[str, Any]) -> bool:
    """Whether a modern request's client capabilities include the tasks extension."""
    meta = params.get("_meta")
    capabilities = meta.get(CLIENT_CAPABILITIES) if isinstance(meta, dict) else None
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and EXTENSION in extensions


def task_view(record: TaskRecord) -> Result:
    """The extension's `Task`."""
    return {
        "taskId": record.id,
        "status": record.status.value,
        "statusMessage": record.message,
        "createdAt": iso(record.created),
        "lastUpdatedAt": iso(record.updated),
        "ttlMs": round(record.ttl_s * 1000),
        "pollIntervalMs": round(POLL_INTERVAL_S * 1000),
    }


def detailed_view(record: TaskRecord, finish: Finish) -> Result:
    """The extension's `DetailedTask`: the task with its result (as the era's `finish` dresses
    a call's result) or its error inline once finished."""
    view = task_view(record)
    outcome = record.outcome or {}
    if record.status is TaskStatus.COMPLETED and "result" in outcome:
        view["result"] = finish(outcome["result"])
    elif record.status is TaskStatus.FAILED and "error" in outcome:
        view["error"] = outcome["error"]
    return view


def call(session: Session, request: Request) -> None:
    """A modern `tools/call` that declared the extension: its result, or a task if it is
    still running after EXAI_TASK_AFTER_SECS (0: always a task)."""
    parsed = parse_tool_call(request.params)
    tool = session.find_tool(parsed.name)
    runner = session.services.tasks
    after_s = float(session.services.settings.task_after_secs)

    async def answer() -> Result | None:
        outcome = await runner.call_or_task(parsed, tool, after_s=after_s, send=session.send, notify=nobody)
        if isinstance(outcome, TaskRecord):
            return {"resultType": "task", **task_view(outcome)}
        if outcome is None:  # cancelled: no answer is owed
            return None
        if "error" in outcome:
            error = outcome["error"]
            raise RpcError(error["code"], error["message"], error.get("data"))
        result: Result = outcome["result"]
        return result

    session.start_reply(request, answer)


def getter(finish: Finish) -> Callable[[Session, Request], None]:
    """`tasks/get` for an era that dresses a call's result with `finish`."""

    def get(session: Session, request: Request) -> None:
        task_id = task_id_of(request.params)

        async def answer() -> Result:
            return detailed_view(await session.services.tasks.get(task_id), finish)

        session.start_reply(request, answer)

    return get


def cancel(session: Session, request: Request) -> None:
    task_id = task_id_of(request.params)

    async def answer() -> Result:
        await session.services.tasks.cancel(task_id)  # a finished task keeps its status
        return {}

    session.start_reply(request, answer)


def update(session: Session, request: Request) -> None:
    """Acknowledged, and nothing changes: exai never asks a client for input."""
    task_id = task_id_of(request.params)

    async def answer() -> Result:
        await session.services.tasks.get(task_id)
        return {}

    session.start_reply(request, answer)


def methods(finish: Finish) -> dict[str, Callable[[Session, Request], None]]:
    """The extension's methods, for an era that dresses a call's result with `finish`."""
    return {"tasks/get": getter(finish), "tasks/cancel": cancel, "tasks/update": update}


def followed_task_ids(params: dict[str, Any]) -> list[str]:
    """The `notifications.taskIds` a `subscriptions/listen` asks to follow; -32021 when its
    client did not declare the extension, -32602 when they are not a list of strings."""
    wanted = params.get("notifications")
    task_ids = wanted.get("taskIds") if isinstance(wanted, dict) else None
    if task_ids is None:
        return []
    if not isinstance(task_ids, list) or not all(isinstance(task_id, str) for task_id in task_ids):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "notifications.taskIds" must be a list of strings')
    if not declares_tasks(params):
        raise RpcError(MISSING_CAPABILITY, "Missing required client capability", {"requiredCapabilities": {"extensions": {EXTENSION: {}}}})
    return task_ids


def task_id_of(params: dict[str, Any]) -> str:
    task_id = params.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise RpcError(INVALID_PARAMS, 'Invalid params: "taskId" must be a non-empty string')
    return task_id
