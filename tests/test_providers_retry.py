"""The retry policy as pure functions: which statuses, Retry-After in both forms, jitter bounds."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from exai.providers.retry import (
    BACKOFF_CAP_S,
    RETRY_AFTER_CAP_S,
    backoff_bound,
    full_jitter,
    is_retryable_status,
    parse_retry_after,
    retry_wait,
    too_late_message,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_statuses_never_retried(status: int) -> None:
    assert not is_retryable_status(status)


def test_retry_after_seconds() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("0") == 0.0


def test_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW + 12, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=NOW) == pytest.approx(12.0)


def test_retry_after_date_in_the_past_means_now() -> None:
    when = datetime.fromtimestamp(NOW - 30, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=NOW) == 0.0


def test_retry_after_is_capped() -> None:
    assert parse_retry_after("3600") == RETRY_AFTER_CAP_S
    when = datetime.fromtimestamp(NOW + 600, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=NOW) == RETRY_AFTER_CAP_S


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "Mon, 99 Foo 2024"])
def test_retry_after_unreadable_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_negative_retry_after_means_now() -> None:
    assert parse_retry_after("-5") == 0.0


def test_backoff_bound_doubles_from_half_a_second_up_to_the_cap() -> None:
    assert [backoff_bound(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, BACKOFF_CAP_S]


def test_full_jitter_stays_within_bounds_and_spreads() -> None:
    rng = random.Random(7)
    for index in range(6):
        samples = [full_jitter(index, rng) for _ in range(2000)]
        assert min(samples) >= 0.0
        assert max(samples) <= backoff_bound(index)
        # Full jitter covers the whole range, not a point: both halves are used.
        assert min(samples) < backoff_bound(index) * 0.1
        assert max(samples) > backoff_bound(index) * 0.9


def test_retry_wait_without_retry_after_is_full_jitter() -> None:
    rng = random.Random(1)
    waits = [retry_wait(2, None, 100.0, rng) for _ in range(500)]
    assert all(0.0 <= w <= 2.0 for w in waits)


def test_retry_wait_honours_retry_after_and_adds_jitter() -> None:
    rng = random.Random(2)
    waits = [retry_wait(0, 1.0, 100.0, rng) for _ in range(500)]
    assert all(1.0 <= w <= 1.5 for w in waits)
    assert max(waits) - min(waits) > 0.4  # spread, so a herd does not come back at once


def test_retry_wait_trims_jitter_to_keep_half_the_slack() -> None:
    rng = random.Random(3)
    waits = [retry_wait(3, 1.0, 1.2, rng) for _ in range(200)]
    assert all(1.0 <= w <= 1.1 for w in waits)


def test_retry_wait_when_retry_after_does_not_fit_returns_it_for_the_caller_to_refuse() -> None:
    assert retry_wait(0, 5.0, 2.0, random.Random(4)) == 5.0


def test_too_late_messages_say_how_long_and_how_much_was_left() -> None:
    asked = too_late_message("kimi", 30.0, 30.0, 4.24)
    assert "asked to wait 30.0 s and only 4.2 s were left" in asked
    assert "EXAI_KIMI_RPM" in asked
    backoff = too_late_message("glm", None, 3.0, 1.0)
    assert "next retry would start in 3.0 s, but only 1.0 s were left" in backoff
