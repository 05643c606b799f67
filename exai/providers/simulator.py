"""An OpenAI-compatible chat-completions simulator, for demos, tests and benchmarks.

A raw ASGI app served by hypercorn on trio. Each request's behaviour (latency, hang, error
status with Retry-After, malformed body, slow, stalled, cut or broken streams) comes from
the simulator's default `Behaviour`, overridden per request by a `#sim {...}` line in the
last user message. It answers in each vendor's shapes: GLM business codes (`glm_code`) and
Kimi error types (`kimi_type`) with their documented statuses and messages, Kimi's
X-RateLimit-* headers, streamed `reasoning_content` (when asked, or when the request enables
`thinking`), usage with cached tokens, GLM's `web_search` results, and Kimi's `$web_search`
tool-call round trip (it checks that the echo sends the call's arguments back). While a request waits or streams, the app listens for the client going
away and stops at once, so tests can assert that a provider request was really aborted.

Endpoints: `POST /v1/chat/completions`, `GET /v1/models` (also without `/v1`),
`GET /_sim/stats`, `POST /_sim/config`, `POST /_sim/reset`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exai.asgi import lifespan

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MODELS: Final = ("exai-sim", "kimi-k2-0905-preview", "glm-4.6")
SIM_DIRECTIVE: Final = "#sim "
BAD_API_KEY: Final = "bad-key"
# A stream's malformed line and a malformed body: neither parses as JSON.
MALFORMED_BODY: Final = b'{"id": "chatcmpl-sim", "choices": [ this is not json'
SHUTDOWN_GRACE_S: Final = 0.5
RECENT_REQUESTS: Final = 32

JSON_HEADERS: Final = [(b"content-type", b"application/json")]
SSE_HEADERS: Final = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Behaviour(BaseModel):
    """How the simulator answers a request. Every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_s: float = Field(default=0.0, ge=0)  # delay before answering (before the headers)
    hang: bool = False  # never answer, until the client aborts
    status: int | None = Field(default=None, ge=400, le=599)  # answer this error status...
    fail_times: int = Field(default=1_000_000, ge=0)  # ...for the first N attempts of the same body
    fail_ratio: float = Field(default=1.0, ge=0, le=1)  # ...each such attempt with this probability
    # Retry-After header sent with `status`: a header value, so printable ASCII only.
    retry_after: str | None = Field(default=None, pattern=r"^[\x20-\x7e]*$")
    error_body: dict[str, Any] | None = None  # body sent with `status` (default: OpenAI-style)
    malformed: bool = False  # 200 with a body that is not JSON
    reply: str | None = None  # reply text, "{n}" replaced by the request's number (default: derived from the prompt)
    chunk_delay_s: float = Field(default=0.0, ge=0)  # streaming: delay between chunks
    chunks: int = Field(default=5, ge=1)  # streaming: how many content chunks
    stall_after: int | None = Field(default=None, ge=0)  # streaming: silent forever after N chunks
    cut_after: int | None = Field(default=None, ge=0)  # streaming: close after N chunks, no [DONE]
    bad_chunk_after: int | None = Field(default=None, ge=0)  # streaming: bad line after N chunks
    # A vendor's error answer (for the first `fail_times` attempts, like `status`, which it
    # overrides only when `status` is not given): its documented status and message.
    glm_code: str | None = Field(default=None, pattern=r"^\d{4}$")
    kimi_type: str | None = Field(default=None, pattern=r"^[a-z_]{1,60}$")
    fail_model: str | None = None  # the error answers only requests for this model
    # X-RateLimit-Remaining / X-RateLimit-Reset on every answer (Kimi's rate headers).
    rate_remaining: int | None = Field(default=None, ge=0)
    rate_reset: str | None = Field(default=None, pattern=r"^[\x20-\x7e]{0,40}$")
    reasoning: str | None = None  # streamed as reasoning_content before the answer
    cached_tokens: int = Field(default=0, ge=0)  # of the prompt tokens, reported as cached


