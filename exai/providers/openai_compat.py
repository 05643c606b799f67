"""One HTTP attempt against an OpenAI-compatible chat-completions API (Kimi, GLM, the simulator).

This is the I/O boundary: every httpx error and every provider error body becomes an
`AttemptError` here, with a sentence a user can act on and the original as its cause. Retries,
circuits, limiters and budgets are the gateway's; this module makes exactly one request per
`attempt()`.

Three pieces httpx or httpx-sse would do are done here, because each costs several times less
CPU per request (`python scripts/bench_provider_parts.py`, in process, a 5-chunk stream; medians
of 3 runs of 5,000 requests, microseconds of CPU per request):

    piece                          library way   here   saved
    build the request (headers)         68        8      60   client.build_request(json=...)
    send it (client steps)              61        7      54   client.send(stream=True)
    parse the event stream              67       14      53   httpx_sse.EventSource.aiter_sse

about 167 us of a whole streamed call's 481 us (`scripts/bench_provider.py --calls 2000`): the
library way costs a third more per call. The request is built the way `build_request` builds
it (same headers, same order); what `send` adds (auth, redirects, cookies, event hooks) a
provider does not use; the parser follows the WHATWG event-stream format for `data` fields.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import orjson
import trio

from exai.providers.base import Completion, ErrorKind, OnText, ProviderError, Source, Usage
from exai.providers.catalog import PROVIDER_INFO, ModelInfo, ProviderInfo, estimate_tokens
from exai.providers.retry import parse_retry_after
from exai.providers.transport import TrioH11Transport
from exai.providers.vendors import (
    DIALECTS,
    known,
    rate_hold_s,
    reset_time,
    thinking_field,
    verdict,
)

CONNECT_TIMEOUT_S: Final = 10.0
KEEPALIVE_EXPIRY_S: Final = 30.0
PROGRESS_INTERVAL_S: Final = 0.1  # at most ~10 on_text calls per second, the first at once
ERROR_DETAIL_CHARS: Final = 300
USER_AGENT: Final = "exai/0.1"

_FILTERED_FINISH: Final = frozenset({"content_filter", "sensitive"})


class AttemptError(ProviderError):
    """One provider request failed; carries what the retry policy needs to decide."""

    def __init__(
        self,
        provider: str,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool = False,
        fails_circuit: bool | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(provider, kind, message, retryable=retryable, fails_circuit=fails_circuit)
        self.status = status
        self.retry_after = retry_after


def _request_headers(stream: bool) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if stream:
        headers |= {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    return headers


def make_client(api_key: str, transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    """The provider's one shared client, over `transport`."""
    return httpx.AsyncClient(
        transport=transport,
        headers={"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT},
        follow_redirects=False,
    )


class OpenAICompatProvider:
    """A chat-completions endpoint and the shared client that talks to it.

    `open_requests` counts requests whose HTTP exchange has begun and not yet been closed.
    `hold` is told, in seconds, how long the provider's rate headers (X-RateLimit-Remaining: 0,
    X-RateLimit-Reset) ask the next request to wait.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        *,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
        hold: Callable[[float], None] | None = None,
    ):
        self.name = name
        self.dialect = DIALECTS[name]
        self.hold = hold
        self.info: ProviderInfo = PROVIDER_INFO[name]
        self.base_url = str(base_url).rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self._api_key = api_key
        # Our transport, not httpcore's pool (why: exai/providers/transport.py). The keep-alive
        # pool is sized to the provider's in-flight limit, which its limiter enforces per attempt.
        self.transport = transport or TrioH11Transport(
            max_keepalive=max_connections, keepalive_expiry=KEEPALIVE_EXPIRY_S
        )
        self.client = make_client(api_key, self.transport)
        self.open_requests = 0
        # What the client would add to every request, worked out once: the URL, and the
        # headers of a JSON and of a streaming request (the client's, then the request's own).
        self._url = httpx.URL(self.url)
        self._headers = {stream: self._prepared_headers(stream) for stream in (False, True)}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def attempt(
        self,
        *,
        model: ModelInfo,
        messages: list[dict[str, Any]],
        timeout_s: float,
        stream_idle_s: float,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_text: OnText | None = None,
        thinking: str = "auto",
        web_search: bool = False,
    ) -> Completion:
        """Make one request; return the whole answer or raise AttemptError.

        `thinking` (auto|enabled|disabled) is sent as the `thinking` field when the model takes
        it; `web_search` adds the vendor's own search tool. A Kimi answer that calls
        `$web_search` comes back with `tool_calls` for the caller to echo in the next request.

        The attempt ends by `timeout_s` (a retryable timeout) unless the caller's own deadline
        comes first, in which case the caller's cancellation propagates untouched. Cancellation
        closes the HTTP request at once; no connection is left checked out of the pool.
        """
        body: dict[str, Any] = {"model": model.name, "messages": messages, "stream": on_text is not None}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if model.thinking and (field_value := thinking_field(thinking)) is not None:
            body["thinking"] = field_value
        if web_search:
            body["tools"] = [self.dialect.web_search_tool]
        now = trio.current_time()
        call_deadline = trio.current_effective_deadline()
        attempt_deadline = now + timeout_s
        left = max(0.0, min(timeout_s, call_deadline - now))
        # A stream's idle scope (stream_idle_s, around the head and every read) bounds its reads.
        read_s = None if on_text is not None else left
        timeout = httpx.Timeout(connect=min(CONNECT_TIMEOUT_S, left), read=read_s, write=left, pool=left)
        # Our own scope only when the provider timeout comes first: at the caller's deadline
        # the caller's Cancelled must propagate, not a retryable timeout.
        own = attempt_deadline < call_deadline
        self.open_requests += 1
        try:
            with trio.CancelScope(deadline=attempt_deadline if own else math.inf) as scope:
                with self._map_transport_errors():
                    if on_text is None:
                        return await self._request(body, model, messages, timeout)
                    return await self._stream(body, model, messages, timeout, stream_idle_s, on_text)
        finally:
            self.open_requests -= 1
        assert scope.cancelled_caught
        await trio.lowlevel.checkpoint_if_cancelled()
        raise AttemptError(
            self.name,
            ErrorKind.TIMEOUT,
            f"{self.info.label} did not answer within {timeout_s:g} s (EXAI_PROVIDER_TIMEOUT_SECS). "
            "Try again, ask for a shorter answer, or raise EXAI_PROVIDER_TIMEOUT_SECS.",
            retryable=True,
        )

    def _prepared_headers(self, stream: bool) -> list[tuple[bytes, bytes]]:
        headers = self.client.build_request("POST", self.url, headers=_request_headers(stream)).headers
        del headers["Content-Length"]  # httpx's "0" for a POST without a body; each body sets its own
        return headers.raw

    def _build_request(self, body: dict[str, Any], timeout: httpx.Timeout) -> httpx.Request:
        """The request `client.build_request` would make (the same headers, in the same order,
        Content-Length last), from the headers prepared once: given its stream and its
        Content-Length, httpx.Request skips its content encoding and header defaults."""
        content = orjson.dumps(body)
        # A ByteStream is sent with the head in one write, and is replayable, so the transport
        # may retry it on a fresh connection if a pooled one was stale.
        request = httpx.Request(
            "POST",
            self._url,
            headers=[*self._headers[body["stream"]], (b"Content-Length", str(len(content)).encode())],
            stream=httpx.ByteStream(content),
            extensions={"timeout": timeout.as_dict()},
        )
        request.read()  # `request.content`, as for any request built from bytes
        return request

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """The response head; the body streams. The client's own per-request steps (auth,
        redirects, cookies, event hooks) are not used by a provider, so the request goes
        straight to the client's transport."""
        if self.client.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        response = await self.transport.handle_async_request(request)
        response.request = request
        if self.hold is not None and (remaining := response.headers.get("x-ratelimit-remaining")) is not None:
            wait = rate_hold_s(remaining, response.headers.get("x-ratelimit-reset"))
            if wait:
                self.hold(wait)
        return response

    async def _request(
        self, body: dict[str, Any], model: ModelInfo, messages: list[dict[str, Any]], timeout: httpx.Timeout
    ) -> Completion:
        response = await self._send(self._build_request(body, timeout))
        try:
            await response.aread()
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise self._error_from_response(response, model, messages)
        try:
            payload = orjson.loads(response.content)
        except ValueError:
            raise self._bad_response("an answer that is not a chat completion") from None
        if isinstance(payload, dict) and "error" in payload:
            raise self._stream_error(payload)  # an error answered with 200
        try:
            choice = payload["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            finish = choice.get("finish_reason")
            tool_calls = message.get("tool_calls") or []
            if not isinstance(text, str) or not isinstance(tool_calls, list):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise self._bad_response("an answer that is not a chat completion") from None
        self._check_finish(finish)
        usage = _usage(payload.get("usage")) or Usage(estimate_tokens(messages), 0)
        return Completion(
            text=text,
            model=model.name,
            provider=self.name,
            usage=usage,
            finish_reason=finish,
            tool_calls=self._echoed(tool_calls),
            reasoning=str(message.get("reasoning_content") or ""),
            sources=_sources(payload.get("web_search")),
        )

    async def _stream(
        self,
        body: dict[str, Any],
        model: ModelInfo,
        messages: list[dict[str, Any]],
        timeout: httpx.Timeout,
        idle_s: float,
        on_text: OnText,
    ) -> Completion:
        state = _StreamState()
        # One scope whose deadline moves forward with the stream: the head, then each read
        # that brought bytes (the events in one read arrived together).
        with trio.CancelScope(deadline=trio.current_time() + idle_s) as idle:
            response = await self._send(self._build_request(body, timeout))
            try:
                if response.status_code != 200:
                    await response.aread()
                    raise self._error_from_response(response, model, messages)
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    raise self._bad_response(f"an answer of type {content_type or '(none)'!r} instead of text/event-stream")
                async with _Finishing(_SSEData(_body_chunks(response))) as events:
                    armed_at_read = 0  # the read the idle deadline last counted from
                    async for data in events:
                        now = trio.current_time()
                        if self._take_event(data, state, now):
                            # The caller's time (a slow client, say) is not provider silence.
                            idle.deadline = math.inf
                            await on_text("".join(state.parts), state.tokens, state.thinking)
                            now = trio.current_time()
                            armed_at_read = -1
                        if armed_at_read != events.reads:
                            armed_at_read = events.reads
                            idle.deadline = now + idle_s
            finally:
                await response.aclose()
        if idle.cancelled_caught:
            await trio.lowlevel.checkpoint_if_cancelled()
            if not state.done:
                raise AttemptError(
                    self.name,
                    ErrorKind.TIMEOUT,
                    f"{self.info.label} stopped sending its answer for {idle_s:g} s "
                    "(EXAI_STREAM_IDLE_SECS); the stream was aborted. Try again.",
                    retryable=True,
                )
        if not state.done and state.finish is None:
            raise AttemptError(
                self.name,
                ErrorKind.UNAVAILABLE,
                f"The answer from {self.info.label} was cut off after {state.tokens} chunks (the "
                "stream ended without finishing). No partial answer was used. Try again.",
                retryable=True,
            )
        self._check_finish(state.finish)
        usage = state.usage or Usage(estimate_tokens(messages), state.tokens)
        return Completion(
            text="".join(state.parts),
            model=model.name,
            provider=self.name,
            usage=usage,
            finish_reason=state.finish,
            tool_calls=self._echoed([state.tool_calls[i] for i in sorted(state.tool_calls)]),
            reasoning="".join(state.reasoning),
            sources=state.sources,
        )

    def _take_event(self, data: str, state: _StreamState, now: float) -> bool:
        """Take in one SSE event arrived at `now`; True when progress is due (at most every
        PROGRESS_INTERVAL_S)."""
        if state.done:
            return False  # read on to the end of the body, so the connection can be reused
        if data.strip() == "[DONE]":
            state.done = True
            return False
        chunk = self._parse_chunk(data)
        if "error" in chunk:
            raise self._stream_error(chunk)
        state.usage = _usage(chunk.get("usage")) or state.usage
        if "web_search" in chunk:
            state.sources += _sources(chunk["web_search"])
        delta, finish, choice_usage = self._parse_choice(chunk)
        state.usage = choice_usage or state.usage
        state.finish = finish or state.finish
        if delta.get("tool_calls"):
            _merge_tool_calls(state.tool_calls, delta["tool_calls"])
        content = delta.get("content")
        reasoning = delta.get("reasoning_content")
        if isinstance(content, str) and content:
            state.parts.append(content)
            state.thinking = False
        elif isinstance(reasoning, str) and reasoning:
            # The model's thinking: progress, never part of the answer.
            state.reasoning.append(reasoning)
            state.thinking = not state.parts
        else:
            return False
        state.tokens += 1
        if now - state.last_report < PROGRESS_INTERVAL_S:
            return False
        state.last_report = now
        return True

    def _parse_chunk(self, data: str) -> dict[str, Any]:
        try:
            chunk = orjson.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise self._bad_response("a malformed chunk in its streamed answer")
        return chunk

    def _parse_choice(self, chunk: dict[str, Any]) -> tuple[dict[str, Any], str | None, Usage | None]:
        choices = chunk.get("choices")
        if choices is None or choices == []:
            return {}, None, None
        try:
            choice = choices[0]
            delta = choice.get("delta") or {}
            finish = choice.get("finish_reason")
            if not isinstance(delta, dict) or not (finish is None or isinstance(finish, str)):
                raise TypeError("bad delta")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._bad_response("a malformed chunk in its streamed answer") from None
        return delta, finish, _usage(choice.get("usage"))

    def _check_finish(self, finish: str | None) -> None:
        if finish in _FILTERED_FINISH:
            raise AttemptError(
                self.name,
                ErrorKind.CONTENT_FILTERED,
                f"{self.info.label} stopped the answer with its content filter. "
                "Rephrase the request or leave out the flagged material.",
            )

    def _bad_response(self, what: str) -> AttemptError:
        return AttemptError(
            self.name,
            ErrorKind.BAD_RESPONSE,
            f"{self.info.label} sent {what}; no partial answer was used. Try again; if it "
            f"persists, check {self.info.url_env} points at an OpenAI-compatible API.",
        )

    def _error_from_response(
        self, response: httpx.Response, model: ModelInfo, messages: list[dict[str, Any]]
    ) -> AttemptError:
        """Map a non-200 answer to an error by the vendor's table (exai.providers.vendors)."""
        status = response.status_code
        error = _error_object(response.text)
        detail, code, error_type = _error_detail(error, response.text, self._api_key)
        found = verdict(self.name, status, code, error_type, detail)
        named = name_and_verdict[0] if (name_and_verdict := known(code, error_type)) else ""
        said = f"HTTP {status}" + (f" {named}" if named else "") + (f": {detail}" if detail else "")
        if found.kind is ErrorKind.CONTEXT_TOO_LONG:
            message = context_too_long_message(model, estimate_tokens(messages), said)
        else:
            message = self._sentence(found.cause, found.action, said, model.name)
            if found.kind is ErrorKind.QUOTA and (reset := reset_time(error, detail)) is not None:
                message = message.replace(f" ({said}).", f" ({said}; it resets at {reset}).", 1)
        return AttemptError(
            self.name,
            found.kind,
            message,
            retryable=found.retry,
            fails_circuit=found.circuit,
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    def _sentence(self, cause: str, action: str, said: str, model: str) -> str:
        """`<cause, naming the provider> (<what it said>). <What to do>.`"""
        fields = {
            "label": self.info.label,
            "model": model,
            "key": self.info.key_env,
            "rpm": self.info.rpm_env,
            "url": self.info.url_env,
            "allowed": self.info.allowed_env,
        }
        return f"{cause.format(**fields)} ({said}). {action.format(**fields)}."

    def _stream_error(self, chunk: dict[str, Any]) -> AttemptError:
        """An error object inside a 200 answer (a streamed chunk, or the whole body): the
        vendor's table when it names a known code or type, else a retryable failure."""
        error = chunk.get("error")
        error = error if isinstance(error, dict) else {}
        detail, code, error_type = _error_detail(error, orjson.dumps(chunk).decode(), self._api_key)
        found = known(code, error_type)
        if found is None:
            return AttemptError(
                self.name,
                ErrorKind.UNAVAILABLE,
                f"{self.info.label} reported an error mid-answer ({detail}). Try again.",
                retryable=True,
            )
        name, answer = found
        said = f"{name}: {detail}" if detail else name
        return AttemptError(
            self.name,
            answer.kind,
            self._sentence(answer.cause, answer.action, said, str(chunk.get("model") or "")),
            retryable=answer.retry,
            fails_circuit=answer.circuit,
        )

    def _echoed(self, tool_calls: list[Any]) -> list[dict[str, Any]]:
        """The answer's calls of the vendor's builtin search, to send back as they came; other
        tool calls are not exai's (it offers no other tools)."""
        echo = self.dialect.echo_tool
        return [
            call
            for call in tool_calls
            if echo is not None and isinstance(call, dict) and isinstance(call.get("function"), dict)
            and call["function"].get("name") == echo
        ]

    def _map_transport_errors(self) -> _TransportErrors:
        """The one place httpx exceptions become exai errors (`trio.Cancelled` passes untouched)."""
        return _TransportErrors(self)

    def _mapped(self, exc: httpx.HTTPError) -> AttemptError:
        """The AttemptError for an httpx exception: the first row of the table it is an instance of."""
        for row in _TRANSPORT_ERRORS:
            if isinstance(exc, row.types):
                message = row.message.format(
                    label=self.info.label, url=self.base_url, url_env=self.info.url_env, detail=_describe(exc)
                )
                return AttemptError(self.name, row.kind, message, retryable=row.retryable)
        raise AssertionError("unreachable: the table's last row is httpx.HTTPError")


# httpx exceptions -> (kind, retryable, message), most specific first, as httpx maps httpcore's
# (`httpx/_transports/default.py`, `map_httpcore_exceptions`).
@dataclass(frozen=True, slots=True)
class _TransportRow:
    types: type[httpx.HTTPError] | tuple[type[httpx.HTTPError], ...]
    kind: ErrorKind
    retryable: bool
    message: str


_TRANSPORT_ERRORS: Final = (
    _TransportRow(
        (httpx.ConnectError, httpx.ConnectTimeout),
        ErrorKind.UNAVAILABLE,
        True,
        "Could not connect to {label} at {url} ({detail}). Check {url_env} and the network.",
    ),
    _TransportRow(httpx.TimeoutException, ErrorKind.TIMEOUT, True, "{label} did not answer in time ({detail}). Try again."),
    _TransportRow(
        (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError),
        ErrorKind.UNAVAILABLE,
        True,
        "The connection to {label} broke mid-request ({detail}); no partial answer was used. Try again.",
    ),
    _TransportRow(
        httpx.DecodingError,
        ErrorKind.BAD_RESPONSE,
        False,
        "{label} sent an answer exai cannot decode ({detail}); no partial answer was used. Try again; "
        "if it persists, check {url_env} points at an OpenAI-compatible API.",
    ),
    _TransportRow(
        httpx.UnsupportedProtocol,
        ErrorKind.UNAVAILABLE,
        False,
        "The {label} URL {url} cannot be used ({detail}). Fix {url_env}.",
    ),
    _TransportRow(httpx.HTTPError, ErrorKind.UNAVAILABLE, True, "The request to {label} failed ({detail}). Try again."),
)


class _TransportErrors:
    """`with`: an httpx exception leaving the body becomes the provider's AttemptError, with the
    httpx exception as its cause.

    A class rather than a generator context manager: it wraps every provider attempt."""

    __slots__ = ("_provider",)

    def __init__(self, provider: OpenAICompatProvider):
        self._provider = provider

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, httpx.HTTPError):
            raise self._provider._mapped(exc) from exc


@dataclass
class _StreamState:
    parts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    thinking: bool = False  # the model is thinking and has not begun its answer
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    tokens: int = 0
    finish: str | None = None
    usage: Usage | None = None
    done: bool = False
    last_report: float = -math.inf


def _body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive: straight from the transport's stream unless the
    provider compressed it, when httpx decodes it."""
    if response.headers.get("content-encoding", "identity").strip().lower() in ("", "identity"):
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return response.stream.__aiter__()
    return response.aiter_bytes()


class _SSEData:
    """The `data` of each server-sent event in a byte stream, as text (WHATWG event-stream
    format: lines end with CRLF, LF or CR; a blank line ends an event; `data` lines join with
    newlines; comments and the other fields are not used here; an event without data is not
    one). An event the stream does not finish with a blank line is dropped, as the format says."""

    __slots__ = ("_buffer", "_chunks", "_data", "_ready", "ended", "reads")

    def __init__(self, chunks: AsyncIterator[bytes]):
        self._chunks = chunks
        self._buffer = b""
        self._data: list[str] = []
        self._ready: deque[str] = deque()
        self.reads = 0  # chunks read so far
        self.ended = False  # the body was read to its end

    def __aiter__(self) -> _SSEData:
        return self

    async def __anext__(self) -> str:
        while not self._ready:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self.ended = True
                if self._buffer:  # the last line, held back in case more of it followed
                    self._feed(b"", final=True)
                if self._ready:
                    break
                raise
            self.reads += 1
            self._feed(chunk)
        return self._ready.popleft()

    def _feed(self, chunk: bytes, final: bool = False) -> None:
        lines = (self._buffer + chunk).splitlines(keepends=True)
        self._buffer = b""
        # An unfinished last line waits for more; so does one ending in CR (LF may follow).
        if lines and not final and lines[-1][-1:] != b"\n":
            self._buffer = lines.pop()
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line:
                if self._data:
                    self._ready.append("\n".join(self._data))
                    self._data = []
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                self._data.append((value[1:] if value[:1] == b" " else value).decode("utf-8", "replace"))


class _Finishing:
    """`async with`: gives `events`; on exit, makes sure it and the generators under it ended.

    httpx's streaming iterators are async generators nested in one another, and `aclose()`
    on the outer one leaves the inner ones suspended (trio then warns when they are
    collected). Reading on inside a cancelled scope ends them all from the inside: the next
    read raises Cancelled in the innermost one, or the body turns out to be complete.
    """

    __slots__ = ("_events",)

    def __init__(self, events: _SSEData):
        self._events = events

    async def __aenter__(self) -> _SSEData:
        return self._events

    async def __aexit__(self, *exc_info: object) -> None:
        if self._events.ended:
            return  # nothing under it is left suspended
        with trio.CancelScope() as drain:
            drain.cancel()
            with suppress(Exception):  # StopAsyncIteration, or a read error: the exchange is over
                while True:
                    await self._events.__anext__()


def context_too_long_message(model: ModelInfo, estimated: int, said: str = "") -> str:
    because = f" ({PROVIDER_INFO[model.provider].label}: {said})" if said else ""
    return (
        f"The request (about {estimated:,} tokens by exai's estimate) does not fit the context "
        f"window of {model.name}, {model.context_window:,} tokens{because}. Send fewer or smaller "
        "files, shorten the conversation (start a new one without continuation_id), or use a "
        "model with a larger context window."
    )


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_object(text: str) -> dict[str, Any]:
    """The `error` object of an error body (or the body itself when it has none); {} if not JSON."""
    try:
        data = orjson.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    error = data.get("error", data)
    return error if isinstance(error, dict) else {"message": str(error)}


def _error_detail(error: dict[str, Any], text: str, api_key: str) -> tuple[str, str, str]:
    """(message, GLM code, Kimi type) of an error, secrets scrubbed, shortened."""
    if error:
        message = str(error.get("message") or error.get("msg") or orjson.dumps(error).decode())
    else:
        message = text.strip()
    code = str(error.get("code") or "")
    error_type = str(error.get("type") or "")
    if api_key:
        message, code, error_type = (part.replace(api_key, "[redacted]") for part in (message, code, error_type))
    message = " ".join(message.split())
    if len(message) > ERROR_DETAIL_CHARS:
        message = message[:ERROR_DETAIL_CHARS] + "…"
    return message, code[:80], error_type[:80]


def _usage(raw: Any) -> Usage | None:
    """Usage from an answer; cached prompt tokens as Kimi (`cached_tokens`) or GLM and OpenAI
    (`prompt_tokens_details.cached_tokens`) report them."""
    if not isinstance(raw, dict):
        return None
    try:
        details = raw.get("prompt_tokens_details")
        cached = raw.get("cached_tokens") or (details.get("cached_tokens") if isinstance(details, dict) else 0)
        return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0), int(cached or 0))
    except (TypeError, ValueError):
        return None


def _sources(raw: Any) -> list[Source]:
    """GLM's `web_search` results as sources ({title, url}); anything else is no source."""
    if not isinstance(raw, list):
        return []
    return [
        Source(str(item.get("title") or item["link"])[:300], str(item["link"])[:2000])
        for item in raw
        if isinstance(item, dict) and isinstance(item.get("link"), str) and item["link"].startswith(("http://", "https://"))
    ]


def _merge_tool_calls(calls: dict[int, dict[str, Any]], deltas: Any) -> None:
    """Join streamed tool-call pieces by index (id and name come once, arguments in pieces)."""
    if not isinstance(deltas, list):
        return
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", 0)
        call = calls.setdefault(index if isinstance(index, int) else 0, {"type": "function", "function": {}})
        for key in ("id", "type"):
            if isinstance(delta.get(key), str):
                call[key] = delta[key]
        function = delta.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str):
                call["function"]["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                call["function"]["arguments"] = call["function"].get("arguments", "") + function["arguments"]
