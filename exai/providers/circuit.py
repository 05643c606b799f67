"""A circuit breaker per provider: stop sending requests to a provider that keeps failing.

closed -> (N consecutive retryable failures: 5xx, 408, 409, timeouts, broken connections;
not 429, which is the provider pacing us) -> open -> (cooldown) -> half_open: one probe
request goes through; its success closes the circuit, its failure opens it again.
An auth failure (401/403) makes the provider `misconfigured` until the daemon restarts.
"""

from __future__ import annotations

from typing import Any, Final

import trio

from exai.providers.base import ErrorKind, ProviderError
from exai.providers.catalog import PROVIDER_INFO

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
MISCONFIGURED: Final = "misconfigured"


class CircuitBreaker:
    """State is read from `trio.current_time()`; nothing here sleeps or spawns tasks."""

    def __init__(self, provider: str, *, failures: int, cooldown_s: float):
        self.provider = provider
        self.failure_threshold = failures
        self.cooldown_s = cooldown_s
        self.consecutive_failures = 0
        self._open = False
        self._opened_at = 0.0
        self._probe_inflight = False
        self._last_failure = ""
        self._auth_message: str | None = None

    @property
    def state(self) -> str:
        if self._auth_message is not None:
            return MISCONFIGURED
        if not self._open:
            return CLOSED
        if trio.current_time() >= self._opened_at + self.cooldown_s:
            return HALF_OPEN
        return OPEN

    def probe_in_s(self) -> float | None:
        """Seconds until an open circuit lets a probe request through; None unless open."""
        if self.state != OPEN:
            return None
        return round(max(0.0, self._opened_at + self.cooldown_s - trio.current_time()), 3)

    def open_for(self) -> tuple[float, str, int] | None:
        """(seconds it stays open, the last failure, failures in a row) while open; else None.
        What a replica tells the others (exai.monitor.watch_store)."""
        left = self.probe_in_s()
        return None if left is None else (left, self._last_failure, self.consecutive_failures)

    def open_elsewhere(self, seconds: float, reason: str, failures: int) -> None:
        """Another replica has this provider's circuit open for `seconds` more: refuse here
        too until then, then probe as after an opening here. Never shortens an opening."""
        if self._auth_message is not None:
            return
        until = trio.current_time() + seconds
        if self._open and self._opened_at + self.cooldown_s >= until:
            return
        self._open = True
        self._opened_at = until - self.cooldown_s
        self._last_failure = reason
        self.consecutive_failures = max(self.consecutive_failures, failures)

    @property
    def probes_inflight(self) -> int:
        """Half-open probe requests running now: 0 or 1."""
        return int(self._probe_inflight)

    def admits(self) -> bool:
        """Would a request be let through now (without taking the probe slot)?"""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self._probe_inflight)

    def check(self) -> None:
        """Raise the error a call gets at once when the circuit refuses it."""
        if self._auth_message is not None:
            raise ProviderError(self.provider, ErrorKind.AUTH, self._auth_message)
        if not self.admits():
            raise self._open_error()

    def attempt(self) -> _Attempt:
        """`with`: let one request through, or raise at once; judge the provider by how the
        body ends.

        A ProviderError that `fails_circuit` (every retryable one, and the vendors' account and
        plan answers) counts as a failure, an auth error marks the provider misconfigured, a
        rate limit (429) is no verdict, any other answer proves the provider is up. A cancelled or otherwise
        interrupted request is no verdict; it only gives the probe slot back.
        """
        self.check()
        probe = self.state == HALF_OPEN
        if probe:
            self._probe_inflight = True
        return _Attempt(self, probe)

    def _judge(self, exc: BaseException | None, probe: bool) -> None:
        try:
            if exc is None:
                self._record_success()
            elif isinstance(exc, ProviderError):
                if exc.kind == "auth":
                    self._auth_message = str(exc)
                elif exc.kind == "rate_limited":
                    pass  # the provider is up and pacing us: Retry-After handles it, not the circuit
                elif exc.fails_circuit:
                    self._record_failure(str(exc), probe)
                else:
                    self._record_success()
        finally:
            if probe:
                self._probe_inflight = False

    def _record_success(self) -> None:
        self.consecutive_failures = 0
        self._open = False

    def _record_failure(self, reason: str, probe: bool) -> None:
        self.consecutive_failures += 1
        self._last_failure = reason
        if probe or (not self._open and self.consecutive_failures >= self.failure_threshold):
            self._open = True
            self._opened_at = trio.current_time()

    def _open_error(self) -> ProviderError:
        label = PROVIDER_INFO[self.provider].label if self.provider in PROVIDER_INFO else self.provider
        if self.state == HALF_OPEN:
            wait = "a probe request is testing it now"
        else:
            left = self._opened_at + self.cooldown_s - trio.current_time()
            wait = f"exai tries it again in {max(0.0, left):.0f} s"
        return ProviderError(
            self.provider,
            ErrorKind.CIRCUIT_OPEN,
            f"{label} is failing ({self.consecutive_failures} failures in a row; last: "
            f"{self._last_failure}), so exai stopped sending it requests for now ({wait}, "
            "EXAI_CIRCUIT_COOLDOWN_SECS). Try again shortly or use a model of the other provider.",
        )


class _Attempt:
    """One request through a circuit (a class, not a generator: it wraps every attempt)."""

    __slots__ = ("_circuit", "_probe")

    def __init__(self, circuit: CircuitBreaker, probe: bool):
        self._circuit = circuit
        self._probe = probe

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._circuit._judge(exc, self._probe)