@dataclass
class SimStats:
    """What the simulator saw of chat-completion requests.

    Once no request is in flight, requests_total == aborted + completed ("completed" means
    the simulator played its behaviour to the end, a cut or malformed answer included).
    """

    requests_total: int = 0
    inflight: int = 0
    max_inflight: int = 0
    aborted: int = 0  # the client went away before the response ended
    completed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    last_abort_at: float | None = None  # trio.current_time() of the last abort

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            "aborted": self.aborted,
            "completed": self.completed,
            "statuses": dict(self.statuses),
            "last_abort_at": self.last_abort_at,
        }


class _BadRequest(Exception):
    """The request cannot be answered: 4xx with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def error_body(
    status: int, message: str | None = None, error_type: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error body."""
    if error_type is None:
        error_type = _ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
    if message is None:
        message = f"simulated error {status} {_phrase(status)}"
    return {"error": {"message": message, "type": error_type, "code": status}}


_ERROR_TYPES: Final = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    429: "rate_limit_error",
}


# GLM business codes: (HTTP status, message), https://docs.z.ai/api-reference/api-code.
GLM_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "1002": (401, "Invalid Authentication Token, please confirm the correct transmission of the Authentication Token"),
    "1113": (429, "Your account is in arrears, please recharge and try again"),
    "1261": (400, "Prompt exceeds max length"),
    "1301": (400, "System detected potentially unsafe or sensitive content in input or generation."),
    "1302": (429, "High concurrency usage of this API, please reduce concurrency or contact customer service to increase limits"),
    "1303": (429, "High frequency usage of this API, please reduce frequency or contact customer service to increase limits"),
    "1304": (429, "The daily call limit for this API has been reached. Please contact customer service to purchase more."),
    "1305": (429, "The API is currently experiencing high traffic, please try again later"),
    "1308": (429, "Usage limit reached for 5 hour. Your limit will reset at 2026-12-05 08:00:00"),
    "1309": (429, "Your GLM Coding Plan package has expired. Please renew to continue."),
    "1310": (429, "Weekly/Monthly Limit Exhausted. Your limit will reset at 2026-12-07 00:00:00"),
    "1311": (429, "The current subscription plan does not include access to this model"),
    "1312": (429, "The model is currently overloaded, please try again later"),
}
# Kimi error types: (HTTP status, message), https://platform.moonshot.ai/docs/api/chat.
KIMI_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "invalid_authentication_error": (401, "Invalid Authentication"),
    "incorrect_api_key_error": (401, "Incorrect API key provided"),
    "content_filter": (400, "The request was rejected because it was considered high risk"),
    "permission_denied_error": (403, "The API you are accessing is not open"),
    "exceeded_current_quota_error": (429, "You exceeded your current token quota: <org-sim> 0, please check your account balance"),
    "engine_overloaded_error": (429, "The engine is currently overloaded, please try again later"),
    "rate_limit_reached_error": (429, "Your account sim<ak-sim> request reached organization max RPM: 3, please try again after 1 seconds"),
}
SEARCH_TOOL: Final = "$web_search"


def vendor_error(behaviour: Behaviour) -> tuple[int, dict[str, Any]] | None:
    """(status, body) of the behaviour's GLM code or Kimi type, in that vendor's shape."""
    if behaviour.glm_code is not None:
        status, message = GLM_ERRORS.get(behaviour.glm_code, (400, f"simulated GLM error {behaviour.glm_code}"))
        return behaviour.status or status, {"error": {"code": behaviour.glm_code, "message": message}}
    if behaviour.kimi_type is not None:
        status, message = KIMI_ERRORS.get(behaviour.kimi_type, (400, f"simulated Kimi error {behaviour.kimi_type}"))
        return behaviour.status or status, {"error": {"type": behaviour.kimi_type, "message": message}}
    return None


def _search_tool(request: dict[str, Any]) -> str | None:
    """Which vendor's web search the request turned on: "glm", "kimi" or None."""
    tools = request.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "web_search":
            return "glm"
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict) and tool["function"].get("name") == SEARCH_TOOL:
            return "kimi"
    return None


def _thinks(request: dict[str, Any], behaviour: Behaviour, prompt: str) -> str:
    """The reasoning to stream: the behaviour's, else some when the request enables thinking."""
    if behaviour.reasoning is not None:
        return behaviour.reasoning
    thinking = request.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        return f"Simulated thinking about: {' '.join(prompt.split()[:12])}"
    return ""


