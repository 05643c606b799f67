"""The circuit breaker on its own, under `autojump_clock`."""

from __future__ import annotations

import pytest
import trio

from exai.providers.base import ProviderError
from exai.providers.circuit import CLOSED, HALF_OPEN, MISCONFIGURED, OPEN, CircuitBreaker


def failure(retryable: bool = True, kind: str = "unavailable") -> ProviderError:
    return ProviderError("kimi", kind, "HTTP 503: down", retryable=retryable)


def fail(circuit: CircuitBreaker, exc: ProviderError) -> None:
    with pytest.raises(ProviderError), circuit.attempt():
        raise exc


async def test_opens_after_n_consecutive_retryable_failures(autojump_clock: trio.abc.Clock) -> None:
    circuit = CircuitBreaker("kimi", failures=3, cooldown_s=30)
    for _ in range(2):
        fail(circuit, failure())
    assert circuit.state == CLOSED
    fail(circuit, failure())
    assert circuit.state == OPEN
    with pytest.raises(ProviderError) as refused:
        circuit.check()
    assert refused.value.kind == "circuit_open"
    assert "3 failures in a row" in str(refused.value)
    assert "HTTP 503: down" in str(refused.value)
    assert "tries it again in 30 s" in str(refused.value)


async def test_a_success_resets_the_count(autojump_clock: trio.abc.Clock) -> None:
    circuit = CircuitBreaker("kimi", failures=2, cooldown_s=30)
    fail(circuit, failure())
    with circuit.attempt():
        pass
    fail(circuit, failure())
    assert circuit.state == CLOSED


async def test_non_retryable_answers_prove_the_provider_is_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    circuit = CircuitBreaker("kimi", failures=2, cooldown_s=30)
    fail(circuit, failure())
    fail(circuit, failure(retryable=False, kind="bad_request"))
    fail(circuit, failure())
    assert circuit.state == CLOSED


async def test_rate_limiting_is_no_verdict(autojump_clock: trio.abc.Clock) -> None:
    circuit = CircuitBreaker("kimi", failures=2, cooldown_s=30)
    fail(circuit, failure())
    for _ in range(10):
        fail(circuit, failure(kind="rate_limited"))
    assert (circuit.state, circuit.consecutive_failures) == (CLOSED, 1)
    fail(circuit, failure())
    assert circuit.state == OPEN


async def test_half_open_lets_one_probe_through_and_success_closes(
    autojump_clock: trio.abc.Clock,
) -> None:
    circuit = CircuitBreaker("kimi", failures=1, cooldown_s=10)
    fail(circuit, failure())
    await trio.sleep(9.9)
    assert circuit.state == OPEN
    await trio.sleep(0.1)
    assert circuit.state == HALF_OPEN
    with circuit.attempt():
        assert not circuit.admits()  # the probe is in flight: nobody else
        with pytest.raises(ProviderError) as refused:
            circuit.check()
        assert "probe request is testing it now" in str(refused.value)
    assert circuit.state == CLOSED


async def test_a_failed_probe_reopens_for_a_full_cooldown(autojump_clock: trio.abc.Clock) -> None:
    circuit = CircuitBreaker("kimi", failures=5, cooldown_s=10)
    for _ in range(5):
        fail(circuit, failure())
    await trio.sleep(10)
    fail(circuit, failure())
    assert circuit.state == OPEN
    await trio.sleep(9)
    assert circuit.state == OPEN
    await trio.sleep(1)
    assert circuit.state == HALF_OPEN


async def test_a_cancelled_probe_gives_the_slot_back_without_a_verdict(
    autojump_clock: trio.abc.Clock,
) -> None:
    circuit = CircuitBreaker("kimi", failures=1, cooldown_s=10)
    fail(circuit, failure())
    await trio.sleep(10)
    with trio.move_on_after(1):
        with circuit.attempt():
            await trio.sleep_forever()
    assert circuit.state == HALF_OPEN
    assert circuit.admits()


async def test_auth_failure_marks_misconfigured_until_restart(
    autojump_clock: trio.abc.Clock,
) -> None:
    circuit = CircuitBreaker("glm", failures=5, cooldown_s=1)
    fail(circuit, ProviderError("glm", "auth", "GLM rejected the API key. Fix GLM_API_KEY."))
    assert circuit.state == MISCONFIGURED
    await trio.sleep(3600)
    assert circuit.state == MISCONFIGURED
    with pytest.raises(ProviderError) as refused:
        circuit.check()
    assert refused.value.kind == "auth"
    assert "GLM_API_KEY" in str(refused.value)
