"""One tools/call from arrival to response: deadline, slots, cancellation, outcome.

Every call runs in its own cancel scope whose deadline covers queueing, limiter waits and
provider time. Whoever cancels it records why first; the scope does the rest, so nothing a
call started (slot, HTTP request) outlives it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio
from loguru import logger

from exai import metrics
from exai.config import Settings
from exai.history import History
from exai.limits import Limits, Overloaded
from exai.protocol import (
    INTERNAL_ERROR,
    TIMED_OUT,
    RequestId,
    RpcError,
    ToolCall,
    error_message,
    notification_message,
    result_message,
)
from exai.providers.base import CallBudget, ProviderError
from exai.providers.gateway import ModelGateway
from exai.store import Store, StoreUnavailable
from exai.subscriptions import Listeners
from exai.tools.base import (
    Activity,
    CallUsage,
    ModelArgs,
    ServedTool,
    Shown,
    ToolArgumentError,
    ToolContext,
    ToolOutput,
)

if TYPE_CHECKING:
    from exai.tasks import TaskRunner

# At most this many progress notifications per second per call.
PROGRESS_INTERVAL_S = 0.25

Send = Callable[[dict[str, Any]], Awaitable[None]]


class CancelReason(StrEnum):
    CLIENT = "client"
    DISCONNECT = "disconnect"
    DEADLINE = "deadline"
    SHUTDOWN = "shutdown"


@dataclass(eq=False)
class InflightCall:
    """A tools/call that has arrived and not yet been answered."""

    id: RequestId
    connection_id: str
    tool: str
    arrived: float
    deadline: float
    scope: trio.CancelScope
    reason: CancelReason | None = None
    activity: Activity = field(default_factory=Activity)  # replaced by the call as it goes

    def cancel(self, reason: CancelReason) -> None:
        """Cancel the call; the first reason given is the one recorded."""
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()

    def snapshot(self, now: float) -> dict[str, Any]:
        """The call as /api/status shows it at `now`, on trio's clock (the loop's own)."""
        activity = self.activity
        return {
            "id": self.id,
            "connection": self.connection_id,
            "tool": self.tool,
            "age_s": round(now - self.arrived, 3),
            "deadline_s": round(max(0.0, self.deadline - now), 3),
            "timeout_s": round(self.deadline - self.arrived, 3),
            "state": activity.state,
            "model": activity.model,
            "step": activity.step,
            "message": activity.message,
        }


K = TypeVar("K")
V = TypeVar("V")


class Alive(Generic[K, V]):
    """What is alive now, by key, and a way to wait until nothing is."""

    def __init__(self) -> None:
        self.active: dict[K, V] = {}
        self._empty = trio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self.active)

    def add(self, key: K, value: V) -> None:
        if not self.active:
            self._empty = trio.Event()
        self.active[key] = value

    def remove(self, key: K) -> None:
        del self.active[key]
        if not self.active:
            self._empty.set()

    async def wait_empty(self) -> None:
        """Return once nothing is alive."""
        await self._empty.wait()


class Calls(Alive[tuple[str, RequestId], InflightCall]):
    """Every call in flight in the daemon, by (connection id, request id)."""

    def snapshot(self) -> list[dict[str, Any]]:
        """Every call as /api/status shows it now; on the daemon's loop only."""
        now = trio.current_time()
        return [call.snapshot(now) for call in self.active.values()]


class Progress:
    """Progress notifications of one call: strictly increasing, a few per second at most."""

    def __init__(self, token: str | int | None, send: Send, call: Shown):
        self.token = token
        self._send = send
        self._call = call
        self._count = 0
        self._last = -PROGRESS_INTERVAL_S

    async def report(self, message: str) -> None:
        self._call.activity = replace(self._call.activity, message=message)  # shown, token or not
        if self.token is None:
            return
        now = trio.current_time()
        if now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        self._count += 1
        params = {"progressToken": self.token, "progress": self._count, "message": message}
        await self._send(notification_message("notifications/progress", params))


@dataclass
class Services:
    """What calls share: configuration, limiters, providers, tools, the store, the tasks."""

    settings: Settings
    limits: Limits
    gateway: ModelGateway
    tools: dict[str, ServedTool]
    store: Store
    calls: Calls
    status: Callable[[], dict[str, Any]]
    draining: Callable[[], bool] = lambda: False  # the daemon is shutting down: no new call
    listeners: Listeners = field(default_factory=Listeners)  # who hears of tool-set changes
    history: History = field(default_factory=History)
    tasks: TaskRunner = field(init=False)  # set once the daemon's task runner is open