def glm_search_results(prompt: str) -> list[dict[str, Any]]:
    """GLM's `web_search` answer field, two results derived from the prompt."""
    words = "-".join(prompt.split()[:3]).lower() or "query"
    return [
        {
            "title": f"Simulated result {i} for {words}",
            "link": f"https://search.example/{words}/{i}",
            "content": "simulated page text",
            "media": "example",
            "icon": "",
            "refer": f"ref_{i}",
            "publish_date": "2026-12-01",
        }
        for i in (1, 2)
    ]


def _search_call(number: int) -> dict[str, Any]:
    arguments = json.dumps({"search_result": {"search_id": f"sim-search-{number}"}, "usage": {"total_tokens": 42}})
    return {"index": 0, "id": f"call_sim_{number}", "type": "builtin_function", "function": {"name": SEARCH_TOOL, "arguments": arguments}}


def _echoed_search(messages: list[dict[str, Any]]) -> bool:
    """Whether the conversation ends with Kimi's echo round trip, done as its docs require:
    the assistant's `$web_search` call, then a tool message carrying the call's arguments."""
    if len(messages) < 2 or messages[-1].get("role") != "tool":
        return False
    call_message, tool = messages[-2], messages[-1]
    calls = call_message.get("tool_calls") if call_message.get("role") == "assistant" else None
    if not isinstance(calls, list) or not calls:
        raise _BadRequest(400, "a tool message must follow the assistant message with its tool_calls")
    call = calls[-1]
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or function.get("name") != SEARCH_TOOL:
        raise _BadRequest(400, "only $web_search tool calls can be answered here")
    if tool.get("tool_call_id") != call.get("id") or tool.get("name") != SEARCH_TOOL:
        raise _BadRequest(400, "the tool message must name the $web_search call it answers (tool_call_id, name)")
    if tool.get("content") != function.get("arguments"):
        raise _BadRequest(400, "the tool message must carry the $web_search call's arguments unchanged")
    return True


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _split_directives(text: str) -> tuple[str, dict[str, Any]]:
    """The text without its `#sim {...}` lines, and the merged JSON objects of those lines."""
    overrides: dict[str, Any] = {}
    kept: list[str] = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if not stripped.startswith(SIM_DIRECTIVE):
            kept.append(line)
            continue
        try:
            directive = json.loads(stripped[len(SIM_DIRECTIVE) :])
        except json.JSONDecodeError as exc:
            raise _BadRequest(400, f"#sim directive is not valid JSON: {exc}") from None
        if not isinstance(directive, dict):
            raise _BadRequest(400, "#sim directive must be a JSON object")
        overrides.update(directive)
    return "\n".join(kept), overrides


def default_reply(prompt: str, system: str = "", number: int = 0) -> str:
    """The deterministic reply to a prompt when the behaviour names none.

    A system prompt asking for a JSON object (`... JSON object: {"key": ...}`) gets one with
    those keys, so demos of the workflow tools show parsed steps; `number` keeps the answers
    of successive requests apart.
    """
    words = prompt.split()
    echo = " ".join(words[:24]) if words else "(empty prompt)"
    template = system.find("JSON object")
    if template < 0:
        return f"Simulated answer to: {echo}"
    answer = {
        key: JSON_VALUES.get(key, f"simulated {key} #{number} for: {echo}")
        # The top-level keys: what stands inside a list in the template is left out.
        for key in dict.fromkeys(_TEMPLATE_KEY.findall(re.sub(r"\[[^\]]*\]", "[]", system[template:])))
    }
    return json.dumps(answer)


_TEMPLATE_KEY: Final = re.compile(r'"(\w+)":')
# Keys of a requested JSON object whose value is not a sentence.
JSON_VALUES: Final[dict[str, Any]] = {
    "confidence": "medium",
    "issues": [{"severity": "medium", "description": "simulated issue: no real model was asked", "where": "-"}],
    "recommendations": ["simulated recommendation: configure KIMI_API_KEY or GLM_API_KEY for real answers"],
}


def _count_tokens(text: str) -> int:
    return len(text.split())


