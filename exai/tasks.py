"""Calls that run as tasks: the work belongs to the daemon, the record to the store.

`open_task_runner` gives the daemon its `TaskRunner`; each protocol era turns its own task
requests into the runner's few operations (start or call_or_task, get, wait, cancel, page,
follow) and shows the records in its own shapes (exai.legacytasks, exai.moderntasks). A task's work runs in the runner's nursery, which the daemon owns:
the connection or stream that asked may close, the work goes on. Its deadline is
EXAI_TASK_TIMEOUT_SECS (never past its TTL: nothing runs for a result nobody can read), its
provider budget the call's; `cancel`, the deadline and the daemon's shutdown stop it, and
with it everything it started (its provider request is aborted at once, as for any call).

While it works, its record's message says what it is doing (state, model, step, tokens so
far) and its lease is renewed; a daemon that starts fails the working tasks its previous
life left behind (their work is gone), and a daemon that dies without starting again is
found out by its lapsed lease (exai.store.tasks), so no task reads `working` forever.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio
from loguru import logger

from exai.lifecycle import CancelReason, InflightCall, Send, run_tool_call
from exai.protocol import INVALID_PARAMS, OVERLOADED, RpcError, ToolCall
from exai.store import NewTask, TaskCursor, TaskNotFound, TaskRecord, TaskStatus, TooManyTasks
from exai.tools.base import Activity, ServedTool

if TYPE_CHECKING:
    from exai.lifecycle import Services

TASK_ID_BYTES: Final = 24  # secrets.token_urlsafe: 192 bits, 32 characters
LOCAL_RUNNER: Final = "local"  # the one daemon of an embedded store
POLL_INTERVAL_S: Final = 1.0  # what clients are told to poll at; how often a foreign task is re-read
MESSAGE_EVERY_S: Final = 0.5  # a working task's message is written at most this often
COUNTS_EVERY_S: Final = 1.0  # the status counts are re-read this often
EXPIRE_EVERY_S: Final = 60.0  # expired records are deleted this often (reads skip them anyway)
FINISH_TIMEOUT_S: Final = 5.0  # the shielded write of a task's end
TASK_CONNECTION: Final = "tasks"  # the connection id task calls carry in /api/status
SHOWN_ID_CHARS: Final = 8  # of a task id in /api/status: the full id is a capability
OWNER_KEY: Final = b"exai task owner v1"

STOPPED_AT_SHUTDOWN: Final = (
    "failed: the daemon shut down before the task finished (EXAI_SHUTDOWN_GRACE_SECS passed); run the call again"
)
LOST_AT_START: Final = (
    "failed: the daemon running this task stopped before it finished (killed or crashed); run the call again"
)
CANCELLED: Final = "cancelled by tasks/cancel"

Notify = Callable[[TaskRecord], Awaitable[None]]


async def nobody(record: TaskRecord) -> None:
    """A Notify for a creator that hears of a task's end some other way (or not at all)."""


def task_owner(token: str | None) -> str:
    """Who may see a task: a keyed hash of the bearer token its creator presented (only the
    hash is stored), or "open" when the daemon takes no token."""
    if token is None:
        return "open"
    return "bearer:" + hmac.new(OWNER_KEY, token.encode(), hashlib.sha256).hexdigest()


def describe(activity: Activity) -> str:
    """A working task's message from its call's activity: state, model, step, progress."""
    parts: list[str] = [activity.state]
    if activity.model:
        parts.append(f"model {activity.model}")
    if activity.step:
        parts.append(f"step {activity.step}")
    if activity.message:
        parts.append(activity.message)
    return ", ".join(parts)


@dataclass(eq=False)
class _Work:
    """One call the runner runs: a task once it has a record (from the start, or handed off)."""

    call: InflightCall
    parsed: ToolCall
    tool: ServedTool
    send: Send
    notify: Notify
    done: trio.Event = field(default_factory=trio.Event)  # set once its end is recorded
    record: TaskRecord | None = None
    response: dict[str, Any] | None = None
    message: str = "queued"


