"""When to retry a provider request and how long to wait first. Pure functions, no I/O."""

from __future__ import annotations

import random
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

BACKOFF_BASE_S: Final = 0.5
BACKOFF_CAP_S: Final = 8.0
RETRY_AFTER_CAP_S: Final = 60.0

RETRYABLE_STATUSES: Final = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """429, 408, 409 and every 5xx are worth another try; other 4xx never are."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def backoff_bound(retry_index: int) -> float:
    """The upper bound of the full-jitter wait before retry number `retry_index` (0-based)."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**retry_index)


def full_jitter(retry_index: int, rng: random.Random) -> float:
    """A uniformly random wait in [0, backoff_bound(retry_index)]."""
    return rng.uniform(0.0, backoff_bound(retry_index))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or HTTP-date), capped at 60 s.

    None when the header is absent or unreadable; a date in the past gives 0.
    `now` is the wall-clock time (default `time.time()`), for the date form.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(RETRY_AFTER_CAP_S, max(0.0, seconds))


def retry_wait(retry_index: int, retry_after: float | None, left: float, rng: random.Random) -> float:
    """How long to sleep before the next attempt, given `left` seconds before the deadline.

    Without Retry-After: full jitter. With it: the asked wait plus full jitter, so that many
    calls refused at the same moment do not all come back at the same moment; the jitter is
    trimmed so the retry keeps at least half of the slack the deadline leaves.
    The caller still checks the result against `left` and gives up when it does not fit.
    """
    jitter = full_jitter(retry_index, rng)
    if retry_after is None:
        return jitter
    slack = max(0.0, left - retry_after)
    return retry_after + min(jitter, slack / 2)


def too_late_message(provider: str, retry_after: float | None, wait: float, left: float) -> str:
    """The sentence for a retry that would start after the call's deadline."""
    if retry_after is not None:
        return (
            f"{provider} is rate limiting or busy: the provider asked to wait {retry_after:.1f} s "
            f"and only {max(0.0, left):.1f} s were left before this call's deadline. "
            "Try again later, give the call a longer timeout, or lower the request rate "
            f"(EXAI_{provider.upper()}_RPM)."
        )
    return (
        f"{provider} failed and the next retry would start in {wait:.1f} s, but only "
        f"{max(0.0, left):.1f} s were left before this call's deadline. "
        "Try again later or give the call a longer timeout."
    )
