"""The floor for scripts/bench.py: MCP over WebSocket relayed to a provider, with no exai logic.

Benchmark only, never a server to use. Per `tools/call` frame it makes the streaming POST that
exai makes (the same libraries: trio-websocket, httpx's request model on exai's pooled h11
transport, orjson), joins the streamed text, sends one progress notification at the first
text like exai's first one, and answers. No limits, validation, deadlines, logging, store,
metrics or cancellation: what exai adds over this is its own logic.

    python scripts/floor_relay.py --upstream http://127.0.0.1:PORT/v1 [--port 0]
    # prints "floor relay on ws://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from exai.providers.transport import TrioH11Transport

INITIALIZED = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
               "serverInfo": {"name": "floor-relay", "version": "0"}}


class Upstream:
    def __init__(self, base_url: str):
        self.url = httpx.URL(base_url.rstrip("/") + "/chat/completions")
        self.headers = httpx.Headers({"Host": f"{self.url.host}:{self.url.port}", "Authorization": "Bearer bench",
                                      "Content-Type": "application/json", "Accept": "text/event-stream"})
        self.transport = TrioH11Transport(max_keepalive=1024)

    async def chat(self, prompt: str) -> Any:
        """The streamed answer's text pieces, as they come."""
        body = orjson.dumps({"model": "kimi-k2-0905-preview", "messages": [{"role": "user", "content": prompt}],
                             "stream": True})
        request = httpx.Request("POST", self.url, headers=self.headers, content=body)
        response = await self.transport.handle_async_request(request)
        try:
            buffer = b""
            async for chunk in response.stream:  # type: ignore[union-attr]
                *events, buffer = (buffer + chunk).split(b"\n\n")
                for event in events:
                    data = event.partition(b"data: ")[2]
                    if data and data != b"[DONE]":
                        yield orjson.loads(data)["choices"][0]["delta"].get("content") or ""
        finally:
            await response.aclose()


async def call(ws: WebSocketConnection, upstream: Upstream, message: dict[str, Any]) -> None:
    params = message["params"]
    token = (params.get("_meta") or {}).get("progressToken")
    parts: list[str] = []
    async for text in upstream.chat(params["arguments"].get("prompt", "")):
        parts.append(text)
        if text and token is not None and len(parts) == 1:
            progress = {"progressToken": token, "progress": 1, "message": text}
            await ws.send_message(orjson.dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                                                "params": progress}).decode())
    result = {"content": [{"type": "text", "text": "".join(parts)}], "isError": False}
    await ws.send_message(orjson.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).decode())


async def connection(upstream: Upstream, request: WebSocketRequest) -> None:
    ws = await request.accept(subprotocol="mcp" if "mcp" in request.proposed_subprotocols else None)

    async def guarded(message: dict[str, Any]) -> None:
        try:
            await call(ws, upstream, message)
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as calls:
        while True:
            try:
                message = orjson.loads(await ws.get_message())
            except ConnectionClosed:
                calls.cancel_scope.cancel()
                return
            method = message.get("method")
            if method == "tools/call":
                calls.start_soon(guarded, message)
            elif "id" in message:
                result = INITIALIZED if method == "initialize" else {}
                await ws.send_message(orjson.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).decode())


async def main(port: int, upstream_url: str) -> None:
    upstream = Upstream(upstream_url)

    async def handler(request: WebSocketRequest) -> None:
        await connection(upstream, request)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", port, None)
            print(f"floor relay on ws://127.0.0.1:{server.port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    await upstream.transport.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="the provider's base URL, ending in /v1")
    opts = parser.parse_args()
    trio.run(main, opts.port, opts.upstream)
