"""The provider layer against the real simulator over real HTTP on loopback.

Rules: 127.0.0.1 and port 0 only; real time with small values and generous bounds (the
autojump clock does not mix with real sockets); each test checks that no provider request
is left open, on our side and on the simulator's.
"""

from __future__ import annotations

import json
import random
from functools import partial
from typing import Any

import pytest
import trio
from providers_support import limiters, settings

from exai.providers.base import CallBudget, Completion, ProviderError
from exai.providers.catalog import CATALOG
from exai.providers.gateway import ModelGateway
from exai.providers.openai_compat import OpenAICompatProvider
from exai.providers.simulator import Simulator

KIMI = "kimi-k2-0905-preview"
ABORT_WITHIN_S = 0.1


def sim_messages(prompt: str = "hello there", **behaviour: Any) -> list[dict[str, Any]]:
    text = prompt if not behaviour else f"{prompt}\n#sim {json.dumps(behaviour)}"
    return [{"role": "user", "content": text}]


def sim_gateway(sim: Simulator, *, kimi: int = 6, **overrides: Any) -> ModelGateway:
    values: dict[str, Any] = {"kimi_base_url": sim.url, "glm_base_url": sim.url}
    values.update(overrides)
    return ModelGateway.from_settings(settings(**values), limiters(kimi=kimi))


async def call(gw: ModelGateway, msgs: list[dict[str, Any]], **kwargs: Any) -> Completion:
    return await gw.complete(model=kwargs.pop("model", KIMI), messages=msgs, budget=CallBudget(10), **kwargs)


async def settled(gw: ModelGateway, sim: Simulator) -> None:
    """Nothing open on either side (the simulator learns of a close a moment later)."""
    assert sum(p["inflight"] for p in gw.statistics().values()) == 0
    with trio.fail_after(2):
        await sim.wait_until(lambda s: s.inflight == 0)


async def test_a_plain_and_a_streamed_completion(simulator: Simulator) -> None:
    async with sim_gateway(simulator) as gw:
        plain = await call(gw, sim_messages(reply="four words of reply"))
        assert plain.text == "four words of reply"
        assert plain.usage.completion_tokens == 4
        reports: list[tuple[str, int]] = []

        async def on_text(text: str, tokens: int, thinking: bool) -> None:
            reports.append((text, tokens))

        streamed = await call(gw, sim_messages(reply="one two three four", chunks=4, chunk_delay_s=0.12), on_text=on_text)
        assert streamed.text == "one two three four"
        assert streamed.usage.completion_tokens == 4
        assert reports[0][1] == 1 and reports[-1] == ("one two three four", 4)
        assert [t for _, t in reports] == sorted({t for _, t in reports})
        await settled(gw, simulator)
    assert gw.statistics()["kimi"]["calls_total"] == 2


async def test_demo_mode_serves_exai_sim_through_the_http_path(simulator: Simulator) -> None:
    no_keys = settings(kimi_api_key=None, glm_api_key=None)
    async with ModelGateway.from_settings(no_keys, limiters(), simulator_url=simulator.url) as gw:
        result = await gw.complete(model=None, messages=sim_messages(reply="hi"), budget=CallBudget(1))
    assert (result.model, result.text) == ("exai-sim", "hi")
    assert simulator.stats.requests_total == 1


@pytest.mark.parametrize("streaming", [False, True])
async def test_cancelling_a_hanging_request_aborts_it_at_once(simulator: Simulator, streaming: bool) -> None:
    async with sim_gateway(simulator) as gw:
        on_text = _ignore if streaming else None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: call(gw, sim_messages(hang=True), on_text=on_text))
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 1)
            assert sum(p["inflight"] for p in gw.statistics().values()) == 1
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
        assert sum(p["inflight"] for p in gw.statistics().values()) == 0
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 1)
        assert simulator.stats.last_abort_at is not None
        assert simulator.stats.last_abort_at - cancelled_at < ABORT_WITHIN_S
        await settled(gw, simulator)


