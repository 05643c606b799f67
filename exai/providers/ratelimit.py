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
            raise ProviderError(
                self.provider,
                ErrorKind.RATE_LIMITED,
                f"{because} and only {left:.1f} s were left before this call's deadline. {action}.",
            )
        self._next_free = booked + self.interval_s
        if send_at <= now:
            return  # a turn free now is taken without a task switch (the caller checkpoints next)
        self.waiting += 1
        try:
            await trio.sleep_until(send_at)
        finally:
            self.waiting -= 1
