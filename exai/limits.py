"""Capacity limiters and the admission queue.

Every slot is a `trio.CapacityLimiter` held in `async with`: cancellation at any point
releases it, so there is nothing to "recover" and no count that can drift.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Final, Protocol

import trio

from exai.protocol import OVERLOADED, RpcError
from exai.providers.ratelimit import RequestRateLimiter

if TYPE_CHECKING:
    from exai.config import Settings


async def take_slot(limiter: trio.CapacityLimiter) -> None:
    """Borrow a token for the current task (give it back with `limiter.release()` in a
    `finally`); wait in line if none is free.

    Raises Cancelled if the caller is already cancelled, like `limiter.acquire()`, but takes
    a free token without a task switch: trio refuses a no-wait token while anyone waits, so
    no waiter is overtaken.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        await limiter.acquire()


class DeploymentSlots(Protocol):
    """Provider request slots shared by every replica of a deployment (EXAI_*_MAX_INFLIGHT is
    the deployment's ceiling). Each daemon also holds its own CapacityLimiter per provider."""

    def provider_slot(self, provider: str, ceiling: int) -> AbstractAsyncContextManager[None]:
        """Held around one provider request: waits (in the caller's cancel scope) until fewer
        than `ceiling` requests to `provider` run in the whole deployment, and frees the
        slot on exit, even when cancelled; a slot of a process that died frees itself."""
        ...

    def rate_limiter(self, provider: str, rpm: int | None, *, env_var: str) -> RequestRateLimiter:
        """The provider's request-rate ceiling (EXAI_*_RPM) for the whole deployment."""
        ...


_NO_SLOT: Final = nullcontext()


class ProcessSlots:
    """One daemon is the whole deployment: its own limiter is the ceiling; nothing more held."""

    def provider_slot(self, provider: str, ceiling: int) -> AbstractAsyncContextManager[None]:
        return _NO_SLOT

    def rate_limiter(self, provider: str, rpm: int | None, *, env_var: str) -> RequestRateLimiter:
        return RequestRateLimiter(provider, rpm, env_var=env_var)


class Yieldable(Protocol):
    """A client that may give its connection slot up to a newcomer while it does nothing."""

    def idle_since(self) -> float | None:
        """When it last did anything, or None while it has a call in flight or an open stream."""

    def evict(self) -> None:
        """End it now and give its slot back before returning."""


class ConnectionSlots:
    """EXAI_MAX_CONNECTIONS tokens, one per client from its admission to its close, taken
    without an await between the check and the taking.

    At the cap, a newcomer takes the slot of the longest-idle client that can yield one (a
    legacy HTTP session with no call and no open stream: clients walk away from those without
    DELETE); only when none can is it refused.
    """

    def __init__(self, total: int):
        self._tokens = trio.CapacityLimiter(total)
        self.yieldable: set[Yieldable] = set()

    @property
    def borrowed_tokens(self) -> int:
        return self._tokens.borrowed_tokens

    @property
    def total_tokens(self) -> int:
        return int(self._tokens.total_tokens)

    def take(self, owner: object) -> bool:
        """Take a slot for `owner`, evicting an idle client when none is free; False if refused."""
        try:
            self._tokens.acquire_on_behalf_of_nowait(owner)
            return True
        except trio.WouldBlock:
            pass
        idle = [(since, id(client), client) for client in self.yieldable if (since := client.idle_since()) is not None]
        if not idle:
            return False
        min(idle)[2].evict()
        self._tokens.acquire_on_behalf_of_nowait(owner)
        return True

    def release(self, owner: object) -> None:
        self._tokens.release_on_behalf_of(owner)


class Overloaded(RpcError):
    def __init__(self, retry_after_s: float):
        super().__init__(OVERLOADED, "Server overloaded", {"retry_after_s": retry_after_s})


