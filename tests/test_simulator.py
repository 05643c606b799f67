"""The OpenAI-compatible simulator over real HTTP on loopback.

Rules: 127.0.0.1 and port 0 only; real time (the server and httpx run on real sockets)
with small delays and generous bounds, except where a test measures the one thing other
projects rely on: an abort seen by the simulator within 100 ms of the client leaving.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
import trio
from httpx_sse import aconnect_sse
from loguru import logger

import exai
from exai.providers.simulator import (
    Behaviour,
    SimStats,
    Simulator,
    default_reply,
    run_mock_provider,
    serve_simulator,
)

AUTH = {"Authorization": "Bearer test-key"}
ABORT_BOUND_S = 0.1  # what the daemon's tests assert about the simulator
WAIT_S = 5.0  # generous bound for anything that should happen "soon"


@pytest.fixture
async def sim(nursery: trio.Nursery) -> Simulator:
    started: Simulator = await nursery.start(serve_simulator)
    return started


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=AUTH, timeout=WAIT_S) as http:
        yield http


def chat_body(
    prompt: str, *, model: str = "exai-sim", stream: bool = False, **sim: Any
) -> dict[str, Any]:
    """A chat request whose last user message carries `#sim` overrides when given."""
    content = f"{prompt}\n#sim {json.dumps(sim)}" if sim else prompt
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": content},
        ],
    }
    if stream:
        body["stream"] = True
    return body


async def wait_for(sim: Simulator, predicate: Any) -> None:
    with trio.fail_after(WAIT_S):
        await sim.wait_until(predicate)


def reply_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def balanced(stats: SimStats) -> bool:
    return stats.inflight == 0 and stats.requests_total == stats.aborted + stats.completed


# -- plain completions ------------------------------------------------------------------


async def test_completion_shape_usage_and_stats(sim: Simulator, client: httpx.AsyncClient) -> None:
    assert sim.url.startswith("http://127.0.0.1:") and sim.url.endswith("/v1")
    response = await client.post(f"{sim.url}/chat/completions", json=chat_body("hello there world"))
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "exai-sim"
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": default_reply("hello there world")}
    assert choice["finish_reason"] == "stop"
    # Tokens are whitespace-separated words: "be brief" + "hello there world".
    reply_words = len(default_reply("hello there world").split())
    assert data["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": reply_words,
        "total_tokens": 5 + reply_words,
    }
    # Counted before the last bytes go out: a client holding the answer never sees it in flight.
    assert sim.stats.as_dict() == {
        "requests_total": 1,
        "inflight": 0,
        "max_inflight": 1,
        "aborted": 0,
        "completed": 1,
        "statuses": {200: 1},
        "last_abort_at": None,
    }


async def test_reply_is_deterministic_and_ignores_sim_lines(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url = f"{sim.url}/chat/completions"
    plain = (await client.post(url, json=chat_body("same prompt"))).json()
    directed = (await client.post(url, json=chat_body("same prompt", chunks=3))).json()
    assert plain["choices"][0]["message"]["content"] == default_reply("same prompt")
    assert directed["choices"][0]["message"]["content"] == default_reply("same prompt")


async def test_a_system_prompt_asking_for_json_gets_a_json_object_with_its_keys(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """Demos of the workflow tools: auto-steps and the expert get JSON they can parse."""
    system = 'Answer with ONLY a JSON object: {"findings": "...", "confidence": "low|high", "issues": [{"severity": "low"}]}'
    answers = []
    for _ in range(2):
        body = chat_body("trace the crash")
        body["messages"][0]["content"] = system
        response = await client.post(f"{sim.url}/chat/completions", json=body)
        answers.append(json.loads(response.json()["choices"][0]["message"]["content"]))
    assert [set(a) for a in answers] == [{"findings", "confidence", "issues"}] * 2
    assert answers[0]["confidence"] == "medium" and answers[0]["issues"][0]["severity"] == "medium"
    assert "trace the crash" in answers[0]["findings"] and answers[0]["findings"] != answers[1]["findings"]


async def test_reply_override_and_content_parts_without_v1_prefix(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    base = sim.url.removesuffix("/v1")
    body = {
        "model": "glm-4.6",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "part one"},
                    {"type": "text", "text": '#sim {"reply": "exact words here"}'},
                ],
            }
        ],
    }
    data = (await client.post(f"{base}/chat/completions", json=body)).json()
    assert data["model"] == "glm-4.6"
    assert data["choices"][0]["message"]["content"] == "exact words here"
    assert data["usage"]["completion_tokens"] == 3


async def test_models_listed_on_both_paths(sim: Simulator, client: httpx.AsyncClient) -> None:
    for url in (f"{sim.url}/models", f"{sim.url.removesuffix('/v1')}/models"):
        response = await client.get(url)
        assert response.status_code == 200
        data = response.json()
        assert data["object"] == "list"
        assert [m["id"] for m in data["data"]] == list(sim.models)
        assert "exai-sim" in sim.models
    assert (await client.get(f"{sim.url}/models", headers={"Authorization": ""})).status_code == 401
    assert (await client.post(f"{sim.url}/models")).status_code == 405


async def test_latency_delays_the_answer(sim: Simulator, client: httpx.AsyncClient) -> None:
    started = trio.current_time()
    response = await client.post(
        f"{sim.url}/chat/completions", json=chat_body("slow", latency_s=0.2)
    )
    assert response.status_code == 200
    assert trio.current_time() - started >= 0.2


# -- auth and bad requests --------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Token abc", "Bearer bad-key", "Basic dXNlcjpwdw=="]
)
async def test_auth_required(sim: Simulator, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(headers=headers) as http:
        response = await http.post(f"{sim.url}/chat/completions", json=chat_body("hi"))
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.json()["error"]["message"]
    await wait_for(sim, balanced)
    assert sim.stats.statuses == {401: 1}


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"model": "m"}', "'messages'"),
        (b'{"model": "m", "messages": []}', "'messages'"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "'model'"),
        (b'{"model": "m", "messages": ["x"]}', "'messages'"),
    ],
)
async def test_bad_requests_get_400(
    sim: Simulator, client: httpx.AsyncClient, content: bytes, expected: str
) -> None:
    response = await client.post(f"{sim.url}/chat/completions", content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert expected in error["message"]


@pytest.mark.parametrize(
    "directive, expected",
    [
        ("#sim {not json", "not valid JSON"),
        ("#sim [1]", "JSON object"),
        ('#sim {"hangs": true}', "hangs"),
        ('#sim {"status": 200}', "status"),
        ('#sim {"latency_s": -1}', "latency_s"),
        ('#sim {"retry_after": "in \u00e9t\u00e9"}', "retry_after"),
    ],
)
async def test_bad_sim_directive_gets_400(
    sim: Simulator, client: httpx.AsyncClient, directive: str, expected: str
) -> None:
    body = chat_body("x")
    body["messages"][-1]["content"] = f"x\n{directive}"
    response = await client.post(f"{sim.url}/chat/completions", json=body)
    assert response.status_code == 400
    assert expected in response.json()["error"]["message"]


async def test_sim_lines_only_count_in_the_last_user_message(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    body = chat_body("x")
    body["messages"][0]["content"] = '#sim {"status": 500}'
    body["messages"].append({"role": "assistant", "content": '#sim {"status": 500}'})
    response = await client.post(f"{sim.url}/chat/completions", json=body)
    assert response.status_code == 200


async def test_unknown_path_and_wrong_method(sim: Simulator, client: httpx.AsyncClient) -> None:
    missing = await client.get(f"{sim.url}/embeddings")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert (await client.get(f"{sim.url}/chat/completions")).status_code == 405
    assert (await client.get(f"{sim.url.removesuffix('/v1')}/_sim/nothing")).status_code == 404
    assert sim.stats.requests_total == 0  # only chat completions are counted


# -- error statuses ---------------------------------------------------------------------


async def test_429_with_retry_after_then_success_for_the_same_body(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url = f"{sim.url}/chat/completions"
    body = chat_body("retry me", status=429, fail_times=1, retry_after="1")
    first = await client.post(url, json=body)
    assert first.status_code == 429
    assert first.headers["retry-after"] == "1"
    assert first.json()["error"]["type"] == "rate_limit_error"
    second = await client.post(url, json=body)
    assert second.status_code == 200
    assert second.json()["choices"][0]["message"]["content"] == default_reply("retry me")
    # Another body has its own attempt counter.
    other = await client.post(url, json=chat_body("another", status=429, fail_times=1))
    assert other.status_code == 429
    assert "retry-after" not in other.headers
    await wait_for(sim, balanced)
    assert sim.stats.statuses == {429: 2, 200: 1}


async def test_configured_default_status_counts_attempts_per_body(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.configure(status=503, fail_times=2)
    url = f"{sim.url}/chat/completions"
    codes = [(await client.post(url, json=chat_body("a"))).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert (await client.post(url, json=chat_body("b"))).status_code == 503


async def test_fail_ratio_refuses_about_that_share(sim: Simulator, client: httpx.AsyncClient) -> None:
    sim.configure(status=429, fail_ratio=0.5, retry_after="1")
    url = f"{sim.url}/chat/completions"
    codes = [(await client.post(url, json=chat_body(f"p{i}"))).status_code for i in range(200)]
    refused = codes.count(429)
    assert set(codes) == {200, 429}
    assert 60 <= refused <= 140  # 0.5 +- 5 sigma of a binomial(200, 0.5)


async def test_status_with_custom_and_default_error_body(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url = f"{sim.url}/chat/completions"
    custom = {"error": {"message": "context too long", "code": "context_length_exceeded"}}
    response = await client.post(url, json=chat_body("x", status=400, error_body=custom))
    assert response.status_code == 400
    assert response.json() == custom
    default = await client.post(url, json=chat_body("x", status=500))
    assert default.status_code == 500
    error = default.json()["error"]
    assert error["type"] == "server_error"
    assert "500" in error["message"]


async def test_malformed_body(sim: Simulator, client: httpx.AsyncClient) -> None:
    response = await client.post(f"{sim.url}/chat/completions", json=chat_body("x", malformed=True))
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    await wait_for(sim, balanced)
    assert sim.stats.completed == 1


# -- streaming --------------------------------------------------------------------------


async def read_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> list[str]:
    """Every SSE data field of one streamed response, as received."""
    async with aconnect_sse(client, "POST", url, json=body) as source:
        assert source.response.status_code == 200
        return [event.data async for event in source.aiter_sse()]


async def test_stream_chunks_parse_with_httpx_sse(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    reply = "alpha beta gamma delta epsilon"
    body = chat_body("stream it", stream=True, reply=reply, chunks=4, chunk_delay_s=0.01)
    data = await read_stream(client, f"{sim.url}/chat/completions", body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "exai-sim" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    content = [c["choices"][0]["delta"].get("content") for c in chunks[:-1]]
    assert len(content) == 4 and all(content)
    assert "".join(content) == reply
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    prompt_words = len(" ".join(m["content"] for m in body["messages"]).split())
    assert last["usage"] == {
        "prompt_tokens": prompt_words,
        "completion_tokens": 5,
        "total_tokens": prompt_words + 5,
    }
    assert all("usage" not in c for c in chunks[:-1])
    assert balanced(sim.stats) and sim.stats.completed == 1


async def test_stream_without_delays_is_whole(sim: Simulator, client: httpx.AsyncClient) -> None:
    data = await read_stream(client, f"{sim.url}/chat/completions", chat_body("quick", stream=True))
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in data[:-1])
    assert text == default_reply("quick")
    assert len(data) == 5 + 2  # default chunks, the usage chunk, [DONE]


async def test_stream_cut_after_closes_without_done(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    body = chat_body("cut", stream=True, chunks=5, cut_after=2)
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with aconnect_sse(client, "POST", f"{sim.url}/chat/completions", json=body) as source:
            async for event in source.aiter_sse():
                received.append(event.data)
    assert len(received) == 2
    assert all(json.loads(item)["choices"][0]["delta"]["content"] for item in received)
    await wait_for(sim, balanced)
    assert sim.stats.completed == 1 and sim.stats.aborted == 0


async def test_stream_bad_chunk_after(sim: Simulator, client: httpx.AsyncClient) -> None:
    reply = "one two three four"
    body = chat_body("bad", stream=True, reply=reply, chunks=4, bad_chunk_after=1)
    data = await read_stream(client, f"{sim.url}/chat/completions", body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[1])
    good = [json.loads(item) for item in data[:1] + data[2:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in good) == reply
    assert data[-1] == "[DONE]"


async def test_stream_error_status_is_plain_json(sim: Simulator, client: httpx.AsyncClient) -> None:
    body = chat_body("x", stream=True, status=429, retry_after="2")
    response = await client.post(f"{sim.url}/chat/completions", json=body)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-type"] == "application/json"


# -- aborts: the simulator sees the client leave at once ---------------------------------


async def post_then_cancel(
    sim: Simulator, client: httpx.AsyncClient, body: dict[str, Any]
) -> float:
    """Start a request, cancel it once the simulator has it, return when it was cancelled."""
    cancelled_at = 0.0
    async with trio.open_nursery() as nursery:

        async def post() -> None:
            await client.post(f"{sim.url}/chat/completions", json=body)
            raise AssertionError("the request should not have been answered")

        total = sim.stats.requests_total
        nursery.start_soon(post)
        await wait_for(sim, lambda s: s.requests_total == total + 1)
        await trio.sleep(0.05)  # well into the wait, not at its start
        cancelled_at = trio.current_time()
        nursery.cancel_scope.cancel()
    return cancelled_at


async def assert_aborted_promptly(sim: Simulator, cancelled_at: float, aborted: int = 1) -> None:
    await wait_for(sim, lambda s: s.aborted == aborted and s.inflight == 0)
    assert sim.stats.last_abort_at is not None
    assert 0 <= sim.stats.last_abort_at - cancelled_at < ABORT_BOUND_S
    assert balanced(sim.stats)


@pytest.mark.parametrize(
    "behaviour",
    [{"hang": True}, {"latency_s": 30}, {"hang": True, "stream": True}],
    ids=["hang", "latency", "stream-hang"],
)
async def test_abort_seen_within_100ms(
    sim: Simulator, client: httpx.AsyncClient, behaviour: dict[str, Any]
) -> None:
    cancelled_at = await post_then_cancel(sim, client, chat_body("wait", **behaviour))
    await assert_aborted_promptly(sim, cancelled_at)
    assert sim.stats.statuses == {}  # nothing was answered


@pytest.mark.parametrize(
    "behaviour",
    [{"stall_after": 2}, {"chunk_delay_s": 30}],
    ids=["stall", "slow-chunks"],
)
async def test_abort_mid_stream_within_100ms(
    sim: Simulator, client: httpx.AsyncClient, behaviour: dict[str, Any]
) -> None:
    body = chat_body("stream", stream=True, chunks=5, **behaviour)
    received: list[str] = []
    with trio.move_on_after(0.3) as idle:
        async with aconnect_sse(client, "POST", f"{sim.url}/chat/completions", json=body) as source:
            async for event in source.aiter_sse():
                received.append(event.data)
    assert idle.cancelled_caught, "the stream should have gone silent"
    cancelled_at = trio.current_time()
    assert len(received) == behaviour.get("stall_after", 1)
    await assert_aborted_promptly(sim, cancelled_at)
    assert sim.stats.statuses == {200: 1}


async def test_429_once_then_hang_then_abort(sim: Simulator, client: httpx.AsyncClient) -> None:
    body = chat_body("flaky", status=429, fail_times=1, retry_after="1", hang=True)
    first = await client.post(f"{sim.url}/chat/completions", json=body)
    assert first.status_code == 429
    cancelled_at = await post_then_cancel(sim, client, body)
    await assert_aborted_promptly(sim, cancelled_at)
    assert sim.stats.statuses == {429: 1}
    assert sim.stats.completed == 1


async def test_max_inflight_under_20_concurrent(sim: Simulator, client: httpx.AsyncClient) -> None:
    sim.configure(latency_s=1.0)  # long enough that all 20 overlap on a busy machine
    codes: list[int] = []

    async def one(i: int) -> None:
        codes.append(
            (await client.post(f"{sim.url}/chat/completions", json=chat_body(f"n{i}"))).status_code
        )

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(one, i)
        await wait_for(sim, lambda s: s.inflight == 20)
    assert codes == [200] * 20
    await wait_for(sim, balanced)
    assert sim.stats.max_inflight == 20
    assert sim.stats.completed == 20 and sim.stats.requests_total == 20


# -- control: Python API and HTTP -------------------------------------------------------


async def test_configure_reset_and_wait_until(sim: Simulator, client: httpx.AsyncClient) -> None:
    url = f"{sim.url}/chat/completions"
    sim.configure(reply="configured")
    assert sim.default == Behaviour(reply="configured")
    assert reply_of(await client.post(url, json=chat_body("x"))) == "configured"
    # Per-request fields override the default; the rest of the default stays.
    sim.configure(reply="configured", status=418)
    assert reply_of(await client.post(url, json=chat_body("x", fail_times=0))) == "configured"
    sim.configure(latency_s=0.05)  # replaces the previous default entirely
    assert sim.default.reply is None
    with pytest.raises(pydantic.ValidationError):
        sim.configure(chunks=0)
    with pytest.raises(pydantic.ValidationError):
        sim.configure(no_such_field=1)

    stats = sim.stats
    woke = trio.Event()

    async def waiter() -> None:
        await sim.wait_until(lambda s: s.requests_total == 0)
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.01)
        assert not woke.is_set()
        sim.reset()
        with trio.fail_after(WAIT_S):
            await woke.wait()
    assert sim.stats is stats  # reset in place
    assert stats == SimStats()
    assert sim.default == Behaviour()
    # Attempt counters are reset too.
    body = chat_body("again", status=429, fail_times=1)
    assert [(await client.post(url, json=body)).status_code for _ in range(2)] == [429, 200]
    sim.reset()
    assert (await client.post(url, json=body)).status_code == 429


async def test_control_endpoints_over_http(sim: Simulator, client: httpx.AsyncClient) -> None:
    base = sim.url.removesuffix("/v1")
    configured = await client.post(f"{base}/_sim/config", json={"status": 503, "retry_after": "3"})
    assert configured.status_code == 200
    assert configured.json()["status"] == 503
    assert sim.default.status == 503
    failed = await client.post(f"{sim.url}/chat/completions", json=chat_body("x"))
    assert failed.status_code == 503 and failed.headers["retry-after"] == "3"
    await wait_for(sim, balanced)

    stats = (await client.get(f"{base}/_sim/stats")).json()
    assert stats["requests_total"] == 1 and stats["completed"] == 1
    assert stats["statuses"] == {"503": 1}

    for bad in ({"chunks": "many"}, {"nope": 1}, [1]):
        refused = await client.post(f"{base}/_sim/config", json=bad)
        assert refused.status_code == 400
        assert "invalid behaviour" in refused.json()["error"]["message"]
    assert (await client.post(f"{base}/_sim/config", content=b"{oops")).status_code == 400
    assert sim.default.status == 503  # a refused config changes nothing

    assert (await client.post(f"{base}/_sim/reset")).json() == {"ok": True}
    assert sim.default == Behaviour()
    assert (await client.get(f"{base}/_sim/stats")).json()["requests_total"] == 0
    assert (
        await client.post(f"{sim.url}/chat/completions", json=chat_body("x"))
    ).status_code == 200
    assert (await client.get(f"{base}/_sim/reset")).status_code == 404


async def test_serve_simulator_with_given_simulator(nursery: trio.Nursery) -> None:
    mine = Simulator(models=["only-one"])
    started = await nursery.start(partial(serve_simulator, "127.0.0.1", 0, simulator=mine))
    assert started is mine and mine.url
    async with httpx.AsyncClient(headers=AUTH) as http:
        data = (await http.get(f"{mine.url}/models")).json()
    assert [m["id"] for m in data["data"]] == ["only-one"]


# -- the `exai mock-provider` command ---------------------------------------------------


def repo_env() -> dict[str, str]:
    root = str(Path(exai.__file__).resolve().parent.parent)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_mock_provider_command(signum: signal.Signals) -> None:
    command = [
        sys.executable,
        "-c",
        "from exai.cli import main; main()",
        "mock-provider",
        "--port",
        "0",
    ]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=repo_env()
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(15):
            while not line.endswith(b"\n"):
                part = await process.stdout.receive_some(1)
                assert part, "the command exited without printing its URL"
                line += part
        prefix = "exai mock-provider on "
        text = line.decode().strip()
        assert text.startswith(prefix), text
        url = text.removeprefix(prefix)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with httpx.AsyncClient(headers=AUTH, timeout=WAIT_S) as http:
            models = await http.get(f"{url}/models")
            assert models.status_code == 200 and models.json()["data"]
            answer = await http.post(f"{url}/chat/completions", json=chat_body("hi"))
            assert answer.json()["choices"][0]["message"]["content"] == default_reply("hi")
        process.send_signal(signum)
        with trio.fail_after(WAIT_S):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


def test_mock_provider_reports_a_busy_port() -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="ERROR", format="{message}")
    try:
        with socket.socket() as busy, warnings.catch_warnings():
            # hypercorn leaves the socket it failed to bind unclosed; that is not ours to test.
            warnings.simplefilter("ignore", ResourceWarning)
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            assert run_mock_provider("127.0.0.1", busy.getsockname()[1]) == 1
            gc.collect()
    finally:
        logger.remove(sink)
    assert len(lines) == 1 and "cannot listen" in lines[0]
