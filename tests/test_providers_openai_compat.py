"""One HTTP attempt against a scripted OpenAI-compatible endpoint (httpx.MockTransport).

Rules: no network; `autojump_clock` for every timeout (the mock handler sleeps in trio time).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest
import trio
from providers_support import chunk, completion_body, error, messages, ok, sse, words_stream

from exai.providers.base import Completion
from exai.providers.catalog import CATALOG
from exai.providers.openai_compat import AttemptError, OpenAICompatProvider

KEY = "sk-very-secret-kimi-key"
MODEL = CATALOG["kimi-k2-0905-preview"]


def provider(handler: Any) -> OpenAICompatProvider:
    return OpenAICompatProvider(
        "kimi", "http://kimi.test/v1/", KEY, max_connections=4, transport=httpx.MockTransport(handler)
    )


def answering(response: httpx.Response | Any) -> Any:
    async def handler(request: httpx.Request) -> httpx.Response:
        return response() if callable(response) else response

    return handler


async def attempt(p: OpenAICompatProvider, *, on_text: Any = None, **kwargs: Any) -> Completion:
    params: dict[str, Any] = {"model": MODEL, "messages": messages(), "timeout_s": 60.0, "stream_idle_s": 5.0}
    params.update(kwargs)
    async with p.client:
        return await p.attempt(on_text=on_text, **params)


async def failure(p: OpenAICompatProvider, **kwargs: Any) -> AttemptError:
    with pytest.raises(AttemptError) as caught:
        await attempt(p, **kwargs)
    exc = caught.value
    # The cause is kept (`raise ... from exc`) for the log, and only an httpx error is one.
    assert exc.__cause__ is None or isinstance(exc.__cause__, httpx.HTTPError)
    assert exc.__cause__ is not None or exc.__context__ is None or exc.__suppress_context__
    assert KEY not in str(exc)
    assert p.open_requests == 0
    return exc


async def test_a_plain_completion_sends_an_openai_request_and_reads_usage() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok("the answer", prompt_tokens=11, completion_tokens=3)

    p = provider(handler)
    result = await attempt(p, temperature=0.2, max_tokens=100)
    assert (result.text, result.model, result.provider, result.finish_reason) == (
        "the answer",
        MODEL.name,
        "kimi",
        "stop",
    )
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 3)
    [request] = seen
    assert str(request.url) == "http://kimi.test/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.content)
    assert body == {
        "model": MODEL.name,
        "messages": messages(),
        "stream": False,
        "temperature": 0.2,
        "max_tokens": 100,
    }
    assert p.open_requests == 0


async def test_open_requests_counts_a_request_while_it_runs() -> None:
    during: list[int] = []
    p: OpenAICompatProvider

    async def handler(request: httpx.Request) -> httpx.Response:
        during.append(p.open_requests)
        return ok()

    p = provider(handler)
    await attempt(p)
    assert during == [1]
    assert p.open_requests == 0


@pytest.mark.parametrize(
    ("response", "kind", "retryable", "phrases"),
    [
        (error(401, "Invalid Authentication"), "auth", False, ["HTTP 401", "KIMI_API_KEY", "restart"]),
        # Kimi answers 403 when the balance is used up (contract 4b), not for a bad key.
        (error(403, "forbidden"), "quota", False, ["HTTP 403", "balance", "Top up"]),
        (error(429, "slow down"), "rate_limited", True, ["rate limiting", "EXAI_KIMI_RPM"]),
        (
            error(429, "You exceeded your current token quota", code="exceeded_current_quota_error"),
            "quota",
            False,
            ["balance or token quota", "HTTP 429 exceeded_current_quota_error"],
        ),
        (error(408, "timeout"), "timeout", True, ["HTTP 408"]),
        (error(409, "conflict"), "unavailable", True, ["HTTP 409"]),
        (error(500, "boom"), "unavailable", True, ["unavailable", "HTTP 500: boom"]),
        (error(503, "overloaded"), "unavailable", True, ["HTTP 503: overloaded"]),
        (
            error(400, "Invalid request: Your request exceeded model token limit: 262144"),
            "context_too_long",
            False,
            ["262,144 tokens", "about", "exceeded model token limit"],
        ),
        (error(413, "payload too large"), "context_too_long", False, ["262,144 tokens"]),
        (
            error(400, "The request was rejected because it was considered high risk", code="content_filter"),
            "content_filtered",
            False,
            ["refused the content", "Rephrase"],
        ),
        (error(404, "model not found"), "bad_request", False, [MODEL.name, "KIMI_BASE_URL"]),
        (error(422, "temperature must be <= 1"), "bad_request", False, ["HTTP 422: temperature must be <= 1"]),
        (
            httpx.Response(400, text="<html><body>Bad Request</body></html>"),
            "bad_request",
            False,
            ["HTTP 400: <html><body>Bad Request</body></html>"],
        ),
    ],
)
async def test_error_statuses_map_to_kinds_with_actionable_messages(
    response: httpx.Response, kind: str, retryable: bool, phrases: list[str]
) -> None:
    exc = await failure(provider(answering(response)))
    assert (exc.kind, exc.retryable, exc.status, exc.provider) == (kind, retryable, response.status_code, "kimi")
    for phrase in phrases:
        assert phrase in str(exc)


async def test_retry_after_is_read_from_the_response() -> None:
    exc = await failure(provider(answering(error(429, retry_after="7"))))
    assert exc.retry_after == 7.0
    exc = await failure(provider(answering(error(503))))
    assert exc.retry_after is None


async def test_an_error_body_echoing_the_key_is_scrubbed() -> None:
    exc = await failure(provider(answering(error(400, f"bad key {KEY} in request"))))
    assert "[redacted]" in str(exc)


async def test_long_error_bodies_are_shortened() -> None:
    exc = await failure(provider(answering(error(500, "x" * 5000))))
    assert len(str(exc)) < 600


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="not json at all"),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json={"choices": [{"message": {"content": 42}}]}),
        httpx.Response(200, json=["a list"]),
    ],
)
async def test_a_200_that_is_not_a_completion_is_a_bad_response(response: httpx.Response) -> None:
    exc = await failure(provider(answering(response)))
    assert exc.kind == "bad_response"
    assert not exc.retryable
    assert "no partial answer was used" in str(exc)


async def test_a_filtered_finish_is_an_error_not_an_answer() -> None:
    body = completion_body("partial")
    body["choices"][0]["finish_reason"] = "content_filter"
    exc = await failure(provider(answering(httpx.Response(200, json=body))))
    assert exc.kind == "content_filtered"


@pytest.mark.parametrize(
    ("raised", "kind", "phrase"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "unavailable", "Could not connect"),
        (httpx.ConnectTimeout("timed out"), "unavailable", "KIMI_BASE_URL"),
        (httpx.ReadTimeout("read timed out"), "timeout", "did not answer in time"),
        (httpx.PoolTimeout("pool"), "timeout", "did not answer in time"),
        (httpx.RemoteProtocolError("peer closed connection"), "unavailable", "broke mid-request"),
        (httpx.ReadError("reset"), "unavailable", "broke mid-request"),
    ],
)
async def test_transport_errors_become_retryable_provider_errors(raised: Exception, kind: str, phrase: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    exc = await failure(provider(handler))
    assert (exc.kind, exc.retryable) == (kind, True)
    assert exc.__cause__ is raised
    assert phrase in str(exc)
    assert "http://kimi.test/v1" in str(exc) or kind == "timeout" or "mid-request" in str(exc)


async def test_an_unusable_url_is_not_retried() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'")

    exc = await failure(provider(handler))
    assert (exc.kind, exc.retryable) == ("unavailable", False)
    assert "Fix KIMI_BASE_URL" in str(exc)


async def test_the_provider_timeout_ends_an_attempt_as_a_retryable_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1000)
        return ok()

    start = trio.current_time()
    exc = await failure(provider(handler), timeout_s=5.0)
    assert trio.current_time() - start == pytest.approx(5.0)
    assert (exc.kind, exc.retryable) == ("timeout", True)
    assert "EXAI_PROVIDER_TIMEOUT_SECS" in str(exc)


async def test_the_callers_deadline_cancels_instead_of_a_timeout_error(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1000)
        return ok()

    p = provider(handler)
    with trio.move_on_after(3) as scope:
        await attempt(p, timeout_s=60.0)
    assert scope.cancelled_caught
    assert p.open_requests == 0


# -- streaming ---------------------------------------------------------------------------


async def test_streaming_reports_growing_text_in_order_and_returns_the_whole_answer(
    autojump_clock: trio.abc.Clock,
) -> None:
    events: list[str | float] = []
    for word in ["one ", "two ", "three"]:
        events += [chunk(word), 0.5]
    events += [chunk(None, "stop", usage={"prompt_tokens": 9, "completion_tokens": 3}), "[DONE]"]
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse(events)

    reports: list[tuple[str, int]] = []

    async def on_text(text: str, tokens: int, thinking: bool) -> None:
        reports.append((text, tokens))

    result = await attempt(provider(handler), on_text=on_text)
    assert reports == [("one ", 1), ("one two ", 2), ("one two three", 3)]
    assert result.text == "one two three"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (9, 3)
    assert json.loads(seen[0].content)["stream"] is True
    assert seen[0].headers["accept"] == "text/event-stream"


async def test_streaming_progress_is_throttled_but_the_first_chunk_is_reported_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    events: list[str | float] = []
    for i in range(50):
        events += [chunk(f"w{i} "), 0.01]
    events += [chunk(None, "stop"), "[DONE]"]
    reports: list[tuple[float, int]] = []
    start = trio.current_time()

    async def on_text(text: str, tokens: int, thinking: bool) -> None:
        reports.append((trio.current_time() - start, tokens))

    result = await attempt(provider(answering(lambda: sse(events))), on_text=on_text)
    assert reports[0] == (0.0, 1)
    assert 4 <= len(reports) <= 6  # 0.5 s of chunks, at most one report per 0.1 s
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(reports)]
    assert min(gaps) >= 0.1 - 1e-9
    assert [t for _, t in reports] == sorted(t for _, t in reports)
    assert result.text.count("w") == 50
    assert result.usage.completion_tokens == 50  # counted from the stream: no usage sent


async def test_reasoning_chunks_count_as_progress_but_not_as_answer(autojump_clock: trio.abc.Clock) -> None:
    thinking = json.dumps({"choices": [{"delta": {"reasoning_content": "hmm"}, "finish_reason": None}]})
    events: list[str | float] = [thinking, 0.2, chunk("yes"), chunk(None, "stop"), "[DONE]"]
    reports: list[tuple[str, int]] = []

    async def on_text(text: str, tokens: int, thinking: bool) -> None:
        reports.append((text, tokens))

    result = await attempt(provider(answering(lambda: sse(events))), on_text=on_text)
    assert result.text == "yes"
    assert reports == [("", 1), ("yes", 2)]


async def test_a_stream_that_goes_silent_is_aborted_after_the_idle_time(autojump_clock: trio.abc.Clock) -> None:
    events: list[str | float] = [chunk("a"), 1.0, chunk("b")]
    p = provider(answering(lambda: sse(events, then_stall=True)))
    start = trio.current_time()
    exc = await failure(p, on_text=_ignore, stream_idle_s=5.0)
    assert trio.current_time() - start == pytest.approx(6.0)  # 1 s of chunks, then 5 s of silence
    assert (exc.kind, exc.retryable) == ("timeout", True)
    assert "EXAI_STREAM_IDLE_SECS" in str(exc)


async def test_a_slow_progress_callback_is_not_provider_silence(autojump_clock: trio.abc.Clock) -> None:
    events: list[str | float] = [chunk("a"), 0.2, chunk("b"), chunk(None, "stop"), "[DONE]"]

    async def slow_on_text(text: str, tokens: int, thinking: bool) -> None:
        await trio.sleep(10.0)  # longer than the idle time: a slow client, not a silent provider

    result = await attempt(provider(answering(lambda: sse(events))), on_text=slow_on_text, stream_idle_s=5.0)
    assert result.text == "ab"


async def test_a_body_left_open_after_done_still_gives_the_answer(autojump_clock: trio.abc.Clock) -> None:
    events: list[str | float] = [chunk("all of it"), chunk(None, "stop"), "[DONE]"]
    start = trio.current_time()
    result = await attempt(provider(answering(lambda: sse(events, then_stall=True))), on_text=_ignore, stream_idle_s=5.0)
    assert result.text == "all of it"
    assert trio.current_time() - start == pytest.approx(5.0)  # read on for the body's end, then gave up


async def test_waiting_for_the_stream_headers_also_counts_as_idle(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1000)
        return words_stream(["late"])

    start = trio.current_time()
    exc = await failure(provider(handler), on_text=_ignore, stream_idle_s=5.0)
    assert trio.current_time() - start == pytest.approx(5.0)
    assert "EXAI_STREAM_IDLE_SECS" in str(exc)


async def test_a_stream_cut_mid_way_is_an_error_never_a_half_answer() -> None:
    events: list[str | float] = [chunk("the first half")]
    exc = await failure(provider(answering(lambda: sse(events))), on_text=_ignore)
    assert (exc.kind, exc.retryable) == ("unavailable", True)
    assert "cut off after 1 chunks" in str(exc)
    assert "No partial answer was used" in str(exc)


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", json.dumps({"choices": [{"delta": "x"}]})])
async def test_a_malformed_chunk_is_a_bad_response(bad: str) -> None:
    events: list[str | float] = [chunk("ok "), bad, chunk(None, "stop"), "[DONE]"]
    exc = await failure(provider(answering(lambda: sse(events))), on_text=_ignore)
    assert exc.kind == "bad_response"
    assert "malformed chunk" in str(exc)


async def test_an_error_event_mid_stream_is_a_retryable_failure() -> None:
    events: list[str | float] = [chunk("ok "), json.dumps({"error": {"message": "overloaded"}})]
    exc = await failure(provider(answering(lambda: sse(events))), on_text=_ignore)
    assert (exc.kind, exc.retryable) == ("unavailable", True)
    assert "overloaded" in str(exc)


async def test_a_filtered_stream_is_an_error() -> None:
    events: list[str | float] = [chunk("some "), chunk(None, "sensitive"), "[DONE]"]
    exc = await failure(provider(answering(lambda: sse(events))), on_text=_ignore)
    assert exc.kind == "content_filtered"


async def test_a_stream_ending_with_a_finish_reason_but_no_done_is_complete() -> None:
    events: list[str | float] = [chunk("all"), chunk(None, "length")]
    result = await attempt(provider(answering(lambda: sse(events))), on_text=_ignore)
    assert (result.text, result.finish_reason) == ("all", "length")


async def test_a_streaming_request_refused_with_a_status_maps_like_a_plain_one() -> None:
    exc = await failure(provider(answering(error(429, retry_after="2"))), on_text=_ignore)
    assert (exc.kind, exc.retry_after) == ("rate_limited", 2.0)


async def test_a_streaming_request_answered_with_json_is_a_bad_response() -> None:
    exc = await failure(provider(answering(ok())), on_text=_ignore)
    assert exc.kind == "bad_response"
    assert "text/event-stream" in str(exc)


async def _ignore(text: str, tokens: int, thinking: bool) -> None:
    pass


# -- the event-stream format, however the bytes arrive -------------------------------------


def _raw_stream(pieces: list[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
    async def body() -> Any:
        for piece in pieces:
            yield piece

    return httpx.Response(200, headers=headers or {"content-type": "text/event-stream"}, content=body())


def _split_everywhere(data: bytes) -> list[list[bytes]]:
    """The body whole, byte by byte, and cut at every position into two pieces."""
    return [[data], [data[i : i + 1] for i in range(len(data))]] + [[data[:i], data[i:]] for i in range(1, len(data))]


_FORMATTED = (
    ": a comment first\r\n"
    "event: message\r\n"
    f"data: {chunk('one ')}\r\n\r\n"
    "id: 7\n"
    "retry: 1000\n"
    "event: ping\n\n"  # an event without data is not one
    f"data:{chunk('two ')}\r\r"  # no space after the colon; CR line ends
    'data: {"choices": [{"index": 0,\n'  # one event's data over two lines
    'data:  "delta": {"content": "three"}, "finish_reason": "stop"}]}\n\n'
    "data: [DONE]\n\n"
    f"data: {chunk('never finished')}"  # no blank line before the end: dropped
)


async def test_server_sent_events_are_read_by_the_format_wherever_the_bytes_are_cut() -> None:
    for pieces in _split_everywhere(_FORMATTED.encode()):
        reports: list[str] = []

        async def on_text(text: str, tokens: int, thinking: bool, reports: list[str] = reports) -> None:
            reports.append(text)

        result = await attempt(provider(answering(lambda pieces=pieces: _raw_stream(pieces))), on_text=on_text)
        assert (result.text, result.finish_reason, reports[0]) == ("one two three", "stop", "one "), pieces


async def test_a_compressed_stream_is_decoded() -> None:
    import gzip

    body = "".join(f"data: {item}\n\n" for item in [chunk("zipped "), chunk("answer", "stop"), "[DONE]"])
    packed = gzip.compress(body.encode())
    headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
    result = await attempt(provider(answering(lambda: _raw_stream([packed[:10], packed[10:]], headers))), on_text=_ignore)
    assert result.text == "zipped answer"


async def test_a_stream_of_undecodable_bytes_is_a_bad_response_not_a_crash() -> None:
    exc = await failure(provider(answering(lambda: _raw_stream([b"data: \xff\xfe{\n\n"]))), on_text=_ignore)
    assert exc.kind == "bad_response"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_is_the_one_the_client_would_build(stream: bool) -> None:
    """The request built from headers prepared once is byte for byte httpx's own."""
    provider = OpenAICompatProvider("kimi", "http://127.0.0.1:9/v1", "sk-key", max_connections=1)
    body = {"model": "kimi-k2-0905-preview", "messages": [{"role": "user", "content": "héllo"}], "stream": stream}
    timeout = httpx.Timeout(connect=1.0, read=2.0, write=3.0, pool=4.0)
    ours = provider._build_request(body, timeout)
    headers = {"Content-Type": "application/json"}
    if stream:
        headers |= {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    theirs = provider.client.build_request("POST", provider.url, headers=headers, content=ours.content, timeout=timeout)
    assert (ours.method, ours.url, ours.headers.raw) == (theirs.method, theirs.url, theirs.headers.raw)
    assert ours.content == theirs.content and json.loads(ours.content) == body
    assert ours.extensions["timeout"] == theirs.extensions["timeout"]
    await provider.aclose()