def _pieces(text: str, count: int) -> list[str]:
    """`text` cut into `count` consecutive pieces of nearly equal length."""
    size = len(text)
    return [text[i * size // count : (i + 1) * size // count] for i in range(count)]


class Simulator:
    """The simulator's state (default behaviour, statistics, attempt counters) and its ASGI app."""

    def __init__(self, models: Sequence[str] = DEFAULT_MODELS):
        self.url = ""
        self.models = tuple(models)
        self.stats = SimStats()
        self._default = Behaviour()
        self._attempts: dict[str, int] = {}
        self._changed = trio.Event()
        self._ids = 0
        # The newest chat requests as received (model, messages), for tests to inspect.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)

    # -- control -------------------------------------------------------------------------

    @property
    def default(self) -> Behaviour:
        return self._default

    def configure(self, **behaviour: Any) -> None:
        """Make these Behaviour fields the default for all requests (replacing the last one)."""
        self._default = Behaviour.model_validate(behaviour)

    def reset(self) -> None:
        """Default behaviour, statistics and attempt counters back to new.

        Requests still in flight stay counted in `inflight` (and `max_inflight`), so the
        count is right when they end.
        """
        inflight = self.stats.inflight
        # In place: callers may hold on to `stats`.
        vars(self.stats).update(vars(SimStats(inflight=inflight, max_inflight=inflight)))
        self._default = Behaviour()
        self._attempts.clear()
        self.recent.clear()
        self._notify()

    async def wait_until(self, predicate: Callable[[SimStats], bool]) -> None:
        """Return once `predicate(stats)` holds; re-checked on every change of the stats.

        Waits forever otherwise: the caller bounds it (`trio.fail_after`).
        """
        while not predicate(self.stats):
            await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    # -- ASGI ----------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI callable. Returns as soon as the client disconnects, whatever it was doing."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before its request was complete
        method: str = scope["method"]
        path: str = scope["path"]
        if path.startswith("/v1/"):
            path = path[3:]
        if path == "/chat/completions":
            if method != "POST":
                await _send_json(send, 405, error_body(405, "use POST"))
                return
            await self._chat(scope, body, receive, send)
        elif path == "/models":
            await self._models(scope, method, send)
        elif path.startswith("/_sim/"):
            await self._control(path, method, body, send)
        else:
            await _send_json(send, 404, error_body(404, f"no such endpoint: {scope['path']}"))

    async def _models(self, scope: Scope, method: str, send: Send) -> None:
        if method != "GET":
            await _send_json(send, 405, error_body(405, "use GET"))
            return
        try:
            _check_auth(scope)
        except _BadRequest as exc:
            await _send_json(send, exc.status, error_body(exc.status, str(exc), exc.error_type))
            return
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "exai-simulator"}
            for name in self.models
        ]
        await _send_json(send, 200, {"object": "list", "data": data})

    async def _control(self, path: str, method: str, body: bytes, send: Send) -> None:
        if path == "/_sim/stats" and method == "GET":
            await _send_json(send, 200, self.stats.as_dict())
        elif path == "/_sim/reset" and method == "POST":
            self.reset()
            await _send_json(send, 200, {"ok": True})
        elif path == "/_sim/config" and method == "POST":
            try:
                fields = json.loads(body or b"{}")
                self._default = Behaviour.model_validate(fields)
            except (json.JSONDecodeError, ValidationError) as exc:
                await _send_json(send, 400, error_body(400, f"invalid behaviour: {exc}"))
                return
            await _send_json(send, 200, self._default.model_dump())
        else:
            await _send_json(
                send, 404, error_body(404, f"no such control endpoint: {method} {path}")
            )

    async def _chat(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """One chat completion; stops at once when the client disconnects, counting it aborted."""
        stats = self.stats
        stats.requests_total += 1
        stats.inflight += 1
        stats.max_inflight = max(stats.max_inflight, stats.inflight)
        self._notify()
        response = _Response(self, send)
        try:
            try:
                _check_auth(scope)
                request, behaviour, prompt = self._parse(body)
            except _BadRequest as exc:
                payload = error_body(exc.status, str(exc), exc.error_type)
                await self._send_chat(response.send, exc.status, payload)
                return
            if not _waits(behaviour, request):
                # Nothing to wait for: the answer goes out at once, no disconnect to watch.
                await self._answer(response.send, request, behaviour, prompt)
                response.end("completed")  # a cut stream ends without a last part
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, response, nursery.cancel_scope)
                await self._answer(response.send, request, behaviour, prompt)
                response.end("completed")  # a cut stream ends without a last part
                nursery.cancel_scope.cancel()
            # Only the disconnect watcher cancels the answer without an exception escaping.
            response.end("aborted")
        finally:
            response.end(None)

    def _end(self, outcome: str | None) -> None:
        stats = self.stats
        stats.inflight -= 1
        if outcome == "completed":
            stats.completed += 1
        elif outcome == "aborted":
            stats.aborted += 1
            stats.last_abort_at = trio.current_time()
        self._notify()

    async def _answer(
        self, send: Send, request: dict[str, Any], behaviour: Behaviour, prompt: str
    ) -> None:
        if behaviour.latency_s:
            await trio.sleep(behaviour.latency_s)
        vendor = vendor_error(behaviour)
        if (
            (behaviour.status is not None or vendor is not None)
            and behaviour.fail_model in (None, request["model"])
            and self._attempt(request) <= behaviour.fail_times
            and (behaviour.fail_ratio >= 1 or random.random() < behaviour.fail_ratio)
        ):
            headers = [*JSON_HEADERS, *_rate_headers(behaviour)]
            if behaviour.retry_after is not None:
                headers.append((b"retry-after", behaviour.retry_after.encode("latin-1")))
            status, payload = vendor or (behaviour.status or 500, error_body(behaviour.status or 500))
            if behaviour.error_body is not None:
                payload = behaviour.error_body
            await self._send_chat(send, status, payload, headers)
            return
        if behaviour.hang:
            await trio.sleep_forever()
        if behaviour.malformed:
            self._count_status(200)
            await _send_bytes(send, 200, MALFORMED_BODY, JSON_HEADERS)
            return
        self._ids += 1
        system = "\n".join(_text_of(m.get("content")) for m in request["messages"] if m.get("role") == "system")
        reply = default_reply(prompt, system, self._ids)
        if behaviour.reply is not None:
            reply = behaviour.reply.replace("{n}", str(self._ids))
        model = request["model"]
        search = _search_tool(request)
        extra: dict[str, Any] = {}
        tool_calls: list[dict[str, Any]] = []
        if search == "glm":
            extra["web_search"] = glm_search_results(prompt)
            reply += " [ref_1]"
        elif search == "kimi" and _echoed_search(request["messages"]):
            reply += " Sources: [Simulated source 1](https://search.example/kimi/1), [Simulated source 2](https://search.example/kimi/2)"
        elif search == "kimi":
            tool_calls, reply = [_search_call(self._ids)], ""
        reasoning = _thinks(request, behaviour, prompt)
        usage: dict[str, Any] = {
            "prompt_tokens": _count_tokens(_all_text(request["messages"])),
            "completion_tokens": _count_tokens(reply) + _count_tokens(reasoning),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if behaviour.cached_tokens:
            cached = min(behaviour.cached_tokens, usage["prompt_tokens"])
            usage["cached_tokens"] = cached  # Kimi's field
            usage["prompt_tokens_details"] = {"cached_tokens": cached}  # GLM's (and OpenAI's)
        completion_id = f"chatcmpl-sim-{self._ids}"
        answer = _Answer(completion_id, model, reply, reasoning, tool_calls, usage, extra, _rate_headers(behaviour))
        if request.get("stream") is True:
            await self._stream(send, behaviour, answer)
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply}
        if reasoning:
            message["reasoning_content"] = reasoning
        if tool_calls:
            message["tool_calls"] = [{k: v for k, v in call.items() if k != "index"} for call in tool_calls]
        await self._send_chat(
            send,
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if tool_calls else "stop",
                    }
                ],
                "usage": usage,
                **extra,
            },
            [*JSON_HEADERS, *answer.headers],
        )

    async def _stream(self, send: Send, behaviour: Behaviour, answer: _Answer) -> None:
        """Send the reasoning (if any) and the reply as `chunks` SSE deltas each, a last chunk
        with usage (and the tool calls), then [DONE]."""
        created = int(time.time())

        def event(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
            chunk = {
                "id": answer.completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": answer.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        pieces = _pieces(answer.reply, behaviour.chunks) if answer.reply else [""]
        usage = answer.usage
        self._count_status(200)
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *answer.headers]})
        if answer.extra:  # GLM sends its search results before the answer
            await send({"type": "http.response.body", "body": event({"role": "assistant"}, **answer.extra), "more_body": True})
        for piece in _pieces(answer.reasoning, behaviour.chunks) if answer.reasoning else []:
            await send({"type": "http.response.body", "body": event({"reasoning_content": piece}), "more_body": True})
            if behaviour.chunk_delay_s:
                await trio.sleep(behaviour.chunk_delay_s)
        # Position i is "after i content chunks"; the last position is after all of them.
        for i in range(len(pieces) + 1):
            if i == _clamp(behaviour.stall_after, len(pieces)):
                await trio.sleep_forever()
            if i == _clamp(behaviour.cut_after, len(pieces)):
                return  # hypercorn closes the connection mid-body
            if i == _clamp(behaviour.bad_chunk_after, len(pieces)):
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + MALFORMED_BODY + b"\n\n",
                        "more_body": True,
                    }
                )
            if i == len(pieces):
                break
            if i and behaviour.chunk_delay_s:
                await trio.sleep(behaviour.chunk_delay_s)
            delta = (
                {"role": "assistant", "content": pieces[i]} if i == 0 else {"content": pieces[i]}
            )
            await send({"type": "http.response.body", "body": event(delta), "more_body": True})
        if answer.tool_calls:  # Kimi streams a tool call's arguments in pieces
            call = answer.tool_calls[0]
            arguments = call["function"]["arguments"]
            head = {**call, "function": {"name": SEARCH_TOOL, "arguments": arguments[:10]}}
            for delta_calls in ([head], [{"index": 0, "function": {"arguments": arguments[10:]}}]):
                await send({"type": "http.response.body", "body": event({"tool_calls": delta_calls}), "more_body": True})
        finish = "tool_calls" if answer.tool_calls else "stop"
        tail = event({}, finish, usage=usage) + b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    def _parse(self, body: bytes) -> tuple[dict[str, Any], Behaviour, str]:
        """The request, its behaviour, and the last user prompt without `#sim` lines."""
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _BadRequest(400, "request body is not valid JSON") from None
        if not isinstance(request, dict):
            raise _BadRequest(400, "request body must be a JSON object")
        messages = request.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            raise _BadRequest(400, "'messages' must be a non-empty list of message objects")
        if not isinstance(request.get("model"), str) or not request["model"]:
            raise _BadRequest(400, "'model' is required")
        self.recent.append(
            {"model": request["model"], "messages": messages, **{k: request[k] for k in ("thinking", "tools") if k in request}}
        )
        if _search_tool(request) == "kimi":
            _echoed_search(messages)  # a bad echo is refused as Kimi would, before anything else
        prompt = next(
            (_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        behaviour = self._default
        if SIM_DIRECTIVE in prompt:
            prompt, overrides = _split_directives(prompt)
            try:
                behaviour = Behaviour.model_validate(self._default.model_dump() | overrides)
            except ValidationError as exc:
                raise _BadRequest(400, f"invalid #sim directive: {exc}") from None
        return request, behaviour, prompt

    def _attempt(self, request: dict[str, Any]) -> int:
        """Count one more attempt of this request (same model and messages); return the count."""
        key_text = json.dumps([request["model"], request["messages"]], sort_keys=True)
        key = hashlib.blake2b(key_text.encode(), digest_size=16).hexdigest()
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt
        return attempt

    def _count_status(self, status: int) -> None:
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1

    async def _send_chat(
        self,
        send: Send,
        status: int,
        payload: dict[str, Any],
        headers: list[tuple[bytes, bytes]] = JSON_HEADERS,
    ) -> None:
        self._count_status(status)
        await _send_bytes(send, status, json.dumps(payload).encode(), headers)


@dataclass(frozen=True, slots=True)
class _Answer:
    completion_id: str
    model: str
    reply: str
    reasoning: str
    tool_calls: list[dict[str, Any]]
    usage: dict[str, Any]
    extra: dict[str, Any]  # top-level fields of the answer (GLM's web_search)
    headers: list[tuple[bytes, bytes]]


def _rate_headers(behaviour: Behaviour) -> list[tuple[bytes, bytes]]:
    headers = []
    if behaviour.rate_remaining is not None:
        headers.append((b"x-ratelimit-remaining", str(behaviour.rate_remaining).encode()))
    if behaviour.rate_reset is not None:
        headers.append((b"x-ratelimit-reset", behaviour.rate_reset.encode("latin-1")))
    return headers


def _waits(behaviour: Behaviour, request: dict[str, Any]) -> bool:
    """Whether answering involves waiting, the only time a client can leave half-way."""
    if behaviour.latency_s or behaviour.hang:
        return True
    streaming = request.get("stream") is True
    return streaming and (behaviour.chunk_delay_s > 0 or behaviour.stall_after is not None)


def _clamp(position: int | None, last: int) -> int | None:
    return None if position is None else min(position, last)


def _all_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_text_of(m.get("content")) for m in messages)


def _check_auth(scope: Scope) -> None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            key = key.strip()
            if scheme.lower() != "bearer" or not key:
                break
            if key == BAD_API_KEY:
                raise _BadRequest(401, "Invalid API key (simulated).", "authentication_error")
            return
    raise _BadRequest(
        401, "Missing bearer token in the Authorization header.", "authentication_error"
    )


class _Response:
    """The sending side of one chat request; counts its end exactly once.

    A response counts as completed just before its last part is sent, so a client that
    has the whole answer never sees it still in flight.
    """

    __slots__ = ("_send", "_simulator", "ended")

    def __init__(self, simulator: Simulator, send: Send):
        self._simulator = simulator
        self._send = send
        self.ended = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.end("completed")
        await self._send(message)

    def end(self, outcome: str | None) -> None:
        """Count the end (None: neither completed nor aborted, e.g. server shutdown)."""
        if not self.ended:
            self.ended = True
            self._simulator._end(outcome)


async def _cancel_on_disconnect(
    receive: Receive, response: _Response, cancel_scope: trio.CancelScope
) -> None:
    """Wait for `http.disconnect` and cancel the answer it belongs to, unless it has ended.

    Hypercorn reports a disconnect from inside the send of a response's last part too.
    """
    while (await receive())["type"] != "http.disconnect":
        pass
    if not response.ended:
        cancel_scope.cancel()


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Send, status: int, payload: Any) -> None:
    await _send_bytes(send, status, json.dumps(payload).encode(), JSON_HEADERS)