async def test_the_cascade_429_then_a_stalled_stream_then_the_client_goes(simulator: Simulator) -> None:
    """2025-10-31: 429 with Retry-After 1, the retry's stream stalls, the client disconnects."""
    texts: list[str] = []

    async def on_text(text: str, tokens: int, thinking: bool) -> None:
        texts.append(text)

    msgs = sim_messages(status=429, fail_times=1, retry_after="1", chunks=4, stall_after=2, reply="a b c d")
    async with sim_gateway(simulator, stream_idle_secs=30.0) as gw:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: call(gw, msgs, on_text=on_text))
            with trio.fail_after(5):
                await simulator.wait_until(lambda s: s.requests_total == 2 and s.inflight == 1)
                while not texts:  # noqa: ASYNC110 - the stalled stream's first chunk reaches us
                    await trio.sleep(0.01)
            disconnected_at = trio.current_time()
            nursery.cancel_scope.cancel()
        assert sum(p["inflight"] for p in gw.statistics().values()) == 0
        with trio.fail_after(1):
            await simulator.wait_until(lambda s: s.aborted == 1)
        assert simulator.stats.last_abort_at is not None
        assert simulator.stats.last_abort_at - disconnected_at < ABORT_WITHIN_S
        await trio.sleep(1.2)  # longer than any backoff: nothing more is sent for the gone call
        assert simulator.stats.requests_total == 2
        assert simulator.stats.statuses[429] == 1
        await settled(gw, simulator)


async def test_a_rejected_key_is_reported_with_the_variable_to_fix(simulator: Simulator) -> None:
    async with sim_gateway(simulator, kimi_api_key="bad-key") as gw:
        with pytest.raises(ProviderError) as rejected:
            await call(gw, sim_messages())
        assert rejected.value.kind == "auth"
        assert "KIMI_API_KEY" in str(rejected.value)
        assert "bad-key" not in str(rejected.value)
        assert gw.statistics()["kimi"]["circuit"] == "misconfigured"
        # auto goes to the other provider, which has a good key
        result = await gw.complete(model="auto", messages=sim_messages(reply="ok"), budget=CallBudget(2))
        assert result.provider == "glm"
    assert simulator.stats.requests_total == 2


@pytest.mark.parametrize(
    ("behaviour", "kind", "phrase"),
    [
        ({"malformed": True}, "bad_response", "not a chat completion"),
        ({"bad_chunk_after": 1, "chunks": 3}, "bad_response", "malformed chunk"),
        ({"cut_after": 1, "chunks": 3}, "unavailable", "no partial answer was used"),
        ({"stall_after": 1, "chunks": 3}, "timeout", "EXAI_STREAM_IDLE_SECS"),
        ({"status": 503, "retry_after": "0"}, "unavailable", "gave up after 2 attempts"),
    ],
)
async def test_broken_answers_give_clear_errors(
    simulator: Simulator, behaviour: dict[str, Any], kind: str, phrase: str
) -> None:
    streaming = "malformed" not in behaviour
    async with sim_gateway(simulator, stream_idle_secs=0.3, provider_max_retries=1) as gw:
        with pytest.raises(ProviderError) as failed:
            await call(gw, sim_messages(**behaviour), on_text=_ignore if streaming else None)
        assert failed.value.kind == kind
        assert phrase.lower() in str(failed.value).lower()
        await settled(gw, simulator)


async def test_an_open_circuit_answers_at_once_without_a_request(simulator: Simulator) -> None:
    async with sim_gateway(simulator, circuit_failures=2, provider_max_retries=0) as gw:
        for _ in range(2):
            with pytest.raises(ProviderError):
                await call(gw, sim_messages(status=503))
        started = trio.current_time()
        with pytest.raises(ProviderError) as fast:
            await call(gw, sim_messages(reply="never sent"))
        assert trio.current_time() - started < 0.05
        assert fast.value.kind == "circuit_open"
        assert simulator.stats.requests_total == 2
        # `auto` goes to the other provider meanwhile.
        result = await gw.complete(model=None, messages=sim_messages(reply="from glm"), budget=CallBudget(1))
        assert (result.provider, result.text) == ("glm", "from glm")