async def run_tool_call(
    services: Services,
    call: InflightCall,
    request: ToolCall,
    tool: ServedTool,
    session_slots: trio.CapacityLimiter,
    send: Send,
) -> dict[str, Any] | None:
    """Run one call to its end; return the response to send, or None when none is owed.

    Returns only after every slot the call took is released and every provider request it
    made is closed, whatever ended it.
    """
    rid = f"{call.connection_id}/{call.id}"
    log = logger.bind(rid=rid)
    progress = Progress(request.progress_token, send, call)
    budget = CallBudget(services.settings.max_provider_calls)
    ctx = ToolContext(
        request_id=rid,
        settings=services.settings,
        gateway=services.gateway,
        budget=budget,
        store=services.store,
        report=progress.report,
        status=services.status,
        call=call,
    )
    outcome = "cancelled"  # stays so only if an enclosing scope (the daemon's) cancels the call
    response: dict[str, Any] | None = None
    metrics.inflight_requests.inc()
    services.history.call_started()
    try:
        with call.scope:
            try:
                bound = tool.bind(request.arguments)
                if isinstance(bound.args, ModelArgs):
                    ctx.thinking = bound.args.thinking
                async with services.limits.admit(session_slots):
                    call.activity = replace(call.activity, state="running")
                    output = await bound.run(ctx)
            except ToolArgumentError as exc:
                output = ToolOutput(str(exc), is_error=True)
            except ProviderError as exc:
                output = ToolOutput(str(exc), is_error=True)
            except StoreUnavailable as exc:  # the daemon goes on; the store is watched (/readyz)
                output = ToolOutput(str(exc), is_error=True)
            outcome = "tool_error" if output.is_error else "ok"
            response = result_message(call.id, _result(output, budget, ctx.usage))
        if call.scope.cancelled_caught:
            reason = call.reason or CancelReason.DEADLINE
            call.reason = reason
            metrics.labelled(metrics.cancellations_total, reason.value).inc()
            outcome = f"cancelled_{reason.value}"
            response = _cancelled_response(call, reason)
            if response is not None and ctx.continuation_id is not None:
                # The steps it finished are saved: say where, so the work can go on.
                response["error"]["data"]["continuation_id"] = ctx.continuation_id
    except Overloaded as exc:
        outcome = "overloaded"
        response = error_message(call.id, exc.code, exc.message, exc.data)
    except RpcError as exc:
        outcome = "error"
        response = error_message(call.id, exc.code, exc.message, exc.data)
    except Exception:
        outcome = "error"
        response = internal_error(call.id, f"call {rid} tool={call.tool}", log)
    finally:
        if outcome == "cancelled" and call.reason is not None:
            # An enclosing scope (its session's end) cancelled the call after a reason was given.
            outcome = f"cancelled_{call.reason.value}"
            metrics.labelled(metrics.cancellations_total, call.reason.value).inc()
        metrics.inflight_requests.dec()
        took = trio.current_time() - call.arrived
        metrics.labelled(metrics.requests_total, call.tool, outcome).inc()
        metrics.labelled(metrics.request_duration, call.tool).observe(took)
        services.history.call_finished(
            connection=call.connection_id,
            request_id=call.id,
            tool=call.tool,
            outcome=outcome,
            took_s=took,
            response=response,
        )
        log.info(
            "call {} tool={} outcome={} {:.3f}s provider_calls={} tokens={}/{}",
            rid,
            call.tool,
            outcome,
            took,
            budget.used,
            ctx.usage.prompt_tokens,
            ctx.usage.completion_tokens,
        )
    return response


def new_error_id() -> str:
    """An id that ties what a client was told about a failure to its one line in the log."""
    return uuid.uuid4().hex[:12]


def internal_error(id: RequestId | None, what: str, log: Any = logger) -> dict[str, Any]:
    """Log the exception being handled with a fresh error id; the -32603 answer names only the id."""
    error_id = new_error_id()
    log.exception("{} failed unexpectedly, error id {}", what, error_id)
    return error_message(id, INTERNAL_ERROR, "Internal error", {"error_id": error_id})


def _cancelled_response(call: InflightCall, reason: CancelReason) -> dict[str, Any] | None:
    if reason is CancelReason.DEADLINE:
        timeout = round(call.deadline - call.arrived, 3)
        shown = f"{timeout:g}"
        return error_message(
            call.id, TIMED_OUT, f"Request timed out after {shown} s", {"timeout_s": timeout}
        )
    if reason is CancelReason.SHUTDOWN:
        return error_message(
            call.id, INTERNAL_ERROR, "Server shutting down: the call was cancelled", {"reason": "shutdown"}
        )
    return None  # the client cancelled it or is gone: no response is owed


def _result(output: ToolOutput, budget: CallBudget, usage: CallUsage) -> dict[str, Any]:
    """The tools/call result; a call that asked a model (and every structured one) carries
    `structuredContent.usage`, its tokens, provider calls and cost."""
    result: dict[str, Any] = {
        "content": [{"type": "text", "text": output.text}],
        "isError": output.is_error,
    }
    used = usage.as_dict(budget.used)
    if output.structured is not None or budget.used:
        structured = dict(output.structured or {})
        structured.setdefault("provider_calls", budget.used)
        structured["usage"] = used
        result["structuredContent"] = structured
    meta = {"provider_calls": budget.used, "usage": used}
    if output.meta:
        meta.update(output.meta)
    result["_meta"] = meta
    return result
