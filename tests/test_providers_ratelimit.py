"""The request-rate ceiling (EXAI_*_RPM) on its own, under `autojump_clock`."""

from __future__ import annotations

import pytest
import trio

from exai.providers.base import ProviderError
from exai.providers.ratelimit import RequestRateLimiter


async def test_rate_limiter_spaces_requests_evenly(autojump_clock: trio.abc.Clock) -> None:
    limiter = RequestRateLimiter("kimi", 30, env_var="EXAI_KIMI_RPM")  # one every 2 s
    start = trio.current_time()
    sent: list[float] = []

    async def one() -> None:
        await limiter.wait_turn(start + 100)
        sent.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(one)
    assert sent == [0.0, 2.0, 4.0, 6.0]


async def test_rate_limiter_allows_a_one_second_burst(autojump_clock: trio.abc.Clock) -> None:
    limiter = RequestRateLimiter("glm", 600, env_var="EXAI_GLM_RPM")  # 10/s, burst 10
    start = trio.current_time()
    for _ in range(10):
        await limiter.wait_turn(start + 100)
    assert trio.current_time() == start
    await limiter.wait_turn(start + 100)
    assert trio.current_time() - start == pytest.approx(0.1)


async def test_rate_limiter_refuses_at_once_when_the_turn_is_past_the_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    limiter = RequestRateLimiter("kimi", 6, env_var="EXAI_KIMI_RPM")  # one every 10 s
    start = trio.current_time()
    await limiter.wait_turn(start + 100)
    with pytest.raises(ProviderError) as refused:
        await limiter.wait_turn(start + 5)
    assert trio.current_time() == start  # no waiting before refusing
    assert refused.value.kind == "rate_limited"
    assert "wait 10.0 s and only 5.0 s were left" in str(refused.value)
    assert "EXAI_KIMI_RPM" in str(refused.value)
    # The refused call booked nothing: the next turn is still 10 s after the first.
    await limiter.wait_turn(start + 100)
    assert trio.current_time() - start == pytest.approx(10.0)


async def test_rate_limiter_rejects_a_nonpositive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        RequestRateLimiter("kimi", 0, env_var="EXAI_KIMI_RPM")
