"""Helpers for the provider tests: a scripted OpenAI-compatible endpoint for httpx.MockTransport.

A MockTransport handler runs inside the calling task, so it works under `autojump_clock`:
it can sleep to model latency or a stalled stream, and it counts requests in flight.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from exai.config import Settings
from exai.providers.gateway import ModelGateway

Respond = Callable[[httpx.Request, int], Awaitable[httpx.Response]]


def settings(**overrides: Any) -> Settings:
    """Settings with both providers configured on a fake host, overridable per test."""
    values: dict[str, Any] = {
        "kimi_api_key": "kimi-secret-key",
        "kimi_base_url": "http://kimi.test/v1",
        "glm_api_key": "glm-secret-key",
        "glm_base_url": "http://glm.test/v4",
        "provider_max_retries": 3,
        "max_provider_calls": 10,
    }
    values.update(overrides)
    return Settings(**values)


def limiters(kimi: int = 6, glm: int = 4) -> dict[str, trio.CapacityLimiter]:
    return {"kimi": trio.CapacityLimiter(kimi), "glm": trio.CapacityLimiter(glm)}


def completion_body(text: str = "hello", *, prompt_tokens: int = 7, completion_tokens: int = 2) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def ok(text: str = "hello", **usage: int) -> httpx.Response:
    return httpx.Response(200, json=completion_body(text, **usage))


def error(status: int, message: str = "simulated", *, retry_after: str | None = None, code: Any = None) -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {"error": {"message": message, "type": "error", "code": code}}
    return httpx.Response(status, json=body, headers=headers)


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    delta = {"content": content} if content is not None else {}
    payload = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return json.dumps(payload)


def sse(events: list[str | float], *, then_stall: bool = False) -> httpx.Response:
    """A streamed answer: each str is one `data:` event, each float a pause in seconds."""

    async def body() -> AsyncIterator[bytes]:
        for item in events:
            if isinstance(item, float):
                await trio.sleep(item)
            else:
                yield f"data: {item}\n\n".encode()
        if then_stall:
            await trio.sleep_forever()

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def words_stream(words: list[str], *, usage: dict[str, int] | None = None) -> httpx.Response:
    events: list[str | float] = [chunk(word) for word in words]
    extra = {"usage": usage} if usage else {}
    events += [chunk(None, "stop", **extra), "[DONE]"]
    return sse(events)


@dataclass
class FakeProvider:
    """An endpoint whose answers a test scripts; records every request it saw and when."""

    respond: Respond
    latency_s: float = 0.0
    inflight: int = 0
    max_inflight: int = 0
    seen: list[tuple[float, httpx.Request]] = field(default_factory=list)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((trio.current_time(), request))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.latency_s:
                await trio.sleep(self.latency_s)
            return await self.respond(request, len(self.seen))
        finally:
            self.inflight -= 1

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    @property
    def times(self) -> list[float]:
        return [at for at, _ in self.seen]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for _, request in self.seen]


def scripted(*responses: httpx.Response | Callable[[], httpx.Response]) -> Respond:
    """Answer request n with responses[n-1]; the last one repeats.

    A plain response is copied for each use; a streamed one must come from a factory.
    """

    async def respond(request: httpx.Request, n: int) -> httpx.Response:
        item = responses[min(n, len(responses)) - 1]
        if callable(item):
            return item()
        return httpx.Response(item.status_code, headers=item.headers, content=item.content)

    return respond


def by_host(**per_host: Respond) -> Respond:
    """Route by host name (`kimi.test`, `glm.test`): one fake endpoint per provider."""

    async def respond(request: httpx.Request, n: int) -> httpx.Response:
        return await per_host[request.url.host.split(".")[0]](request, n)

    return respond


def gateway(fake: FakeProvider, *, kimi: int = 6, glm: int = 4, **overrides: Any) -> ModelGateway:
    return ModelGateway.from_settings(settings(**overrides), limiters(kimi, glm), transport=fake.transport)


def messages(prompt: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]
