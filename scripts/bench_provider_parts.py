"""CPU per provider request of each piece `openai_compat` does itself, against the library way.

In process, no sockets: a canned streamed answer (5 content chunks, usage, [DONE]) served by
an in-memory transport, so only the Python work is timed. Three pieces, each both ways:

- build: `client.build_request(..., json=body)` against `OpenAICompatProvider._build_request`;
- send: `client.send(request, stream=True)` against the provider's `_send` (straight to the
  transport);
- sse: httpx-sse's `EventSource(response).aiter_sse()` against the provider's `_SSEData`.

    python scripts/bench_provider_parts.py [--rounds 20000] [--repeat 5]

Prints the median over `--repeat` runs of microseconds of CPU per request, per piece and way.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
import trio
from httpx_sse import EventSource

from exai.providers.openai_compat import OpenAICompatProvider, _body_chunks, _SSEData

BODY = {"model": "kimi-k2-0905-preview", "messages": [{"role": "user", "content": "benchmark " * 20}], "stream": True}


def _events() -> list[bytes]:
    chunks = [
        b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": f"piece {i} "}}]}) + b"\n\n"
        for i in range(5)
    ]
    tail = orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 9}})
    return [*chunks, b"data: " + tail + b"\n\ndata: [DONE]\n\n"]


EVENTS = _events()


class _Chunks(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in EVENTS:
            yield chunk


class CannedTransport(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Chunks())


async def _timed(rounds: int, step: Callable[[], Awaitable[None]]) -> float:
    for _ in range(rounds // 10):
        await step()
    cpu = time.process_time()
    for _ in range(rounds):
        await step()
    return (time.process_time() - cpu) * 1e6 / rounds


async def run(rounds: int) -> dict[str, float]:
    provider = OpenAICompatProvider("kimi", "http://kimi.test/v1", "k", max_connections=4, transport=CannedTransport())
    client = provider.client
    timeout = httpx.Timeout(10.0)
    library_request = client.build_request("POST", provider.url, json=BODY, headers={"Accept": "text/event-stream"})
    own_request = provider._build_request(BODY, timeout)

    async def build_library() -> None:
        client.build_request(
            "POST", provider.url, json=BODY, headers={"Accept": "text/event-stream", "Cache-Control": "no-store"}, timeout=timeout
        )

    async def build_own() -> None:
        provider._build_request(BODY, timeout)

    async def send_library() -> None:
        response = await client.send(library_request, stream=True)
        await response.aclose()

    async def send_own() -> None:
        response = await provider._send(own_request)
        await response.aclose()

    async def sse_library() -> None:
        response = await provider._send(own_request)
        async for _ in EventSource(response).aiter_sse():
            pass
        await response.aclose()

    async def sse_own() -> None:
        response = await provider._send(own_request)
        async for _ in _SSEData(_body_chunks(response)):
            pass
        await response.aclose()

    async def sse_none() -> None:  # the send alone, subtracted from both sse figures
        response = await provider._send(own_request)
        async for _ in _body_chunks(response):
            pass
        await response.aclose()

    out = {}
    for name, step in [
        ("build_library", build_library),
        ("build_own", build_own),
        ("send_library", send_library),
        ("send_own", send_own),
        ("sse_library", sse_library),
        ("sse_own", sse_own),
        ("sse_none", sse_none),
    ]:
        out[name] = await _timed(rounds, step)
    out["sse_library"] -= out["sse_none"]
    out["sse_own"] -= out.pop("sse_none")
    await provider.aclose()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    runs = [trio.run(run, opts.rounds) for _ in range(opts.repeat)]
    for name in runs[0]:
        print(f"{name:14} {statistics.median(r[name] for r in runs):7.1f} us/request")