def _hypercorn_config(host: str, port: int) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"  # no "Running on ..." lines; app errors still reach stderr
    config.graceful_timeout = SHUTDOWN_GRACE_S
    return config


async def serve_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulator: Simulator | None = None,
    task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the simulator until cancelled.

    `task_status.started(simulator)` once the socket is bound and `simulator.url` is set.
    Cancellation closes the socket and stops every request at once.
    """
    sim = simulator if simulator is not None else Simulator()
    async with trio.open_nursery() as nursery:
        app: Any = sim.app  # hypercorn's ASGI types are stricter than a plain ASGI callable's
        binds: list[str] = await nursery.start(
            partial(serve, app, _hypercorn_config(host, port), mode="asgi")
        )
        sim.url = binds[0] + "/v1"
        logger.debug("simulator serving on {}", sim.url)
        task_status.started(sim)


def run_mock_provider(host: str, port: int) -> int:
    """`exai mock-provider`: serve until SIGINT/SIGTERM, then 0; 1 when it cannot bind."""
    failure: BaseException | None = None
    try:
        trio.run(_mock_provider, host, port)
    except* OSError as group:
        failure = group.exceptions[0]
    if failure is not None:
        logger.error("mock-provider cannot listen on {}:{}: {}", host, port, failure)
        return 1
    return 0


async def _mock_provider(host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            sim: Simulator = await nursery.start(partial(serve_simulator, host, port))
            print(f"exai mock-provider on {sim.url}", flush=True)
            async for signum in signals:
                logger.info("mock-provider stopping on {}", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
