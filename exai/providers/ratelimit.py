"""A request-rate ceiling per provider (EXAI_KIMI_RPM / EXAI_GLM_RPM).

A token bucket kept as a schedule (GCRA): each request books the next free send time, so
waiters go in arrival order and a caller knows at once whether its turn comes before its
deadline. The bucket holds one second's worth of requests (at least one), so a burst never
exceeds the per-minute rate by more than that.
"""

from __future__ import annotations

import math

import trio

from exai.providers.base import ErrorKind, ProviderError


class RequestRateLimiter:
    def __init__(self, provider: str, rpm: int, *, env_var: str):
        if rpm <= 0:
            raise ValueError("rpm must be positive")
        self.provider = provider
        self.rpm = rpm
        self.env_var = env_var
        self.interval_s = 60.0 / rpm
        self.burst = max(1, rpm // 60)
        self._next_free = -math.inf  # theoretical arrival time of the next request
        self.waiting = 0  # callers sleeping until their booked turn

    async def wait_turn(self, deadline: float) -> None:
        """Sleep until this request may be sent.

        Raises ProviderError(kind="rate_limited") at once, without booking, when the turn
        would come after `deadline`. A cancelled waiter's booked turn is not given back
        (the ceiling errs on the side of sending less).
        """
        now = trio.current_time()
        booked = max(self._next_free, now)
        send_at = max(now, booked - (self.burst - 1) * self.interval_s)
        if send_at > deadline:
            raise ProviderError(
                self.provider,
                ErrorKind.RATE_LIMITED,
                f"{self.provider} requests are limited to {self.rpm} per minute ({self.env_var}); "
                f"this call would have to wait {send_at - now:.1f} s and only "
                f"{max(0.0, deadline - now):.1f} s were left before its deadline. "
                f"Try again shortly, or raise {self.env_var} if your provider plan allows more.",
            )
        self._next_free = booked + self.interval_s
        self.waiting += 1
        try:
            await trio.sleep_until(send_at)
        finally:
            self.waiting -= 1
