"""The gateway: routing, retries, deadlines, budgets, limiters, circuits, fallback, accounting.

Rules: no network (httpx.MockTransport with a scripted endpoint that runs in trio time);
every test about time runs under `autojump_clock`, so waits are exact and instant.
"""

from __future__ import annotations

import json
import random
import statistics as stats
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import trio
from loguru import logger
from providers_support import (
    FakeProvider,
    chunk,
    error,
    gateway,
    limiters,
    messages,
    ok,
    scripted,
    settings,
    sse,
    words_stream,
)

from exai import metrics
from exai.providers.base import BudgetExhausted, CallBudget, ProviderError
from exai.providers.gateway import DEMO_API_KEY, ModelGateway

KIMI = "kimi-k2-0905-preview"
GLM = "glm-4.6"


class UpperBound(random.Random):
    """Jitter always at its upper bound, for exact timing assertions."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowerBound(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


async def call(gw: ModelGateway, model: str | None = KIMI, *, budget: int = 10, **kwargs: Any) -> Any:
    return await gw.complete(model=model, messages=kwargs.pop("messages", messages()), budget=CallBudget(budget), **kwargs)


async def refused(gw: ModelGateway, model: str | None = KIMI, **kwargs: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call(gw, model, **kwargs)
    assert sum(p["inflight"] for p in gw.statistics().values()) == 0
    return caught.value


def metric(provider: str, model: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "exai_provider_requests_total", {"provider": provider, "model": model, "outcome": outcome}
    )
    return value or 0.0


# -- routing -----------------------------------------------------------------------------


def test_resolve_explicit_auto_and_default() -> None:
    gw = ModelGateway.from_settings(settings(), limiters())
    assert gw.resolve(GLM) == ("glm", GLM)
    assert gw.resolve(" GLM-4.5-Air ") == ("glm", "glm-4.5-air")
    assert gw.resolve("auto") == ("kimi", KIMI)
    assert gw.resolve(None) == ("kimi", KIMI)
    assert not gw.demo
    explicit_default = ModelGateway.from_settings(settings(default_model="glm-4.5"), limiters())
    assert explicit_default.resolve(None) == ("glm", "glm-4.5")
    assert explicit_default.resolve("") == ("glm", "glm-4.5")


def test_an_unknown_model_lists_the_allowed_ones() -> None:
    gw = ModelGateway.from_settings(settings(glm_allowed_models="glm-4.5-air"), limiters())
    with pytest.raises(ProviderError) as unknown:
        gw.resolve("gpt-4o")
    assert unknown.value.kind == "unknown_model"
    assert "Unknown model 'gpt-4o'" in str(unknown.value)
    assert "auto, kimi-k2-0905-preview" in str(unknown.value)
    assert "glm-4.5-air" in str(unknown.value)
    with pytest.raises(ProviderError) as disallowed:
        gw.resolve(GLM)
    assert disallowed.value.kind == "unknown_model"
    assert "not allowed by EXAI_GLM_ALLOWED_MODELS" in str(disallowed.value)
    assert "glm-4.6," not in str(disallowed.value)
    with pytest.raises(ProviderError) as simulated:
        gw.resolve("exai-sim")
    assert simulated.value.kind == "unknown_model"


def test_an_unconfigured_provider_names_its_key_and_auto_picks_the_other() -> None:
    gw = ModelGateway.from_settings(settings(kimi_api_key=None), limiters())
    with pytest.raises(ProviderError) as missing:
        gw.resolve(KIMI)
    assert missing.value.kind == "not_configured"
    assert "set KIMI_API_KEY" in str(missing.value)
    assert KIMI not in str(missing.value).split("Allowed models:")[1]
    assert gw.resolve("auto") == ("glm", GLM)
    assert gw.statistics()["kimi"]["circuit"] == "not_configured"


def test_no_provider_at_all_is_not_configured() -> None:
    gw = ModelGateway.from_settings(settings(kimi_api_key=None, glm_api_key=None), limiters())
    with pytest.raises(ProviderError) as missing:
        gw.resolve(None)
    assert missing.value.kind == "not_configured"
    assert "KIMI_API_KEY or GLM_API_KEY" in str(missing.value)
    assert "--demo" in str(missing.value)


async def test_demo_mode_routes_both_providers_and_exai_sim_to_the_simulator() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok("simulated")

    gw = ModelGateway.from_settings(
        settings(kimi_api_key=None, glm_api_key=None),
        limiters(),
        simulator_url="http://sim.test:9/v1",
        transport=httpx.MockTransport(handler),
    )
    assert gw.demo
    assert gw.resolve("auto") == ("kimi", "exai-sim")
    assert gw.resolve(GLM) == ("glm", GLM)
    async with gw:
        result = await call(gw, None)
        await call(gw, GLM)
    assert (result.text, result.model, result.provider) == ("simulated", "exai-sim", "kimi")
    assert [str(r.url) for r in seen] == ["http://sim.test:9/v1/chat/completions"] * 2
    assert all(r.headers["authorization"] == f"Bearer {DEMO_API_KEY}" for r in seen)
    assert gw.list_models()[0]["name"] == "exai-sim"


async def test_closing_the_gateway_closes_its_clients() -> None:
    gw = gateway(FakeProvider(scripted(ok())))
    async with gw as entered:
        assert entered is gw
    assert all(route.http is not None and route.http.client.is_closed for route in gw.routes.values())


# -- a call ------------------------------------------------------------------------------


async def test_a_call_returns_the_completion_and_accounts_for_it() -> None:
    fake = FakeProvider(scripted(ok("fine", prompt_tokens=12, completion_tokens=4)))
    gw = gateway(fake)
    before = metric("kimi", KIMI, "ok")
    budget = CallBudget(5)
    result = await gw.complete(model=KIMI, messages=messages(), budget=budget, temperature=0.3, max_tokens=10**6)
    assert (result.text, result.provider, result.model) == ("fine", "kimi", KIMI)
    assert budget.used == 1
    body = fake.bodies()[0]
    assert body["max_tokens"] == 32_768  # clamped to the model's output limit
    assert body["temperature"] == 0.3
    assert gw.statistics()["kimi"].items() >= {  # the monitor's extra fields: tests/test_monitor.py
        "circuit": "closed",
        "inflight": 0,
        "calls_total": 1,
        "errors_total": 0,
        "prompt_tokens": 12,
        "completion_tokens": 4,
        "rpm_waiting": 0,
        "probes_inflight": 0,
        "busy_connections": 0,
    }.items()
    assert metric("kimi", KIMI, "ok") == before + 1


async def test_streaming_through_the_gateway_reports_progress(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(lambda: words_stream(["a ", "b ", "c"], usage={"prompt_tokens": 3, "completion_tokens": 3})))
    reports: list[tuple[str, int]] = []

    async def on_text(text: str, tokens: int, thinking: bool) -> None:
        reports.append((text, tokens))

    gw = gateway(fake)
    result = await call(gw, on_text=on_text)
    assert result.text == "a b c"
    assert reports == [("a ", 1)]  # the rest came within 0.1 s: throttled
    assert gw.statistics()["kimi"]["completion_tokens"] == 3


async def test_a_request_too_big_for_the_model_fails_before_sending() -> None:
    fake = FakeProvider(scripted(ok()))
    budget = CallBudget(3)
    gw = gateway(fake)
    with pytest.raises(ProviderError) as too_long:
        await gw.complete(model="moonshot-v1-8k", messages=messages("x" * 40_000), budget=budget)
    assert too_long.value.kind == "context_too_long"
    assert "about 10,004 tokens" in str(too_long.value)
    assert "8,192 tokens" in str(too_long.value)
    assert fake.seen == [] and budget.used == 0


async def test_log_lines_carry_the_request_id_and_never_the_key() -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format="{extra[rid]} {level} {message}", level="DEBUG")
    try:
        fake = FakeProvider(scripted(error(503, "down"), ok()))
        gw = gateway(fake)
        gw.rng = LowerBound()
        await call(gw, request_id="req-42")
    finally:
        logger.remove(sink)
    attempts = [line for line in lines if "provider attempt" in line]
    assert len(attempts) == 2
    assert attempts[0].startswith("req-42 WARNING provider attempt 1/4 kimi kimi-k2-0905-preview: unavailable")
    assert "status=503" in attempts[0]
    assert attempts[1].startswith("req-42 DEBUG provider attempt 2/4 kimi kimi-k2-0905-preview: ok")
    assert not any("secret" in line for line in lines)


# -- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_retried_statuses(status: int, autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(status), ok("second time")))
    result = await call(gateway(fake))
    assert result.text == "second time"
    assert len(fake.seen) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_statuses_never_retried(status: int, autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(status), ok()))
    exc = await refused(gateway(fake))
    assert len(fake.seen) == 1
    assert not exc.retryable


async def test_connection_errors_are_retried(autojump_clock: trio.abc.Clock) -> None:
    async def respond(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            raise httpx.ConnectError("refused")
        if n == 2:
            raise httpx.ReadError("reset by peer")
        return ok("third")

    fake = FakeProvider(respond)
    assert (await call(gateway(fake))).text == "third"
    assert len(fake.seen) == 3


async def test_retry_after_seconds_is_honoured_plus_jitter(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(429, retry_after="3"), ok()))
    gw = gateway(fake)
    gw.rng = UpperBound()
    await call(gw)
    assert fake.times[1] - fake.times[0] == pytest.approx(3.5)  # 3 s asked + up to 0.5 s jitter
    fake2 = FakeProvider(scripted(error(429, retry_after="3"), ok()))
    gw2 = gateway(fake2)
    gw2.rng = LowerBound()
    await call(gw2)
    assert fake2.times[1] - fake2.times[0] == pytest.approx(3.0)


async def test_retry_after_http_date_is_honoured(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wall clock is pinned, so the date is exactly 5 s ahead however loaded the machine is.
    wall = 1_800_000_000.0
    monkeypatch.setattr("exai.providers.retry.time.time", lambda: wall)

    def dated() -> httpx.Response:
        when = datetime.fromtimestamp(wall, UTC) + timedelta(seconds=5)
        return error(503, retry_after=format_datetime(when, usegmt=True))

    fake = FakeProvider(scripted(dated, ok()))
    gw = gateway(fake)
    gw.rng = LowerBound()
    await call(gw)
    assert fake.times[1] - fake.times[0] == pytest.approx(5.0)


async def test_retry_after_is_capped_at_60_seconds(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(429, retry_after="3600"), ok()))
    gw = gateway(fake)
    gw.rng = LowerBound()
    await call(gw)
    assert fake.times[1] - fake.times[0] == pytest.approx(60.0)


async def test_backoff_is_exponential_full_jitter(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(503)))
    gw = gateway(fake, provider_max_retries=5, circuit_failures=10)
    gw.rng = UpperBound()
    await refused(gw)
    gaps = [round(b - a, 6) for a, b in zip(fake.times, fake.times[1:], strict=False)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 8.0]


async def test_gives_up_after_the_configured_retries(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(503, "overloaded")))
    exc = await refused(gateway(fake, provider_max_retries=2))
    assert len(fake.seen) == 3
    assert exc.kind == "unavailable"
    assert "HTTP 503: overloaded" in str(exc)
    assert "gave up after 3 attempts" in str(exc)


async def test_zero_retries_means_one_attempt(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(503)))
    exc = await refused(gateway(fake, provider_max_retries=0))
    assert len(fake.seen) == 1
    assert "gave up" not in str(exc)


async def test_every_attempt_counts_against_the_call_budget(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(503)))
    with pytest.raises(BudgetExhausted):
        await call(gateway(fake, provider_max_retries=5), budget=2)
    assert len(fake.seen) == 2


async def test_a_retry_after_past_the_deadline_fails_at_once_and_says_why(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(429, retry_after="30"), ok()))
    gw = gateway(fake)
    start = trio.current_time()
    with trio.fail_after(10):
        exc = await refused(gw)
    assert trio.current_time() == start  # no sleeping before giving up
    assert len(fake.seen) == 1
    assert exc.kind == "rate_limited"
    assert "the provider asked to wait 30.0 s and only 10.0 s were left" in str(exc)


async def test_a_backoff_past_the_deadline_fails_at_once(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(502), ok()))
    gw = gateway(fake)
    gw.rng = UpperBound()
    with trio.fail_after(0.3):
        exc = await refused(gw)
    assert len(fake.seen) == 1
    assert "next retry would start in 0.5 s, but only 0.3 s were left" in str(exc)


async def test_the_provider_slot_is_held_only_during_the_request(autojump_clock: trio.abc.Clock) -> None:
    slots = limiters()
    borrowed_during_request: list[int] = []

    async def respond(request: httpx.Request, n: int) -> httpx.Response:
        borrowed_during_request.append(slots["kimi"].borrowed_tokens)
        return error(429, retry_after="5") if n == 1 else ok()

    fake = FakeProvider(respond)
    gw = ModelGateway.from_settings(settings(), slots, transport=fake.transport)
    borrowed_during_backoff: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, gw)
        await trio.sleep(2.5)
        borrowed_during_backoff.append(slots["kimi"].borrowed_tokens)
    assert borrowed_during_request == [1, 1]
    assert borrowed_during_backoff == [0]
    assert slots["kimi"].borrowed_tokens == 0


async def test_each_attempt_has_its_own_provider_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def respond(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            await trio.sleep_forever()
        return ok("after a timeout")

    fake = FakeProvider(respond)
    gw = gateway(fake, provider_timeout_secs=5.0)
    gw.rng = LowerBound()
    result = await call(gw)
    assert result.text == "after a timeout"
    assert fake.times[1] - fake.times[0] == pytest.approx(5.0)
    assert gw.statistics()["kimi"]["errors_total"] == 1


async def test_the_callers_deadline_wins_over_the_provider_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def respond(request: httpx.Request, n: int) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    fake = FakeProvider(respond)
    gw = gateway(fake, provider_timeout_secs=120.0)
    with trio.move_on_after(7) as scope:
        await call(gw)
    assert scope.cancelled_caught  # Cancelled, not a ProviderError
    assert len(fake.seen) == 1
    assert sum(p["inflight"] for p in gw.statistics().values()) == 0


async def test_a_stalled_stream_is_retried(autojump_clock: trio.abc.Clock) -> None:
    stalled = lambda: sse([chunk("par")], then_stall=True)  # noqa: E731
    fake = FakeProvider(scripted(stalled, lambda: words_stream(["whole"])))
    gw = gateway(fake, stream_idle_secs=4.0)
    gw.rng = LowerBound()
    texts: list[str] = []

    async def on_text(text: str, tokens: int, thinking: bool) -> None:
        texts.append(text)

    result = await call(gw, on_text=on_text)
    assert result.text == "whole"
    assert texts == ["par", "whole"]  # the retry starts the text again
    assert fake.times[1] - fake.times[0] == pytest.approx(4.0)


async def test_cancelling_a_call_stops_it_and_makes_no_further_attempt(autojump_clock: trio.abc.Clock) -> None:
    """The cascade, in trio time: 429 with Retry-After 1, then a stalled stream, then the client goes."""
    stalled = lambda: sse([chunk("thinking")], then_stall=True)  # noqa: E731
    fake = FakeProvider(scripted(error(429, retry_after="1"), stalled))
    gw = gateway(fake, stream_idle_secs=30.0)
    with trio.move_on_after(5) as client_went:
        await call(gw, on_text=_ignore)
    assert client_went.cancelled_caught, "the call ended by itself: the cancellation went untested"
    assert len(fake.seen) == 2
    assert sum(p["inflight"] for p in gw.statistics().values()) == 0
    await trio.sleep(100)
    assert len(fake.seen) == 2
    assert all(lim.borrowed_tokens == 0 for lim in (gw.routes["kimi"].limiter, gw.routes["glm"].limiter))


async def test_a_thundering_herd_is_spread_by_jitter_and_bounded_by_the_limit(autojump_clock: trio.abc.Clock) -> None:
    refused_at: dict[str, float] = {}
    retried_after: list[float] = []

    async def respond(request: httpx.Request, n: int) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        if prompt not in refused_at:
            refused_at[prompt] = trio.current_time()
            return error(429, retry_after="1")
        retried_after.append(trio.current_time() - refused_at[prompt])
        return ok(prompt)

    fake = FakeProvider(respond, latency_s=0.05)
    gw = gateway(fake, kimi=10)
    results: list[str] = []

    async def one(i: int) -> None:
        results.append((await call(gw, messages=messages(f"call {i}"))).text)

    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(one, i)
    assert sorted(results) == sorted(f"call {i}" for i in range(100))
    assert fake.max_inflight == 10
    assert len(retried_after) == 100
    # Each retry waited at least the asked second, plus its own jitter of up to 0.5 s
    # (and its turn for a slot): the herd does not come back at one instant.
    assert min(retried_after) >= 1.0
    assert stats.pstdev(retried_after) > 0.1


# -- circuit and fallback ----------------------------------------------------------------


async def test_the_circuit_opens_fails_fast_probes_and_closes(autojump_clock: trio.abc.Clock) -> None:
    healthy = False

    async def respond(request: httpx.Request, n: int) -> httpx.Response:
        return ok("back") if healthy else error(503, "down")

    fake = FakeProvider(respond)
    gw = gateway(fake, circuit_failures=3, circuit_cooldown_secs=30.0, provider_max_retries=0)
    for _ in range(3):
        assert (await refused(gw)).kind == "unavailable"
    assert gw.statistics()["kimi"]["circuit"] == "open"
    budget = CallBudget(5)
    start = trio.current_time()
    with pytest.raises(ProviderError) as fast:
        await gw.complete(model=KIMI, messages=messages(), budget=budget)
    assert trio.current_time() == start and budget.used == 0
    assert fast.value.kind == "circuit_open"
    assert "HTTP 503: down" in str(fast.value)
    assert len(fake.seen) == 3
    await trio.sleep(30)
    assert gw.statistics()["kimi"]["circuit"] == "half_open"
    healthy = True
    assert (await call(gw)).text == "back"
    assert gw.statistics()["kimi"]["circuit"] == "closed"


async def test_a_failed_probe_reopens_the_circuit(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(503)))
    gw = gateway(fake, circuit_failures=2, circuit_cooldown_secs=10.0, provider_max_retries=0)
    await refused(gw)
    await refused(gw)
    await trio.sleep(10)
    await refused(gw)  # the probe
    assert gw.statistics()["kimi"]["circuit"] == "open"
    assert (await refused(gw)).kind == "circuit_open"
    assert len(fake.seen) == 3


async def test_retries_stop_when_the_circuit_opens(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(error(503)))
    gw = gateway(fake, circuit_failures=2, provider_max_retries=5)
    exc = await refused(gw)
    assert exc.kind == "circuit_open"
    assert len(fake.seen) == 2


def two(kimi: FakeProvider, glm: FakeProvider, **overrides: Any) -> ModelGateway:
    """A gateway whose kimi and glm requests reach two separate fake endpoints."""

    async def handler(request: httpx.Request) -> httpx.Response:
        fake = kimi if request.url.host == "kimi.test" else glm
        return await fake.handler(request)

    return ModelGateway.from_settings(settings(**overrides), limiters(), transport=httpx.MockTransport(handler))


async def test_auto_falls_back_when_the_circuit_is_open_but_an_explicit_model_does_not(
    autojump_clock: trio.abc.Clock,
) -> None:
    kimi, glm = FakeProvider(scripted(error(503))), FakeProvider(scripted(ok("from glm")))
    gw = two(kimi, glm, circuit_failures=1, provider_max_retries=0)
    await refused(gw, "auto")  # kimi fails once: the circuit opens (no fallback for other errors)
    assert gw.resolve("auto") == ("glm", GLM)
    result = await call(gw, "auto")
    assert (result.provider, result.text) == ("glm", "from glm")
    explicit = await refused(gw, KIMI)
    assert explicit.kind == "circuit_open"
    assert (len(kimi.seen), len(glm.seen)) == (1, 1)


async def test_auto_falls_back_when_the_circuit_opens_during_its_retries(autojump_clock: trio.abc.Clock) -> None:
    kimi, glm = FakeProvider(scripted(error(503))), FakeProvider(scripted(ok("from glm")))
    gw = two(kimi, glm, circuit_failures=2, provider_max_retries=3)
    gw.rng = LowerBound()
    result = await call(gw, None)
    assert (result.provider, result.model) == ("glm", GLM)
    assert (len(kimi.seen), len(glm.seen)) == (2, 1)


async def test_no_fallback_when_it_is_disabled(autojump_clock: trio.abc.Clock) -> None:
    kimi, glm = FakeProvider(scripted(error(503))), FakeProvider(scripted(ok()))
    gw = two(kimi, glm, circuit_failures=1, provider_max_retries=0, fallback=False)
    await refused(gw, "auto")
    assert gw.resolve("auto") == ("kimi", KIMI)
    assert (await refused(gw, "auto")).kind == "circuit_open"
    assert glm.seen == []


async def test_a_rejected_key_marks_the_provider_misconfigured_until_restart(autojump_clock: trio.abc.Clock) -> None:
    kimi, glm = FakeProvider(scripted(error(401, "Invalid Authentication"))), FakeProvider(scripted(ok("glm")))
    gw = two(kimi, glm)
    # auto: the 401 is not retried; the call goes on with the other provider.
    assert (await call(gw, "auto")).provider == "glm"
    assert gw.statistics()["kimi"]["circuit"] == "misconfigured"
    await trio.sleep(3600)
    start = trio.current_time()
    exc = await refused(gw, KIMI)
    assert trio.current_time() == start
    assert exc.kind == "auth"
    assert "Fix KIMI_API_KEY and restart exai" in str(exc)
    assert len(kimi.seen) == 1
    assert gw.resolve("auto") == ("glm", GLM)
    [entry] = [m for m in gw.list_models() if m["name"] == KIMI]
    assert entry["available"] is False and "KIMI_API_KEY" in entry["reason"]


async def test_list_models_shows_limits_availability_and_circuits() -> None:
    gw = ModelGateway.from_settings(settings(glm_api_key=None, kimi_allowed_models=KIMI), limiters())
    models = {m["name"]: m for m in gw.list_models()}
    assert models[KIMI] == {
        "name": KIMI,
        "provider": "kimi",
        "context_window": 262_144,
        "max_output_tokens": 32_768,
        "available": True,
        "circuit": "closed",
    }
    assert models["moonshot-v1-8k"]["available"] is False
    assert models["moonshot-v1-8k"]["reason"] == "not in EXAI_KIMI_ALLOWED_MODELS"
    assert models[GLM]["reason"] == "GLM_API_KEY is not set"
    assert models[GLM]["circuit"] == "not_configured"
    assert [m["name"] for m in gw.list_models() if m["available"]] == [KIMI]


async def test_the_request_rate_ceiling_spaces_calls_within_their_deadline(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(ok()))
    gw = gateway(fake, kimi_rpm=6)  # one request every 10 s
    await call(gw)
    await call(gw)
    assert fake.times[1] - fake.times[0] == pytest.approx(10.0)
    start = trio.current_time()
    with trio.fail_after(4):
        exc = await refused(gw)
    assert trio.current_time() == start
    assert exc.kind == "rate_limited"
    assert "EXAI_KIMI_RPM" in str(exc) and "only 4.0 s were left" in str(exc)
    assert len(fake.seen) == 2


async def test_statistics_count_callers_waiting_for_their_rate_turn(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeProvider(scripted(ok(), ok()))
    gw = gateway(fake, kimi_rpm=6)  # one request every 10 s
    await call(gw)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, gw)
        await trio.sleep(1)
        assert gw.statistics()["kimi"]["rpm_waiting"] == 1
    assert gw.statistics()["kimi"]["rpm_waiting"] == 0
    assert len(fake.seen) == 2


async def test_statistics_count_a_half_open_probe_in_flight(autojump_clock: trio.abc.Clock) -> None:
    release = trio.Event()

    async def respond(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            return error(503, "down")
        await release.wait()
        return ok("back")

    fake = FakeProvider(respond)
    gw = gateway(fake, circuit_failures=1, circuit_cooldown_secs=5.0, provider_max_retries=0)
    await refused(gw)
    await trio.sleep(5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, gw)
        await trio.sleep(1)
        kimi = gw.statistics()["kimi"]
        assert (kimi["circuit"], kimi["probes_inflight"], kimi["inflight"]) == ("half_open", 1, 1)
        assert sum(p["probes_inflight"] for p in gw.statistics().values()) == 1
        release.set()
    kimi = gw.statistics()["kimi"]
    assert (kimi["circuit"], kimi["probes_inflight"], kimi["inflight"]) == ("closed", 0, 0)
    assert sum(p["probes_inflight"] for p in gw.statistics().values()) == 0


async def test_errors_are_counted_per_provider_and_in_metrics(autojump_clock: trio.abc.Clock) -> None:
    before = metric("glm", GLM, "rate_limited")
    fake = FakeProvider(scripted(error(429), ok()))
    gw = gateway(fake)
    await call(gw, GLM)
    assert metric("glm", GLM, "rate_limited") == before + 1
    glm = gw.statistics()["glm"]
    assert (glm["calls_total"], glm["errors_total"]) == (2, 1)
    assert gw.statistics()["kimi"]["calls_total"] == 0


async def _ignore(text: str, tokens: int, thinking: bool) -> None:
    pass