async def test_the_simulator_never_sees_more_than_the_provider_limit(simulator: Simulator) -> None:
    async with sim_gateway(simulator, kimi=4) as gw:
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(call, gw, sim_messages(f"call {i}", latency_s=0.02))
        await settled(gw, simulator)
    assert simulator.stats.requests_total == 30
    assert simulator.stats.max_inflight == 4


async def test_the_pool_survives_200_cancellations_under_contention(simulator: Simulator) -> None:
    """Issue 3 item 8: cancel requests while others wait for a pooled connection, then load it."""
    pool_size = 4
    provider = OpenAICompatProvider("kimi", simulator.url, "key", max_connections=pool_size)
    model = CATALOG[KIMI]
    rng = random.Random(8)

    async def one(prompt: str, cancel_after: float | None = None, **behaviour: Any) -> None:
        with trio.move_on_after(cancel_after if cancel_after is not None else 10):
            await provider.attempt(
                model=model, messages=sim_messages(prompt, **behaviour), timeout_s=10, stream_idle_s=10
            )

    async with provider.client:
        transport = provider.client._transport
        # 3 x 200 requests for 4 connections, the limiter bypassed: most wait in the pool,
        # some are mid-request, and each is cancelled at a random moment. Four hanging ones
        # hold the connections first, so some cancellations certainly land mid-request.
        for round_ in range(3):
            simulator.reset()
            async with trio.open_nursery() as nursery:
                for i in range(pool_size):
                    nursery.start_soon(partial(one, f"hang {round_}.{i}", rng.uniform(0.05, 0.3), hang=True))
                with trio.fail_after(2):
                    await simulator.wait_until(lambda s: s.inflight == pool_size)
                for i in range(200 - pool_size):
                    doomed = partial(one, f"doomed {round_}.{i}", rng.uniform(0.0, 0.3), latency_s=0.05)
                    nursery.start_soon(doomed)
            assert provider.open_requests == 0
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 0)
            assert simulator.stats.aborted >= pool_size  # cancelled mid-request, not only queued
            assert transport.statistics()["active"] == 0  # type: ignore[attr-defined]
        # A full load: pool_size requests at once each take 0.3 s. With every slot free they
        # finish together; a leaked slot would make them queue (or hit the pool timeout).
        started = trio.current_time()
        simulator.reset()
        async with trio.open_nursery() as nursery:
            for i in range(pool_size):
                nursery.start_soon(partial(one, f"load {i}", None, latency_s=0.3))
        took = trio.current_time() - started
        assert simulator.stats.completed == pool_size
        # At least pool_size at once: the server may still be reading requests of the
        # cancelled rounds whose sockets the client already closed (they count as aborted).
        assert simulator.stats.max_inflight >= pool_size
        assert took < 0.55
        # And the pool still serves many rounds of work.
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, f"after {i}", None)
        assert simulator.stats.completed == pool_size + 40
        assert provider.open_requests == 0


async def test_the_gateway_recovers_after_200_cancelled_calls(simulator: Simulator) -> None:
    rng = random.Random(9)
    async with sim_gateway(simulator, kimi=4) as gw:

        async def doomed(i: int) -> None:
            with trio.move_on_after(rng.uniform(0.0, 0.3)):
                await call(gw, sim_messages(f"doomed {i}", latency_s=0.05))

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(doomed, i)
        await settled(gw, simulator)
        assert gw.routes["kimi"].limiter.borrowed_tokens == 0
        simulator.reset()
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(call, gw, sim_messages(f"load {i}", latency_s=0.3))
        assert trio.current_time() - started < 0.55
        assert simulator.stats.max_inflight == 4


async def _ignore(text: str, tokens: int, thinking: bool) -> None:
    pass
