"""What a task is, whatever store keeps it: `TaskRecord`, its status, and the errors every
backend raises for tasks.

A task is a tools/call whose work the daemon owns (exai.tasks runs it). Its record holds who
may see it (`owner`, a keyed hash of the credentials), what it is doing (`message`), how it
ended (`outcome`: the JSON-RPC result or error the call would have answered) and which
daemon runs it (`runner`, with a lease it renews while the work runs: a working task whose
lease has run out reads as failed, so a task never stays `working` for a daemon that died).
Times are wall-clock seconds (the store's clock), so they mean the same after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from exai.errors import ExaiError

_SHOWN_ID_CHARS: Final = 80
# What a working task whose runner stopped renewing its lease reads as.
LEASE_LOST: Final = "the daemon running this task stopped before it finished (its lease ran out)"


class TaskStatus(StrEnum):
    WORKING = "working"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self is not TaskStatus.WORKING


class TaskNotFound(ExaiError):
    """No live task has this id for these credentials: never created, expired, or another's."""

    def __init__(self, task_id: str):
        shown = task_id if len(task_id) <= _SHOWN_ID_CHARS else task_id[:_SHOWN_ID_CHARS] + "…"
        super().__init__(f"Failed to retrieve task: task '{shown}' is unknown or expired")
        self.task_id = task_id


class TooManyTasks(ExaiError):
    """EXAI_MAX_TASKS tasks are unfinished already."""

    def __init__(self, limit: int):
        super().__init__(f"Server overloaded: {limit} tasks are unfinished (EXAI_MAX_TASKS={limit})")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class NewTask:
    """What the creator of a task decides; the store adds the times."""

    id: str
    owner: str
    tool: str
    ttl_s: float
    runner: str
    lease_s: float
    message: str


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    owner: str
    tool: str
    status: TaskStatus
    message: str
    created: float
    updated: float  # the last change of status or message
    ttl_s: float  # kept until created + ttl_s
    runner: str
    lease_until: float
    outcome: dict[str, Any] | None  # {"result": {...}} or {"error": {...}} once finished

    @property
    def expires(self) -> float:
        return self.created + self.ttl_s

    def as_read(self, now: float) -> TaskRecord:
        """The record as readers see it at `now`: a working task whose lease ran out is failed."""
        if self.status is TaskStatus.WORKING and self.lease_until < now:
            return replace(
                self,
                status=TaskStatus.FAILED,
                message=LEASE_LOST,
                updated=self.lease_until,
                outcome=lost_outcome(LEASE_LOST),
            )
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tool": self.tool,
            "status": self.status.value,
            "message": self.message,
            "created": self.created,
            "updated": self.updated,
            "expires": self.expires,
        }


def lost_outcome(message: str) -> dict[str, Any]:
    """The outcome of a task whose work was lost with its daemon: an internal error saying so."""
    return {"error": {"code": -32603, "message": message}}


# A page of tasks starts after this (created, id) of the previous page's last task.
TaskCursor = tuple[float, str]
