"""Property test (hypothesis) over modern Streamable HTTP requests and their headers.

ONE daemon takes every example (hypothesis runs in a worker thread and hands each request
to the trio loop) while a bystander's call stays in flight on another connection. Property:
no answer is a 5xx, every body is JSON-RPC with the answer's own status, and the bystander's
call is still running, undisturbed, when the examples are done; then it is cancelled and the
daemon's invariants hold.

Examples: max(200, FUZZ_EXAMPLES / 4); the long run as in tests/test_fuzz.py.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_modern import HANG, meta, modern_call, ws_client

EXAMPLES = max(200, int(os.environ.get("FUZZ_EXAMPLES", "800")) // 4)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
STATUS_OF = {200: None, 202: None, 400: {-32020, -32022, -32602, -32600, -32700}, 404: {-32601, -32600}}

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30)
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
methods = st.sampled_from(
    ["server/discover", "tools/list", "tools/call", "subscriptions/listen", "ping", "logging/setLevel", "initialize"]
) | st.text(max_size=20)
tool_names = st.sampled_from(["version", "listmodels", "status", "chat", "nope"]) | st.text(max_size=10)


@st.composite
def modern_posts(draw: Any) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    method = draw(methods)
    envelope = meta(client=draw(st.sampled_from(["fuzzer", "other"])))
    for key in list(envelope):
        choice = draw(st.sampled_from(["keep", "keep", "drop", "garble"]))
        if choice == "drop":
            del envelope[key]
        elif choice == "garble":
            envelope[key] = draw(anything)
    envelope["io.modelcontextprotocol/protocolVersion"] = draw(
        st.sampled_from(["2026-07-28", "2026-07-28", "2025-11-25", "1900-01-01"]) | anything
    )
    if draw(st.booleans()):
        envelope["progressToken"] = draw(anything)
    params: dict[str, Any] = {"_meta": envelope}
    if method == "tools/call":
        name = draw(tool_names)
        prompt = draw(st.sampled_from(["hi", 'slow\n#sim {"chunks": 3, "chunk_delay_s": 0.01}']))
        params |= {"name": name, "arguments": draw(st.just({"prompt": prompt}) | anything)}
    if method == "subscriptions/listen":
        params["notifications"] = draw(st.just({"toolsListChanged": True}) | anything)
    message = {"jsonrpc": "2.0", "id": draw(st.integers(0, 2**40) | st.text(max_size=8)), "method": method, "params": params}

    def header(name: str, mirror: Any) -> list[tuple[bytes, bytes]]:
        kind = draw(st.sampled_from(["mirror", "mirror", "missing", "random", "base64", "bad base64", "twice"]))
        shown = mirror if isinstance(mirror, str) else json.dumps(mirror)
        value = {
            "mirror": shown,
            "random": draw(header_text),
            "base64": "=?base64?" + base64.b64encode(shown.encode()).decode() + "?=",
            "bad base64": "=?base64?" + draw(header_text) + "?=",
            "twice": shown,
        }.get(kind)
        if value is None:
            return []
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raw = value.encode("utf-8")
        raw = raw.strip(b" \t")  # HTTP trims what surrounds a value; h11 refuses to send it
        if any(byte < 0x20 or byte == 0x7F for byte in raw):  # what a client must encode
            raw = b"=?base64?" + base64.b64encode(raw) + b"?="
        return [(name.encode(), raw)] * (2 if kind == "twice" else 1)

    headers = [(b"content-type", b"application/json")]
    headers.append((b"accept", draw(st.sampled_from([b"application/json, text/event-stream", b"application/json", b"text/event-stream"]))))
    headers += header("mcp-protocol-version", envelope.get("io.modelcontextprotocol/protocolVersion"))
    headers += header("mcp-method", method)
    if method == "tools/call" or draw(st.booleans()):
        headers += header("mcp-name", params.get("name", ""))
    if draw(st.booleans()):
        headers.append((b"mcp-session-id", draw(header_text).encode("latin-1")))
    return message, headers


def check(response: httpx.Response, body: bytes) -> list[str]:
    problems = []
    status = response.status_code
    if status >= 500 or status not in STATUS_OF:
        problems.append(f"HTTP {status}: {body[:300]!r}")
        return problems
    if status == 202 or not body:
        return problems
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
    else:
        messages = [json.loads(body)]
    for message in messages:
        if message.get("jsonrpc") != "2.0":
            problems.append(f"not JSON-RPC: {message}")
        error = message.get("error")
        allowed = STATUS_OF[status]
        if error is not None and error.get("code") == -32603:
            problems.append(f"internal error: {message}")
        if allowed is not None and (error is None or error.get("code") not in allowed):
            problems.append(f"HTTP {status} with {message}")
    return problems


# httpx leaves the inner iterators of a listen stream left after its acknowledgement to the GC.
@pytest.mark.filterwarnings("ignore:Async generator 'httpx.:ResourceWarning")
@pytest.mark.filterwarnings("ignore:Async generator 'httpcore.:ResourceWarning")
async def test_modern_requests_and_headers_never_5xx_and_never_disturb_a_bystander(
    daemon: Any, simulator: Any
) -> None:
    async with ws_client(daemon.url) as bystander, httpx.AsyncClient(timeout=10) as http:
        await bystander.send(modern_call("bystander", f"keep going\n{HANG}"))
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 1)
        token = trio.lowlevel.current_trio_token()
        problems: list[str] = []
        sent = 0

        async def send(example: tuple[dict[str, Any], list[tuple[bytes, bytes]]]) -> None:
            nonlocal sent
            message, headers = example
            body = json.dumps(message).encode()
            with trio.fail_after(10):
                async with http.stream("POST", daemon.http_url, content=body, headers=headers) as response:
                    # A listen stays open: its acknowledgement is enough, then closing it ends it.
                    data = b""
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if b"subscriptions/acknowledged" in data:
                            data = data.split(b"\n\n")[0] + b"\n\n"
                            break
            sent += 1
            problems.extend(check(response, data))
            assert not problems, problems

        @FUZZ
        @given(modern_posts())
        def run(example: tuple[dict[str, Any], list[tuple[bytes, bytes]]]) -> None:
            trio.from_thread.run(send, example, trio_token=token)

        await trio.to_thread.run_sync(run)
        assert sent >= EXAMPLES
        assert any(call.id == "bystander" for call in daemon.daemon.calls.active.values())
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "bystander"}}
        aborted = simulator.stats.aborted
        await bystander.send(cancel)
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.aborted == aborted + 1)
