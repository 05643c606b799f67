"""When a provider's next request may go: a request-rate ceiling (EXAI_KIMI_RPM / EXAI_GLM_RPM)
and the provider's own rate headers.

The ceiling is a token bucket kept as a schedule (GCRA): each request books the next free send
time, so waiters go in arrival order and a caller knows at once whether its turn comes before
its deadline. The bucket holds one second's worth of requests (at least one), so a burst never
exceeds the per-minute rate by more than that. A hold (X-RateLimit-Remaining: 0 with
X-RateLimit-Reset) keeps every request back until the provider's window resets.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import trio

from exai.providers.base import ErrorKind, ProviderError


class RequestRateLimiter:
    def __init__(self, provider: str, rpm: int | None, *, env_var: str):
        if rpm is not None and rpm <= 0:
            raise ValueError("rpm must be positive")
        self.provider = provider
        self.rpm = rpm  # None: no ceiling, only the provider's holds
        self.env_var = env_var
        self.interval_s = 0.0 if rpm is None else 60.0 / rpm
        self.burst = 1 if rpm is None else max(1, rpm // 60)
        self._next_free = -math.inf  # theoretical arrival time of the next request
        self.held_until = -math.inf  # the provider asked for no request before this time
        self.waiting = 0  # callers sleeping until their booked turn

    def hold_for(self, seconds: float) -> None:
        """The provider's rate headers ask for no request in the next `seconds`."""
        self.held_until = max(self.held_until, trio.current_time() + seconds)

    async def wait_turn(self, deadline: float) -> None:
        """Sleep until this request may be sent (at once, without a checkpoint, when it may go now).

        Raises ProviderError(kind="rate_limited") at once, without booking, when the turn
        would come after `deadline`. A cancelled waiter's booked turn is not given back
        (the ceiling errs on the side of sending less).
        """
        now = trio.current_time()
        booked = max(self._next_free, now)
        send_at = max(now, booked - (self.burst - 1) * self.interval_s, self.held_until)
        if send_at > deadline:
            raise self._too_late(send_at, now, deadline)
        self._next_free = booked + self.interval_s
        await self._sleep_until(send_at, now)

    def _too_late(self, send_at: float, now: float, deadline: float) -> ProviderError:
        """The error of a turn at `send_at` that comes after the caller's `deadline`."""
        left = max(0.0, deadline - now)
        if send_at == self.held_until:
            because = (
                f"{self.provider} said its request window is used up (X-RateLimit-Remaining: 0) "
                f"and resets in {send_at - now:.1f} s"
            )
            action = "Try again after the reset, or lower the request rate"
        else:
            because = (
                f"{self.provider} requests are limited to {self.rpm} per minute ({self.env_var}); "
                f"this call would have to wait {send_at - now:.1f} s"
            )
            action = f"Try again shortly, or raise {self.env_var} if your provider plan allows more"
        return ProviderError(
            self.provider,
            ErrorKind.RATE_LIMITED,
            f"{because} and only {left:.1f} s were left before this call's deadline. {action}.",
        )

    async def _sleep_until(self, send_at: float, now: float) -> None:
        if send_at <= now:
            return  # a turn free now is taken without a task switch (the caller checkpoints next)
        self.waiting += 1
        try:
            await trio.sleep_until(send_at)
        finally:
            self.waiting -= 1


# Book the provider's next turn in the whole deployment: (interval_s, burst, within_s) ->
# (booked, seconds from now until the turn); nothing is booked when the turn comes later than
# within_s. One round trip to the shared store (exai.store.redis).
BookTurn: TypeAlias = Callable[[float, int, float], Awaitable[tuple[bool, float]]]


class SharedRequestRateLimiter(RequestRateLimiter):
    """The same ceiling for every replica of a deployment: the schedule lives in the shared
    store (`book`), the provider's holds stay this replica's own. A cancelled caller's booked
    turn is not given back, as for one daemon."""

    def __init__(self, provider: str, rpm: int, *, env_var: str, book: BookTurn):
        super().__init__(provider, rpm, env_var=env_var)
        self._book = book

    async def wait_turn(self, deadline: float) -> None:
        now = trio.current_time()
        if self.held_until > deadline:
            raise self._too_late(self.held_until, now, deadline)
        booked, wait = await self._book(self.interval_s, self.burst, max(0.0, deadline - now))
        if not booked:
            raise self._too_late(now + wait, now, deadline)
        now = trio.current_time()
        await self._sleep_until(max(now + wait, self.held_until), now)
