"""Tasks as MCP 2025-11-25 serves them (experimental tasks): the `tasks` capability, a
`tools/call` with `params.task`, `tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel` and
`notifications/tasks/status`, in that revision's shapes, over the daemon's TaskRunner.

Differences from the modern extension (exai.eras' modern era) are the revision's: a tool
error reads `failed` here (the spec's rule for tool calls), cancelling a finished task is
-32602, and `tasks/result` waits for the end, then answers what the call would have.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson

from exai.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    Request,
    RpcError,
    notification_message,
    parse_tool_call,
)
from exai.store import TaskCursor, TaskRecord, TaskStatus
from exai.tasks import POLL_INTERVAL_S

if TYPE_CHECKING:
    from exai.eras import Result
    from exai.session import Session

CAPABILITY: Final[dict[str, Any]] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
EXECUTION: Final[dict[str, str]] = {"taskSupport": "optional"}
RELATED_TASK: Final = "io.modelcontextprotocol/related-task"
PAGE_SIZE: Final = 50


def iso(seconds: float) -> str:
    """An ISO 8601 UTC time, as the spec's examples write it."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_of(record: TaskRecord) -> str:
    """The revision's status: a tool call that answered isError is `failed` here."""
    outcome = record.outcome or {}
    if record.status is TaskStatus.COMPLETED and outcome.get("result", {}).get("isError"):
        return TaskStatus.FAILED.value
    return record.status.value


def task_view(record: TaskRecord) -> Result:
    """A `Task` object of the 2025-11-25 schema."""
    return {
        "taskId": record.id,
        "status": status_of(record),
        "statusMessage": record.message,
        "createdAt": iso(record.created),
        "lastUpdatedAt": iso(record.updated),
        "ttl": round(record.ttl_s * 1000),
        "pollInterval": round(POLL_INTERVAL_S * 1000),
    }


def call_as_task(session: Session, request: Request) -> None:
    """`tools/call` with `params.task`: answered with the new task at once, the work goes on."""
    parsed = parse_tool_call(request.params)
    tool = session.find_tool(parsed.name)
    ttl_s = _ttl_s(request.params["task"])
    runner = session.services.tasks

    async def notify(record: TaskRecord) -> None:
        await session.send(notification_message("notifications/tasks/status", task_view(record)))

    async def create() -> Result:
        record = await runner.start(parsed, tool, ttl_s=ttl_s, send=session.send, notify=notify)
        return {"task": task_view(record)}

    session.start_reply(request, create)


def get(session: Session, request: Request) -> None:
    task_id = _task_id(request.params)

    async def answer() -> Result:
        return task_view(await session.services.tasks.get(task_id))

    session.start_reply(request, answer)


def result(session: Session, request: Request) -> None:
    task_id = _task_id(request.params)

    async def answer() -> Result:
        record = await session.services.tasks.wait(task_id)
        outcome = record.outcome or {}
        if "result" in outcome:
            found: Result = dict(outcome["result"])
            found["_meta"] = {**found.get("_meta", {}), RELATED_TASK: {"taskId": record.id}}
            return found
        if "error" in outcome:
            error = outcome["error"]
            raise RpcError(error["code"], error["message"], error.get("data"))
        raise RpcError(INVALID_REQUEST, f"Task {record.id} was cancelled: it has no result")

    session.start_reply(request, answer)


def list_tasks(session: Session, request: Request) -> None:
    after = _cursor(request.params.get("cursor"))

    async def answer() -> Result:
        records, next_after = await session.services.tasks.page(after, PAGE_SIZE)
        listed: Result = {"tasks": [task_view(record) for record in records]}
        if next_after is not None:
            listed["nextCursor"] = _encode_cursor(next_after)
        return listed

    session.start_reply(request, answer)


def cancel(session: Session, request: Request) -> None:
    task_id = _task_id(request.params)

    async def answer() -> Result:
        record, cancelled = await session.services.tasks.cancel(task_id)
        if not cancelled:
            raise RpcError(INVALID_PARAMS, f"Cannot cancel task: already in terminal status '{status_of(record)}'")
        return task_view(record)

    session.start_reply(request, answer)


METHODS: Final = {"tasks/get": get, "tasks/result": result, "tasks/list": list_tasks, "tasks/cancel": cancel}


# -- params -----------------------------------------------------------------------------------


def _task_id(params: dict[str, Any]) -> str:
    task_id = params.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise RpcError(INVALID_PARAMS, 'Invalid params: "taskId" must be a non-empty string')
    return task_id


def _ttl_s(task: Any) -> float | None:
    if not isinstance(task, dict):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "task" must be an object')
    ttl = task.get("ttl")
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "task.ttl" must be a positive number of milliseconds')
    return float(ttl) / 1000


def _encode_cursor(after: TaskCursor) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(after))).decode()


def _cursor(cursor: Any) -> TaskCursor | None:
    """An opaque cursor from `nextCursor`, or -32602."""
    if cursor is None:
        return None
    bad = RpcError(INVALID_PARAMS, "Invalid params: \"cursor\" is not a cursor this server gave")
    if not isinstance(cursor, str):
        raise bad
    try:
        created, task_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise bad from None
    if isinstance(created, bool) or not isinstance(created, int | float) or not isinstance(task_id, str):
        raise bad
    return float(created), task_id