class Limits:
    """The daemon's limiters: one global, one per connection, one per provider."""

    def __init__(self, *, global_max: int, session_max: int, max_queued: int, provider_max: dict[str, int]):
        self.global_slots = trio.CapacityLimiter(global_max)
        self.session_max = session_max
        self.max_queued = max_queued
        self.providers = {name: trio.CapacityLimiter(n) for name, n in provider_max.items()}
        self.sessions: dict[str, trio.CapacityLimiter] = {}
        self.clients: dict[str, tuple[trio.CapacityLimiter, int]] = {}  # modern HTTP: (slots, users)
        self.queued = 0
        # Rolling mean of a call's slot time, to tell refused callers when to come back.
        self._mean_call_s = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            global_max=settings.global_max_inflight,
            session_max=settings.session_max_inflight,
            max_queued=settings.max_queued,
            provider_max={"kimi": settings.kimi_max_inflight, "glm": settings.glm_max_inflight},
        )

    @asynccontextmanager
    async def session(self, connection_id: str) -> AsyncIterator[trio.CapacityLimiter]:
        """A per-connection limiter, listed in statistics while the connection lives."""
        limiter = trio.CapacityLimiter(self.session_max)
        self.sessions[connection_id] = limiter
        try:
            yield limiter
        finally:
            del self.sessions[connection_id]

    @asynccontextmanager
    async def client(self, key: str) -> AsyncIterator[trio.CapacityLimiter]:
        """The limiter of one modern HTTP client (`client:<key>`), shared by its requests in
        flight; listed in statistics while any of them lives."""
        limiter, users = self.clients.get(key, (None, 0))
        if limiter is None:
            limiter = trio.CapacityLimiter(self.session_max)
        self.clients[key] = (limiter, users + 1)
        try:
            yield limiter
        finally:
            limiter, users = self.clients[key]
            if users == 1:
                del self.clients[key]
            else:
                self.clients[key] = (limiter, users - 1)

    def admit(self, session_slots: trio.CapacityLimiter) -> _Admission:
        """`async with`: hold a session and a global slot for the body; wait in the queue if
        none is free.

        The session slot is taken first: a call waiting for its own connection's slot must
        not sit on a global one meanwhile, or one busy connection starves all the others.
        Raises Overloaded at once when the call would have to wait and the queue is full.
        Both slots are released on every exit path, cancellation included.
        """
        return _Admission(self, session_slots)

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: the queue drained at the current pace."""
        backlog = (self.queued + 1) / max(1, self.global_slots.total_tokens)
        return float(max(1, math.ceil(backlog * self._mean_call_s)))

    def all_limiters(self) -> dict[str, trio.CapacityLimiter]:
        named = {"global": self.global_slots, **self.providers}
        # list() copies in one step, so the monitor's thread may call this while sessions change.
        named.update({f"session:{cid}": lim for cid, lim in list(self.sessions.items())})
        named.update({f"client:{key}": lim for key, (lim, _) in list(self.clients.items())})
        return named

    def statistics(self) -> dict[str, dict[str, int]]:
        """Snapshot for /api/status: {name: {borrowed, total, waiting}}."""
        out = {}
        for name, limiter in self.all_limiters().items():
            stats = limiter.statistics()
            out[name] = {
                "borrowed": stats.borrowed_tokens,
                "total": int(stats.total_tokens),
                "waiting": stats.tasks_waiting,
            }
        return out

    def borrowed_total(self) -> int:
        return sum(lim.borrowed_tokens for lim in self.all_limiters().values())


class _Admission:
    """One call's hold on its session and global slots (a class, not a generator: it wraps
    every call)."""

    __slots__ = ("_limits", "_session_slots", "_started")

    def __init__(self, limits: Limits, session_slots: trio.CapacityLimiter):
        self._limits = limits
        self._session_slots = session_slots
        self._started = 0.0

    async def __aenter__(self) -> None:
        limits, session_slots = self._limits, self._session_slots
        must_wait = limits.global_slots.available_tokens < 1 or session_slots.available_tokens < 1
        if must_wait and limits.queued >= limits.max_queued:
            raise Overloaded(limits.retry_after())
        if must_wait:
            limits.queued += 1
        try:
            await take_slot(session_slots)
            try:
                await take_slot(limits.global_slots)
            except BaseException:
                session_slots.release()
                raise
        finally:
            if must_wait:
                limits.queued -= 1
        self._started = trio.current_time()

    async def __aexit__(self, *exc_info: object) -> None:
        limits = self._limits
        took = trio.current_time() - self._started
        limits._mean_call_s = 0.9 * limits._mean_call_s + 0.1 * took
        limits.global_slots.release()
        self._session_slots.release()