class TaskRunner:
    """The daemon's tasks: starts them in its nursery and answers for them from the store.

    Every method that names a task raises RpcError(-32602) when no live task of these
    credentials has that id. Built by `open_task_runner`.
    """

    def __init__(self, services: Services, nursery: trio.Nursery, runner_id: str, owner: str):
        self.services = services
        self.store = services.store
        self.settings = services.settings
        self.nursery = nursery
        self.runner_id = runner_id
        self.owner = owner
        self.running: dict[str, _Work] = {}  # tasks whose work runs here, by task id
        # Tasks take their slots here instead of a connection's (a task outlives its connection).
        self.slots = trio.CapacityLimiter(self.settings.max_tasks)
        self.counts: dict[TaskStatus, int] = dict.fromkeys(TaskStatus, 0)
        self._mean_task_s = 5.0  # to tell a refused creator when to come back
        self._calls = itertools.count(1)
        # Who hears of a task's end besides its creator (modern subscriptions/listen), by task id.
        self.followers: dict[str, set[Callable[[TaskRecord], None]]] = {}

    # -- creating --------------------------------------------------------------------------

    async def start(self, parsed: ToolCall, tool: ServedTool, *, ttl_s: float | None, send: Send, notify: Notify) -> TaskRecord:
        """Record a new task and start its work; the record (working). RpcError(-32000) when
        EXAI_MAX_TASKS are unfinished or the daemon is shutting down.

        `send` takes the call's progress notifications, `notify` the task's last state; both
        go to whoever asked, for as long as it is there (a gone one is skipped).
        """
        self._refuse_when_draining()
        # Shielded: a record is never left without its work, nor work without its record.
        with trio.CancelScope(shield=True):
            record = await self._create(parsed.name, ttl_s)
            work = self._launch(parsed, tool, _quiet(send), _quiet_notify(notify), self._task_timeout(parsed, record))
            self._adopt(work, record)
        return record

    async def call_or_task(
        self, parsed: ToolCall, tool: ServedTool, *, after_s: float, send: Send, notify: Notify
    ) -> dict[str, Any] | TaskRecord | None:
        """Run a call; if it is still running after `after_s`, make it a task.

        Returns the call's response (a JSON-RPC result or error message) when it ends within
        `after_s`, None when it was cancelled, or the new task's record. Until then the call
        is its caller's: cancelling this cancels it, and its progress goes to `send`; once it
        is a task, neither (its deadline becomes EXAI_TASK_TIMEOUT_SECS from its arrival).
        At EXAI_MAX_TASKS it stays a plain call to its end.
        """
        self._refuse_when_draining()
        timeout = float(self.settings.tool_timeout_secs)
        if parsed.timeout is not None:
            timeout = min(timeout, parsed.timeout)
        quiet = _quiet(send)
        work: _Work

        async def until_a_task(message: dict[str, Any]) -> None:
            if work.record is None:
                await quiet(message)

        work = self._launch(parsed, tool, until_a_task, _quiet_notify(notify), timeout)
        try:
            with trio.move_on_after(after_s):
                await work.done.wait()
            if work.done.is_set():
                return work.response
            with trio.CancelScope(shield=True):
                try:
                    record = await self._create(parsed.name, None)
                except RpcError:  # no room for one more task: it stays a plain call
                    record = None
                if record is not None:
                    call = work.call
                    call.deadline = call.arrived + self._task_timeout(parsed, record)
                    call.scope.deadline = call.deadline
                    self._adopt(work, record)
                    if work.done.is_set():  # it ended while its record was written
                        await self._finish(work)
                    return record
            await work.done.wait()
            return work.response
        except BaseException:
            if work.record is None:
                work.call.cancel(CancelReason.DISCONNECT)
            raise

    def _refuse_when_draining(self) -> None:
        if self.services.draining():
            raise RpcError(OVERLOADED, "Server shutting down", {"retry_after_s": 1})

    def _task_timeout(self, parsed: ToolCall, record: TaskRecord) -> float:
        timeout = min(float(self.settings.task_timeout_secs), record.ttl_s)
        return timeout if parsed.timeout is None else min(timeout, parsed.timeout)

    async def _create(self, tool: str, ttl_s: float | None) -> TaskRecord:
        settings = self.settings
        ttl = float(settings.task_ttl_secs) if ttl_s is None else min(float(settings.task_ttl_secs), ttl_s)
        new = NewTask(
            id=secrets.token_urlsafe(TASK_ID_BYTES),
            owner=self.owner,
            tool=tool,
            ttl_s=ttl,
            runner=self.runner_id,
            lease_s=float(settings.replica_lease_secs),
            message="queued",
        )
        try:
            record = await self.store.create_task(new, max_unfinished=settings.max_tasks)
        except TooManyTasks as exc:
            raise RpcError(OVERLOADED, str(exc), {"retry_after_s": self.retry_after()}) from None
        logger.info("task {} tool={} started, ttl {:g} s", _shown(record.id), record.tool, ttl)
        return record

    def _launch(self, parsed: ToolCall, tool: ServedTool, send: Send, notify: Notify, timeout: float) -> _Work:
        now = trio.current_time()
        call = InflightCall(
            id=f"call {next(self._calls)}",
            connection_id=TASK_CONNECTION,
            tool=parsed.name,
            arrived=now,
            deadline=now + timeout,
            scope=trio.CancelScope(deadline=now + timeout),
        )
        work = _Work(call, parsed, tool, send, notify)
        self.services.calls.add((TASK_CONNECTION, call.id), call)
        self.nursery.start_soon(self._run, work)
        return work

    def _adopt(self, work: _Work, record: TaskRecord) -> None:
        """The work is now this task's: its end goes into the record."""
        work.record = record
        self.running[record.id] = work
        self.counts[TaskStatus.WORKING] += 1

    async def _run(self, work: _Work) -> None:
        call = work.call
        try:
            async with trio.open_nursery() as tracking:
                tracking.start_soon(self._track, work)
                work.response = await run_tool_call(self.services, call, work.parsed, work.tool, self.slots, work.send)
                tracking.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(FINISH_TIMEOUT_S):
                self.services.calls.remove((TASK_CONNECTION, call.id))
                try:
                    if work.record is not None:
                        await self._finish(work)
                finally:
                    work.done.set()

    async def _finish(self, work: _Work) -> None:
        """Record how the task's call ended and tell whoever asked (shielded by the caller)."""
        assert work.record is not None
        call = work.call
        status, message, outcome = _ending(call, work.response)
        try:
            final = await self.store.finish_task(work.record.id, status, message, outcome)
        finally:
            self.running.pop(work.record.id, None)
        took = trio.current_time() - call.arrived
        self._mean_task_s = 0.9 * self._mean_task_s + 0.1 * took
        logger.info("task {} tool={} {} after {:.3f}s: {}", _shown(final.id), final.tool, final.status, took, final.message)
        await self._refresh_counts()
        for hear in list(self.followers.get(final.id, ())):
            hear(final)
        await work.notify(final)

    async def visible(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        """The live tasks among `task_ids` that these credentials may see (unknown ones left out)."""
        found = []
        for task_id in dict.fromkeys(task_ids):
            try:
                found.append(await self.store.task(task_id, self.owner))
            except TaskNotFound:
                continue
        return found

    def follow(self, task_id: str, hear: Callable[[TaskRecord], None]) -> None:
        """Call `hear` (it must not block) with the record when this task's work here ends."""
        self.followers.setdefault(task_id, set()).add(hear)

    def unfollow(self, task_id: str, hear: Callable[[TaskRecord], None]) -> None:
        hearing = self.followers.get(task_id)
        if hearing is not None:
            hearing.discard(hear)
            if not hearing:
                del self.followers[task_id]

    async def _track(self, work: _Work) -> None:
        """Keep the record's message on what the call is doing, at most every MESSAGE_EVERY_S."""
        while True:
            message = describe(work.call.activity)
            if work.record is not None and message != work.message:
                work.message = message
                await self.store.update_task(work.record.id, message)
            await trio.sleep(MESSAGE_EVERY_S)

    def retry_after(self) -> float:
        return float(max(1, math.ceil(self._mean_task_s)))

    # -- answering for tasks -----------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord:
        """The task as it stands."""
        try:
            return await self.store.task(task_id, self.owner)
        except TaskNotFound as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None

    async def wait(self, task_id: str) -> TaskRecord:
        """The task once it has finished (at once if it has); cancellable."""
        while True:
            record = await self.get(task_id)
            if record.status.finished:
                return record
            work = self.running.get(task_id)
            if work is not None:
                await work.done.wait()
            else:  # another daemon's work: its record says when it ends
                await trio.sleep(POLL_INTERVAL_S)

    async def cancel(self, task_id: str) -> tuple[TaskRecord, bool]:
        """Cancel a working task: its record reads `cancelled` before this returns, and its
        work is stopped. The record after, and whether this cancelled it (False: it had
        finished already, and keeps its status)."""
        record = await self.get(task_id)
        if record.status.finished:
            return record, False
        with trio.CancelScope(shield=True):  # the record and the work stop together
            final = await self.store.finish_task(task_id, TaskStatus.CANCELLED, CANCELLED, None)
            work = self.running.get(task_id)
            if work is not None and final.status is TaskStatus.CANCELLED:
                work.call.cancel(CancelReason.CLIENT)
        return final, final.status is TaskStatus.CANCELLED

    async def page(self, after: TaskCursor | None, limit: int) -> tuple[list[TaskRecord], TaskCursor | None]:
        """Up to `limit` tasks of these credentials after the cursor, oldest first, and the
        cursor of the next page (None when this is the last)."""
        records = await self.store.tasks(self.owner, after=after, limit=limit + 1)
        if len(records) <= limit:
            return records, None
        last = records[limit - 1]
        return records[:limit], (last.created, last.id)

    # -- status -----------------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """For /api/status: tasks by status and the working ones of this daemon."""
        now = trio.current_time()
        working = [
            {
                "id": _shown(task_id),
                "tool": work.call.tool,
                "age_s": round(now - work.call.arrived, 3),
                "message": work.message,
            }
            for task_id, work in list(self.running.items())
        ]
        return {**{status.value: count for status, count in self.counts.items()}, "running": working}

    async def _refresh_counts(self) -> None:
        self.counts = await self.store.count_tasks()

    async def _maintain(self) -> None:
        """Renew this daemon's leases, keep the counts fresh, delete expired records."""
        lease_s = float(self.settings.replica_lease_secs)
        renew_every = lease_s / 3
        renewed = expired = trio.current_time()
        while True:
            now = trio.current_time()
            if self.running and now - renewed >= renew_every:
                await self.store.renew_tasks(self.runner_id, lease_s)
                renewed = now
            if now - expired >= EXPIRE_EVERY_S:
                if deleted := await self.store.expire_tasks():
                    logger.info("tasks: deleted {} expired task(s)", deleted)
                expired = now
            await self._refresh_counts()
            await trio.sleep(min(renew_every, COUNTS_EVERY_S))

    async def stop(self) -> None:
        """Cancel whatever still runs (shutdown) and wait until each has recorded its end."""
        for work in list(self.running.values()):
            work.call.cancel(CancelReason.SHUTDOWN)
        while self.running:
            await next(iter(self.running.values())).done.wait()


@asynccontextmanager
async def open_task_runner(services: Services, *, runner_id: str = LOCAL_RUNNER) -> AsyncIterator[TaskRunner]:
    """The daemon's task runner for the body. First fails the working tasks `runner_id` left
    behind in the store (a previous life's, killed or stopped); on exit every task it ran has
    ended and recorded how (one still running is cancelled as by shutdown)."""
    lost = await services.store.fail_tasks(runner_id, LOST_AT_START)
    if lost:
        logger.warning("tasks: {} task(s) were working when the daemon last stopped; marked failed", lost)
    token = services.settings.auth_token
    owner = task_owner(None if token is None else token.get_secret_value())
    async with trio.open_nursery() as nursery:
        runner = TaskRunner(services, nursery, runner_id, owner)
        await runner._refresh_counts()
        maintenance = trio.CancelScope()

        async def maintain() -> None:
            with maintenance:
                await runner._maintain()

        nursery.start_soon(maintain)
        try:
            yield runner
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(FINISH_TIMEOUT_S):
                await runner.stop()
            maintenance.cancel()


def _ending(call: InflightCall, response: dict[str, Any] | None) -> tuple[TaskStatus, str, dict[str, Any] | None]:
    """How a task's call ended: its status, message and outcome."""
    if response is not None and "result" in response:
        result = response["result"]
        message = "completed with a tool error (isError)" if result.get("isError") else "completed"
        return TaskStatus.COMPLETED, message, {"result": result}
    if response is not None and "error" in response:
        error = response["error"]
        message = STOPPED_AT_SHUTDOWN if call.reason is CancelReason.SHUTDOWN else f"failed: {error['message']}"
        return TaskStatus.FAILED, message, {"error": error}
    if call.reason is CancelReason.CLIENT:
        return TaskStatus.CANCELLED, CANCELLED, None
    return TaskStatus.FAILED, STOPPED_AT_SHUTDOWN, {"error": {"code": -32603, "message": STOPPED_AT_SHUTDOWN}}


def _quiet(send: Send) -> Send:
    """`send` for a task: whoever asked may be gone, which never fails the task."""

    async def quiet_send(message: dict[str, Any]) -> None:
        try:
            await send(message)
        except Exception as exc:
            logger.debug("task: a message to its creator was not sent: {!r}", exc)

    return quiet_send


def _quiet_notify(notify: Notify) -> Notify:
    async def quiet_notify(record: TaskRecord) -> None:
        try:
            await notify(record)
        except Exception as exc:
            logger.debug("task: its status was not sent to its creator: {!r}", exc)

    return quiet_notify


def _shown(task_id: str) -> str:
    return task_id[:SHOWN_ID_CHARS]
