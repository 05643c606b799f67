"""The store's interface: what tools, the monitor and the CLI may ask of any backend.

Two protocols, because the daemon and the `exai threads` commands use a store differently:
`Store` is the daemon's (async, on the event loop, one per process, opened at start-up);
`ThreadReader` is the CLI's (blocking, read-only, never creating or changing anything, safe
while a daemon is using the same store).

Later issues add their state here as methods of `Store` that every backend implements, so
no caller changes when a backend arrives: durable tasks (below), provider rate windows, circuit state and slot leases (async context managers whose
expiry frees what a dead process held). A backend is chosen once, by `open_store`, from
EXAI_STORE_URL.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from exai.providers.ratelimit import RequestRateLimiter
from exai.store.deployment import Deployment, OpenCircuit, Replica
from exai.store.tasks import NewTask, TaskCursor, TaskRecord, TaskStatus
from exai.store.threads import Appended, Thread, Turn


class Store(Protocol):
    """Conversation threads shared by every tool and client of the daemon, and tasks.

    Every method raises StoreUnavailable when the store cannot be reached; `get` and
    `append` raise ThreadNotFound for an id that names no live thread. A cancelled call
    never leaves a write half done.
    """

    @property
    def max_turns(self) -> int:
        """How many turns a thread keeps (EXAI_MAX_CONVERSATION_TURNS)."""
        ...

    async def get(self, thread_id: str) -> Thread:
        """The live thread, its lifetime restarted."""
        ...

    async def append(
        self,
        thread_id: str | None,
        tool: str,
        turns: list[Turn],
        *,
        findings: Sequence[str] = (),
        files: Sequence[str] = (),
        model: str | None = None,
    ) -> Appended:
        """Add turns (and findings, files, the model) to a thread; None starts a new one.

        Keeps the newest `max_turns` turns and says how many this append dropped.
        """
        ...

    def hold(self, thread_id: str | None) -> AbstractAsyncContextManager[None]:
        """Serialise calls on one thread (either id spelling), first come first served; None
        holds nothing. The wait happens in the caller's cancel scope (its deadline)."""
        ...

    async def list(self) -> list[Thread]:
        """Live threads, the most recently used first."""
        ...

    async def count(self) -> int:
        """How many live threads there are (the dashboard shows it)."""
        ...

    async def expire(self) -> int:
        """Delete expired threads; return how many."""
        ...

    # -- tasks (exai.store.tasks): every read sees a working task whose lease ran out as failed,
    # and never an expired task (created + ttl_s passed) or another owner's.

    async def create_task(self, task: NewTask, *, max_unfinished: int) -> TaskRecord:
        """Record a new working task; TooManyTasks when `max_unfinished` are unfinished."""
        ...

    async def task(self, task_id: str, owner: str | None) -> TaskRecord:
        """One live task of `owner` (None: anyone's); TaskNotFound if there is none."""
        ...

    async def tasks(
        self, owner: str | None, *, after: TaskCursor | None = None, limit: int = 100
    ) -> builtins.list[TaskRecord]:
        """Live tasks of `owner` (None: anyone's), oldest first, after a cursor."""
        ...

    async def update_task(self, task_id: str, message: str) -> None:
        """Set a working task's message (what it is doing now); a finished one keeps its own."""
        ...

    async def finish_task(
        self, task_id: str, status: TaskStatus, message: str, outcome: dict[str, Any] | None
    ) -> TaskRecord:
        """End a working task; one already finished keeps its status. The record as it stands
        after; TaskNotFound if there is no live task."""
        ...

    async def renew_tasks(self, runner: str, lease_s: float) -> int:
        """Extend the lease of `runner`'s working tasks to now + lease_s; return how many."""
        ...

    async def fail_tasks(self, runner: str, message: str) -> int:
        """Fail every working task of `runner` (a daemon starting again: its old work is gone)."""
        ...

    async def count_tasks(self) -> dict[TaskStatus, int]:
        """Live tasks by status (anyone's)."""
        ...

    async def expire_tasks(self) -> int:
        """Delete expired tasks; return how many."""
        ...

    def provider_slot(self, provider: str, ceiling: int) -> AbstractAsyncContextManager[None]:
        """A deployment-wide provider request slot (exai.limits.DeploymentSlots): a store that
        one daemon owns holds nothing (the daemon's own limiter is the ceiling); a shared one
        holds a lease its replica renews, which frees itself if the replica dies."""
        ...

    def rate_limiter(self, provider: str, rpm: int | None, *, env_var: str) -> RequestRateLimiter:
        """The provider's EXAI_*_RPM ceiling (exai.limits.DeploymentSlots): one daemon's own
        schedule, or on a shared store the deployment's."""
        ...

    async def announce(
        self, replica: Replica, lease_s: float, circuits: Mapping[str, OpenCircuit]
    ) -> Deployment:
        """Record `replica` as live for `lease_s` seconds and the provider circuits open on it
        (`circuits`), and return the deployment: every live replica (this one included), the
        oldest first, and every circuit open on any of them. A store one daemon owns knows
        only that one. Bounded in time; StoreUnavailable when the store does not answer (the
        daemon announces itself every half second: that is also how /readyz knows)."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds; runs to its end even when cancelled."""
        ...


class ThreadReader(Protocol):
    """Read-only, blocking access to a store's threads for the `exai threads` commands.

    Reading never restarts a thread's lifetime and never creates the store; a store that does
    not exist yet has no threads. Errors are StoreUnavailable.
    """

    @property
    def where(self) -> str:
        """Where the store is, for messages (a file, a URL without its password)."""
        ...

    def threads(self) -> list[Thread]:
        """Live threads, the most recently used first."""
        ...

    def thread(self, thread_id: str) -> Thread:
        """One live thread; ThreadNotFound when there is none."""
        ...

    def tasks(self) -> list[TaskRecord]:
        """Live tasks (anyone's), the newest first."""
        ...

    def task(self, task_id: str) -> TaskRecord:
        """One live task (anyone's); TaskNotFound when there is none."""
        ...
