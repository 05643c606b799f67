"""What the daemon did over the last 15 minutes, second by second, and its recent failures.

A ring of SECONDS per-second slots, allocated once: memory does not grow with traffic.
Every per-second map is keyed by a small fixed set (outcomes, cancel reasons, providers,
error kinds) and latencies go into fixed logarithmic buckets, so a slot is bounded too.

Calls are recorded from the daemon's event loop; the monitor reads from its own thread.
Both go through one lock held for a few dictionary updates, never across an await.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

SECONDS: Final = 900  # 15 minutes of one-second slots
RECENT_FAILURES: Final = 50
WINDOW_S: Final = 60  # the "last minute" summary
MESSAGE_CHARS: Final = 2000  # a failure's message is kept up to this length

# Latency buckets: 1 ms * 2**(i/4), i.e. about 19% wide, up to about 18 minutes; one overflow.
_BUCKET_BASE_S: Final = 0.001
_BUCKETS_PER_DOUBLING: Final = 4
_BUCKETS: Final = 80

# Outcomes that count as failures (a client's own cancellation or disconnect does not).
FAILURE_OUTCOMES: Final = frozenset(
    {"tool_error", "error", "overloaded", "cancelled_deadline", "cancelled_shutdown"}
)


def bucket_of(seconds: float) -> int:
    if seconds <= _BUCKET_BASE_S:
        return 0
    index = math.ceil(math.log2(seconds / _BUCKET_BASE_S) * _BUCKETS_PER_DOUBLING)
    return min(index, _BUCKETS)


def bucket_upper(index: int) -> float:
    return float(_BUCKET_BASE_S * 2 ** (index / _BUCKETS_PER_DOUBLING))


def quantile(buckets: dict[int, int], q: float) -> float | None:
    """The q-quantile of the latencies in `buckets` (upper bound of its bucket), None if empty."""
    total = sum(buckets.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return round(bucket_upper(index), 4)
    return round(bucket_upper(max(buckets)), 4)


class _Slot:
    """One second. Reused in place when the ring comes round again."""

    __slots__ = (
        "cancelled",
        "finished",
        "inflight",
        "latency",
        "provider_error_kinds",
        "provider_errors",
        "provider_requests",
        "queued",
        "second",
        "started",
    )

    def __init__(self) -> None:
        self.second = -1
        self.started = 0
        self.finished: dict[str, int] = {}
        self.cancelled: dict[str, int] = {}
        self.latency: dict[int, int] = {}
        self.provider_requests: dict[str, int] = {}
        self.provider_errors: dict[str, int] = {}
        self.provider_error_kinds: dict[str, int] = {}
        self.inflight: int | None = None
        self.queued: int | None = None

    def reset(self, second: int) -> None:
        self.second = second
        self.started = 0
        self.finished.clear()
        self.cancelled.clear()
        self.latency.clear()
        self.provider_requests.clear()
        self.provider_errors.clear()
        self.provider_error_kinds.clear()
        self.inflight = None
        self.queued = None

    def row(self) -> dict[str, Any]:
        return {
            "t": self.second,
            "started": self.started,
            "finished": dict(self.finished),
            "cancelled": dict(self.cancelled),
            "latency_p50_s": quantile(self.latency, 0.5),
            "latency_p95_s": quantile(self.latency, 0.95),
            "provider_requests": dict(self.provider_requests),
            "provider_errors": dict(self.provider_errors),
            "provider_error_kinds": dict(self.provider_error_kinds),
            "inflight": self.inflight,
            "queued": self.queued,
        }


def _empty_row(second: int) -> dict[str, Any]:
    return {
        "t": second, "started": 0, "finished": {}, "cancelled": {}, "latency_p50_s": None,
        "latency_p95_s": None, "provider_requests": {}, "provider_errors": {},
        "provider_error_kinds": {}, "inflight": None, "queued": None,
    }


def _add(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


class History:
    """The last SECONDS seconds of calls, provider requests and load; the last failures."""

    def __init__(self, *, seconds: int = SECONDS, clock: Callable[[], float] = time.time):
        self.seconds = seconds
        self._clock = clock
        self._slots = [_Slot() for _ in range(seconds)]
        self._current: _Slot | None = None
        # Rows of past seconds, built once when their second ends (at most `seconds` of them).
        self._final: dict[int, dict[str, Any]] = {}
        self._failures: deque[dict[str, Any]] = deque(maxlen=RECENT_FAILURES)
        self._lock = threading.Lock()
        self._provider_seen: dict[str, tuple[int, dict[str, int]]] = {}
        self.started = int(clock())
        # Conversation threads stored, as the monitor's heartbeat last counted them (None: unknown).
        self.threads: int | None = None

    def _slot(self, now: float) -> _Slot:
        """The slot of `now`'s second (the lock held); a second that has ended is frozen into
        its row here, so readers never rebuild the past."""
        second = int(now)
        current = self._current
        if current is not None and current.second == second:
            return current
        if current is not None and current.second < second:
            self._final[current.second] = current.row()
            oldest = second - self.seconds + 1
            while self._final and next(iter(self._final)) < oldest:
                del self._final[next(iter(self._final))]
        slot = self._slots[second % self.seconds]
        if slot.second != second:
            slot.reset(second)
        self._current = slot
        return slot

    # -- recording (the daemon's loop) --------------------------------------------------

    def call_started(self) -> None:
        with self._lock:
            self._slot(self._clock()).started += 1

    def call_finished(
        self,
        *,
        connection: str,
        request_id: Any,
        tool: str,
        outcome: str,
        took_s: float,
        response: dict[str, Any] | None,
    ) -> None:
        """One call ended; a failure is kept with the message and error id its client got."""
        failure = None
        now = self._clock()
        if outcome in FAILURE_OUTCOMES:
            message, code, error_id = _what_the_client_saw(response)
            failure = {
                "time": round(now, 3),
                "connection": connection,
                "id": request_id,
                "tool": tool,
                "outcome": outcome,
                "took_s": round(took_s, 3),
                "code": code,
                "message": message,
                "error_id": error_id,
            }
        with self._lock:
            slot = self._slot(self._clock())  # read under the lock: a frozen second stays frozen
            _add(slot.finished, outcome)
            if outcome.startswith("cancelled_"):
                _add(slot.cancelled, outcome.removeprefix("cancelled_"))
            bucket = bucket_of(took_s)
            slot.latency[bucket] = slot.latency.get(bucket, 0) + 1
            if failure is not None:
                self._failures.append(failure)

    def sample(self, *, inflight: int, queued: int, providers: dict[str, dict[str, Any]]) -> None:
        """Called a few times a second: load gauges (the second's maximum) and provider
        requests and errors since the previous sample, from the gateway's running totals."""
        with self._lock:
            slot = self._slot(self._clock())
            slot.inflight = max(slot.inflight or 0, inflight)
            slot.queued = max(slot.queued or 0, queued)
            for name, stats in providers.items():
                calls = int(stats.get("calls_total", 0))
                kinds = dict(stats.get("errors_by_kind") or {})
                seen_calls, seen_kinds = self._provider_seen.get(name, (calls, kinds))
                self._provider_seen[name] = (calls, kinds)
                if calls > seen_calls:
                    _add(slot.provider_requests, name, calls - seen_calls)
                for kind, count in kinds.items():
                    new = count - seen_kinds.get(kind, 0)
                    if new > 0:
                        _add(slot.provider_errors, name, new)
                        _add(slot.provider_error_kinds, kind, new)

    # -- reading (any thread) -----------------------------------------------------------

    def snapshot(self, since: int | None = None) -> dict[str, Any]:
        """The /api/history document: one row per second (oldest first), from `since` when
        given, else the whole window; the last minute summed; the recent failures, newest first."""
        with self._lock:
            now = self._clock()
            current = int(now)
            first = max(current - self.seconds + 1, self.started)
            if since is not None:
                first = max(first, since)
            rows = [self._row(second) for second in range(first, current + 1)]
            minute = self._window(range(max(current - WINDOW_S + 1, self.started), current + 1))
            failures = list(reversed(self._failures))
        return {
            "now": round(now, 3),
            "seconds": self.seconds,
            "series": rows,
            "last_minute": minute,
            "failures": failures,
        }

    def _row(self, second: int) -> dict[str, Any]:
        final = self._final.get(second)
        if final is not None:
            return final
        slot = self._slots[second % self.seconds]
        return slot.row() if slot.second == second else _empty_row(second)

    def _window(self, seconds: Iterable[int]) -> dict[str, Any]:
        started = 0
        finished: dict[str, int] = {}
        latency: dict[int, int] = {}
        count = 0
        for second in seconds:
            count += 1
            slot = self._slots[second % self.seconds]
            if slot.second != second:
                continue
            started += slot.started
            for outcome, n in slot.finished.items():
                _add(finished, outcome, n)
            for bucket, n in slot.latency.items():
                latency[bucket] = latency.get(bucket, 0) + n
        return {
            "seconds": count,
            "started": started,
            "finished": finished,
            "latency_p50_s": quantile(latency, 0.5),
            "latency_p95_s": quantile(latency, 0.95),
        }

    def slots_in_use(self) -> int:
        """How many slot objects exist (constant: the ring never grows)."""
        return len(self._slots)


def _what_the_client_saw(response: dict[str, Any] | None) -> tuple[str, int | None, str | None]:
    """(message, JSON-RPC error code or None, error id or None) of a response."""
    if response is None:
        return "no response (the call was cancelled)", None, None
    error = response.get("error")
    if isinstance(error, dict):
        data = error.get("data")
        error_id = data.get("error_id") if isinstance(data, dict) else None
        return _trim(str(error.get("message", ""))), error.get("code"), error_id
    result = response.get("result") or {}
    texts = [part.get("text", "") for part in result.get("content", []) if isinstance(part, dict)]
    return _trim("\n".join(texts)), None, None


def _trim(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"
