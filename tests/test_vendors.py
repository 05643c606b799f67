"""GLM and Kimi as they answer (contract 4b), over the real HTTP path against the simulator.

Rules: 127.0.0.1 and port 0 only; real time with short values and generous bounds (the
simulator is a real socket); retries without jitter (`NoJitter`) so the tests are quick. Each
row of the vendor table is played by the simulator in that vendor's own shape, and the test
counts the requests the simulator saw: one for an answer that is not retried, one per attempt
for one that is.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from providers_support import limiters, settings

from exai.providers.base import CallBudget, Completion, ErrorKind, ProviderError
from exai.providers.catalog import CATALOG
from exai.providers.gateway import ModelGateway
from exai.providers.openai_compat import AttemptError, OpenAICompatProvider
from exai.providers.simulator import Simulator
from exai.providers.vendors import GLM_CODES, KIMI_TYPES, link_sources, rate_hold_s, reset_time

KIMI = "kimi-k2-0905-preview"
GLM = "glm-4.6"
RETRIES = 2  # so a retried answer is seen 1 + RETRIES times


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def prompt(text: str = "hello there", **behaviour: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{text}\n#sim {json.dumps(behaviour)}" if behaviour else text}]


def gateway(sim: Simulator, **overrides: Any) -> ModelGateway:
    values: dict[str, Any] = {"kimi_base_url": sim.url, "glm_base_url": sim.url, "provider_max_retries": RETRIES}
    values.update(overrides)
    gw = ModelGateway.from_settings(settings(**values), limiters())
    gw.rng = NoJitter()
    return gw


async def ask(gw: ModelGateway, messages: list[dict[str, Any]], model: str = KIMI, **kwargs: Any) -> Completion:
    return await gw.complete(model=model, messages=messages, budget=CallBudget(10), **kwargs)


async def refused(gw: ModelGateway, messages: list[dict[str, Any]], model: str) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        with trio.fail_after(10):
            await ask(gw, messages, model)
    return caught.value


# (model, the simulator's answer, kind, retried, words the message must hold)
ROWS = [
    # retried: rate and overload answers
    (GLM, {"glm_code": "1302"}, ErrorKind.RATE_LIMITED, True, ["GLM (Z.ai)", "concurrency", "1302"]),
    (GLM, {"glm_code": "1303"}, ErrorKind.RATE_LIMITED, True, ["frequency", "EXAI_GLM_RPM"]),
    (GLM, {"glm_code": "1305"}, ErrorKind.RATE_LIMITED, True, ["traffic"]),
    (GLM, {"glm_code": "1312"}, ErrorKind.OVERLOADED, True, ["overloaded", "other provider"]),
    (KIMI, {"kimi_type": "rate_limit_reached_error"}, ErrorKind.RATE_LIMITED, True, ["Kimi (Moonshot)", "EXAI_KIMI_RPM"]),
    (KIMI, {"kimi_type": "engine_overloaded_error"}, ErrorKind.OVERLOADED, True, ["overloaded"]),
    (KIMI, {"status": 429}, ErrorKind.RATE_LIMITED, True, ["rate limiting"]),
    (KIMI, {"status": 408}, ErrorKind.TIMEOUT, True, ["timed out"]),
    (GLM, {"status": 503}, ErrorKind.UNAVAILABLE, True, ["unavailable", "HTTP 503"]),
    # not retried: account, plan, key and request answers
    (GLM, {"glm_code": "1113"}, ErrorKind.QUOTA, False, ["arrears", "Top up"]),
    (GLM, {"glm_code": "1304"}, ErrorKind.QUOTA, False, ["daily call limit", "1304"]),
    (GLM, {"glm_code": "1308"}, ErrorKind.QUOTA, False, ["usage cap", "resets at 2026-12-05 08:00:00"]),
    (GLM, {"glm_code": "1310"}, ErrorKind.QUOTA, False, ["weekly or monthly", "resets at 2026-12-07 00:00:00"]),
    (GLM, {"glm_code": "1309"}, ErrorKind.PLAN, False, ["expired", "Renew"]),
    (GLM, {"glm_code": "1311"}, ErrorKind.PLAN, False, ["does not include this model", "EXAI_GLM_ALLOWED_MODELS"]),
    (GLM, {"glm_code": "1261"}, ErrorKind.CONTEXT_TOO_LONG, False, ["does not fit the context window", "1261"]),
    (GLM, {"glm_code": "1301"}, ErrorKind.CONTENT_FILTERED, False, ["unsafe", "Rephrase"]),
    (KIMI, {"kimi_type": "exceeded_current_quota_error"}, ErrorKind.QUOTA, False, ["balance", "Top up"]),
    (KIMI, {"kimi_type": "exceeded_current_quota_error", "status": 403}, ErrorKind.QUOTA, False, ["HTTP 403", "balance"]),
    (KIMI, {"status": 403}, ErrorKind.QUOTA, False, ["HTTP 403", "balance"]),
    (KIMI, {"kimi_type": "invalid_authentication_error"}, ErrorKind.AUTH, False, ["API key", "KIMI_API_KEY", "restart"]),
]


@pytest.mark.parametrize(("model", "answer", "kind", "retried", "words"), ROWS, ids=[json.dumps(r[1]) for r in ROWS])
async def test_every_vendor_answer_is_retried_or_answered_at_once(
    simulator: Simulator, model: str, answer: dict[str, Any], kind: ErrorKind, retried: bool, words: list[str]
) -> None:
    async with gateway(simulator) as gw:
        error = await refused(gw, prompt(**answer), model)
    assert (error.kind, error.retryable) == (kind, retried)
    assert simulator.stats.requests_total == (1 + RETRIES if retried else 1)
    for word in words:
        assert word in str(error)
    assert "secret" not in str(error)


async def test_a_retried_answer_that_clears_is_an_answer(simulator: Simulator) -> None:
    async with gateway(simulator) as gw:
        result = await ask(gw, prompt(glm_code="1302", fail_times=1, reply="done"), GLM)
    assert result.text == "done"
    assert simulator.stats.requests_total == 2


async def test_retry_after_of_a_vendor_answer_is_honoured_within_the_deadline(simulator: Simulator) -> None:
    async with gateway(simulator) as gw:
        with trio.fail_after(10):
            started = trio.current_time()
            result = await ask(gw, prompt(kimi_type="rate_limit_reached_error", fail_times=1, retry_after="0.5", reply="ok"))
    assert result.text == "ok" and trio.current_time() - started >= 0.5
    with trio.move_on_after(0.3):  # a wait that does not fit the deadline is not even begun
        async with gateway(simulator) as gw:
            error = await refused(gw, prompt(kimi_type="engine_overloaded_error", retry_after="30"), KIMI)
    assert "only" in str(error) and "deadline" in str(error)


async def test_the_not_retried_answers_count_towards_the_circuit_and_auto_falls_back(simulator: Simulator) -> None:
    async with gateway(simulator, circuit_failures=2, default_model="auto") as gw:
        for _ in range(2):
            await refused(gw, prompt(glm_code="1309"), GLM)
        assert gw.statistics()["glm"]["circuit"] == "open"
        # auto prefers kimi; a kimi quota answer sends it to glm once glm's circuit lets it
        simulator.reset()
    async with gateway(simulator, default_model="auto") as gw:
        result = await ask(gw, prompt(kimi_type="exceeded_current_quota_error", fail_model=KIMI, reply="from glm"), "auto")
    assert (result.provider, result.text) == ("glm", "from glm")
    assert simulator.stats.requests_total == 2


# -- rate headers --------------------------------------------------------------------


async def test_kimi_rate_headers_hold_the_next_request_until_the_reset(simulator: Simulator) -> None:
    async with gateway(simulator) as gw:
        await ask(gw, prompt(rate_remaining=0, rate_reset="0.6", reply="first"))
        sent_first = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, gw, prompt("second"))
            await trio.sleep(0.4)
            assert simulator.stats.requests_total == 1  # held, not sent into a 429
            assert gw.statistics()["kimi"]["rpm_waiting"] == 1
        assert trio.current_time() - sent_first >= 0.55
        assert simulator.stats.requests_total == 2
        await ask(gw, prompt(rate_remaining=5, rate_reset="30"))  # requests left: no hold
        started = trio.current_time()
        await ask(gw, prompt("fourth"))
        assert trio.current_time() - started < 0.5


async def test_a_hold_past_the_deadline_fails_at_once_without_a_request(simulator: Simulator) -> None:
    async with gateway(simulator) as gw:
        await ask(gw, prompt(rate_remaining=0, rate_reset="20"))
        with trio.move_on_after(2) as bounded:
            with pytest.raises(ProviderError) as caught:
                with trio.fail_after(1):  # the call's deadline, well before the reset
                    await ask(gw, prompt("next"))
        assert not bounded.cancelled_caught
    assert caught.value.kind == ErrorKind.RATE_LIMITED
    assert "X-RateLimit-Remaining: 0" in str(caught.value)
    assert simulator.stats.requests_total == 1


@pytest.mark.parametrize(
    ("remaining", "reset", "seconds"),
    [
        ("0", "12", 12.0),
        ("0", "1.5", 1.5),
        ("0", "1m30s", 60.0),  # capped like Retry-After
        ("0", "250ms", 0.25),
        ("0", str(1_000_000_000 + 5), 5.0),  # a Unix time
        ("3", "12", None),
        (None, "12", None),
        ("0", None, None),
        ("0", "soon", None),
        ("x", "12", None),
    ],
)
def test_rate_headers_are_read_in_their_forms(remaining: str | None, reset: str | None, seconds: float | None) -> None:
    assert rate_hold_s(remaining, reset, now=1_000_000_000) == seconds


# -- reasoning and thinking ----------------------------------------------------------


async def test_streamed_reasoning_is_progress_and_never_the_answer(simulator: Simulator) -> None:
    reports: list[tuple[str, bool]] = []

    async def on_text(text: str, tokens: int, thinking: bool) -> None:
        reports.append((text, thinking))

    async with gateway(simulator) as gw:
        result = await ask(
            gw, prompt(reasoning="SECRET-THOUGHT weighing options", reply="the answer", chunks=2, chunk_delay_s=0.15), on_text=on_text
        )
    assert result.text == "the answer"
    assert "SECRET-THOUGHT" in result.reasoning
    assert reports[0] == ("", True)
    assert all("SECRET-THOUGHT" not in text for text, _ in reports)
    assert reports[-1] == ("the answer", False)


@pytest.mark.parametrize(
    ("model", "thinking", "sent"),
    [
        (GLM, "enabled", {"type": "enabled"}),
        (GLM, "disabled", {"type": "disabled"}),
        (GLM, "auto", None),
        (KIMI, "enabled", None),  # kimi-k2-0905-preview takes no thinking field
        ("kimi-k2.5", "disabled", {"type": "disabled"}),
    ],
)
async def test_thinking_is_sent_where_the_model_takes_it(simulator: Simulator, model: str, thinking: str, sent: Any) -> None:
    async with gateway(simulator) as gw:
        await ask(gw, prompt(), model, thinking=thinking)
    assert simulator.recent[-1].get("thinking") == sent


# -- web search ----------------------------------------------------------------------


async def test_glm_web_search_is_its_tool_and_its_results_are_the_sources(simulator: Simulator) -> None:
    async with gateway(simulator) as gw:
        result = await ask(gw, prompt("latest trio release"), GLM, web_search=True, on_text=_ignore)
    assert simulator.recent[-1]["tools"] == [{"type": "web_search", "web_search": {"enable": True, "search_result": True}}]
    assert [s.url for s in result.sources] == ["https://search.example/latest-trio-release/1", "https://search.example/latest-trio-release/2"]
    assert simulator.stats.requests_total == 1


@pytest.mark.parametrize("streaming", [False, True])
async def test_kimi_web_search_echoes_the_call_back_and_each_round_trip_is_a_call(simulator: Simulator, streaming: bool) -> None:
    budget = CallBudget(10)
    async with gateway(simulator) as gw:
        result = await gw.complete(
            model=KIMI, messages=prompt("latest trio release"), budget=budget, web_search=True,
            on_text=_ignore if streaming else None,
        )
    assert budget.used == 2 and simulator.stats.requests_total == 2
    echo = simulator.recent[-1]["messages"]
    call = echo[-2]["tool_calls"][0]
    assert echo[-1] == {"role": "tool", "tool_call_id": call["id"], "name": "$web_search", "content": call["function"]["arguments"]}
    assert [s.url for s in result.sources] == ["https://search.example/kimi/1", "https://search.example/kimi/2"]
    assert result.usage.prompt_tokens > 0 and simulator.stats.statuses == {200: 2}
    # the tokens of both round trips, and Kimi's fee for the one search
    info = CATALOG[KIMI]
    tokens = result.usage.prompt_tokens * info.input_usd + result.usage.completion_tokens * info.output_usd  # type: ignore[operator]
    assert result.cost_usd == pytest.approx(tokens / 1e6 + 0.004)


async def test_a_bad_echo_is_refused_by_the_simulator(simulator: Simulator) -> None:
    messages = [
        *prompt(),
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "builtin_function", "function": {"name": "$web_search", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "$web_search", "content": "not the arguments"},
    ]
    async with gateway(simulator) as gw:
        error = await refused_search(gw, messages)
    assert error.kind == ErrorKind.BAD_REQUEST and "arguments unchanged" in str(error)


async def refused_search(gw: ModelGateway, messages: list[dict[str, Any]]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await gw.complete(model=KIMI, messages=messages, budget=CallBudget(3), web_search=True)
    return caught.value


def test_kimi_sources_are_the_answers_links() -> None:
    text = "See [Trio docs](https://trio.readthedocs.io/) and [a post](http://x.test/p?q=1), not [this](ftp://no)."
    assert [(s.title, s.url) for s in link_sources(text)] == [("Trio docs", "https://trio.readthedocs.io/"), ("a post", "http://x.test/p?q=1")]


# -- usage and cost ------------------------------------------------------------------


async def test_usage_has_cached_tokens_and_the_cost_from_the_catalog(simulator: Simulator) -> None:
    async with gateway(simulator) as gw:
        result = await ask(gw, prompt("one two three four five six seven eight", cached_tokens=4, reply="a b"), GLM, on_text=_ignore)
        stats = gw.statistics()["glm"]
    info = CATALOG[GLM]
    usage = result.usage
    assert usage.cached_tokens == 4 and usage.completion_tokens == 2
    expected = ((usage.prompt_tokens - 4) * info.input_usd + 4 * info.cached_input_usd + 2 * info.output_usd) / 1e6  # type: ignore[operator]
    assert result.cost_usd == pytest.approx(expected)
    assert stats["cost_usd"] == pytest.approx(expected, abs=1e-6) and stats["cached_tokens"] == 4


async def test_a_model_without_a_price_has_no_cost(simulator: Simulator) -> None:
    async with gateway(simulator) as gw:
        result = await ask(gw, prompt(), "kimi-thinking-preview")
    assert result.cost_usd is None


# -- the boundary never breaks ------------------------------------------------------

KEY = "sk-property-secret-key"
bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just(KEY),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
errors = st.fixed_dictionaries(
    {},
    optional={
        "code": st.sampled_from([*GLM_CODES, "", "9999", None, 1302]),
        "type": st.sampled_from([*KIMI_TYPES, "", "odd_error", None]),
        "message": st.text(max_size=40) | st.just(f"bad key {KEY}"),
    },
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    status=st.sampled_from([200, 400, 401, 403, 404, 408, 413, 422, 429, 500, 503]),
    body=bodies | st.builds(lambda e: {"error": e}, errors),
    stream=st.booleans(),
)
def test_any_vendor_body_is_a_provider_error_or_an_answer_and_never_leaks_the_key(status: int, body: Any, stream: bool) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if stream and status == 200:
            data = f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n"
            return httpx.Response(200, content=data.encode(), headers={"content-type": "text/event-stream"})
        return httpx.Response(status, json=body)

    async def main() -> None:
        p = OpenAICompatProvider("glm", "http://glm.test/v4", KEY, max_connections=2, transport=httpx.MockTransport(handler))
        async with p.client:
            try:
                await p.attempt(model=CATALOG[GLM], messages=prompt(), timeout_s=5, stream_idle_s=5, on_text=_ignore if stream else None)
            except AttemptError as exc:
                assert KEY not in str(exc)
                assert isinstance(exc.kind, ErrorKind)

    trio.run(main)


def test_a_usage_cap_reset_is_read_from_a_field_or_the_message() -> None:
    assert reset_time({"reset_at": "2026-12-05T08:00:00Z"}, "") == "2026-12-05T08:00:00Z"
    assert reset_time({}, "Your limit will reset at 2026-12-05 08:00:00 UTC") == "2026-12-05 08:00:00 UTC"
    assert reset_time({}, "no date here") is None


async def _ignore(text: str, tokens: int, thinking: bool) -> None:
    pass


@pytest.mark.parametrize("stream", [False, True])
async def test_an_error_inside_a_200_answer_goes_by_the_table(stream: bool) -> None:
    body = {"error": {"code": "1301", "message": "unsafe content"}}

    async def handler(request: httpx.Request) -> httpx.Response:
        if stream:
            return httpx.Response(200, content=f"data: {json.dumps(body)}\n\n".encode(), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=body)

    p = OpenAICompatProvider("glm", "http://glm.test/v4", KEY, max_connections=2, transport=httpx.MockTransport(handler))
    async with p.client:
        with pytest.raises(AttemptError) as caught:
            await p.attempt(model=CATALOG[GLM], messages=prompt(), timeout_s=5, stream_idle_s=5, on_text=_ignore if stream else None)
    assert (caught.value.kind, caught.value.retryable) == (ErrorKind.CONTENT_FILTERED, False)
    assert "GLM (Z.ai)" in str(caught.value) and "1301" in str(caught.value)
