"""exai chaos soak: many misbehaving clients against a real daemon, invariants checked every second.

Three processes on loopback: the simulator (`exai mock-provider`), the daemon (`exai serve`,
small limits so queues overflow) and this driver. Well-behaved clients (exai.client) make
random tool calls whose prompts carry `#sim` directives (429 with Retry-After, 5xx, hangs,
stalled, cut and malformed streams, malformed bodies, latency); they cancel calls, set short
deadlines, burst past the queue and drop their TCP connection mid-call. Fuzz clients send
frames that are not JSON, of the wrong shape or with wrong types, and bad handshakes.

Every second: /healthz answers 200, borrowed <= total for every limiter, inflight <= the global
limit, queued <= EXAI_MAX_QUEUED, and no simulator request open that the daemon does not count
(see `sample`). At the end,
after a quiet second: nothing borrowed, queued, alive or open; RSS growth under 10% between
the 25% and 100% marks; no -32603; no traceback in the daemon's log; the daemon alive and
exiting 0 on SIGTERM. Prints a one-screen report; exits 1 on any violation.

    python scripts/soak.py --duration 60 --clients 16          # CI
    python scripts/soak.py --duration 600                      # the long run

Without --avoid-known-crashers the fuzz clients also send the inputs known to kill today's
daemon (issue 6): a violation until they are fixed, and the report says which input it was.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed

from exai.client import CannotConnect, ConnectionLost, ExaiClient, RpcError, connect, open_websocket

EXAI: Final = [sys.executable, "-c", "from exai.cli import main; main()"]
TOKEN: Final = "soak-token-0123456789"
LIMITS: Final = {
    "EXAI_GLOBAL_MAX_INFLIGHT": 8,
    "EXAI_SESSION_MAX_INFLIGHT": 4,
    "EXAI_MAX_QUEUED": 8,
    "EXAI_KIMI_MAX_INFLIGHT": 4,
    "EXAI_GLM_MAX_INFLIGHT": 3,
}
ENV: Final = {
    **{name: str(value) for name, value in LIMITS.items()},
    "EXAI_TOOL_TIMEOUT_SECS": "8",
    "EXAI_PROVIDER_TIMEOUT_SECS": "4",
    "EXAI_PROVIDER_MAX_RETRIES": "2",
    "EXAI_STREAM_IDLE_SECS": "1",
    "EXAI_CIRCUIT_FAILURES": "6",
    "EXAI_CIRCUIT_COOLDOWN_SECS": "2",
    "EXAI_KIMI_RPM": "300",
    "EXAI_GLM_RPM": "240",
    "EXAI_SHUTDOWN_GRACE_SECS": "2",
    "EXAI_MAX_MESSAGE_BYTES": "65536",
    "EXAI_LOG_LEVEL": "INFO",
    "EXAI_AUTH_TOKEN": TOKEN,
}
MODELS: Final = ("auto", "kimi-k2-0905-preview", "glm-4.6")
INTERNAL_ERROR: Final = -32603
QUIET_S: Final = 1.0
SETTLE_S: Final = 5.0  # after the quiet second, how long a violation is watched to see if it clears
# The simulator notices a request the daemon aborted within milliseconds; sampling the
# simulator again this long after the daemon leaves it ample time even on a loaded machine.
SIM_RESAMPLE_S: Final = 0.25
RSS_GROWTH_MAX: Final = 0.10


# -- processes -------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def read_until(stream: Any, pattern: bytes, seen: bytearray) -> re.Match[bytes]:
    while True:
        match = re.search(pattern, seen)
        if match:
            return match
        chunk = await stream.receive_some()
        if not chunk:
            raise RuntimeError(f"process exited before printing {pattern!r}: {bytes(seen)!r}")
        seen += chunk


async def stop_process(proc: trio.Process, timeout: float = 15.0) -> int | None:
    """SIGTERM, then wait; kill if it does not end. The exit code, or None if it was killed."""
    if proc.returncode is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(timeout):
        return await proc.wait()
    proc.kill()
    await proc.wait()
    return None


# -- bookkeeping -------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool = True
    detail: str = ""
    failures: int = 0

    def fail(self, detail: str) -> None:
        self.ok = False
        self.failures += 1
        if self.failures == 1:
            self.detail = detail  # the first one is the one worth reading


@dataclass
class Soak:
    args: argparse.Namespace
    rng: random.Random
    url: str = ""
    monitor_url: str = ""
    sim_url: str = ""
    daemon: trio.Process | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    by_action: dict[str, Counter[str]] = field(default_factory=dict)
    fuzz: Counter[str] = field(default_factory=Counter)
    fuzz_codes: Counter[str] = field(default_factory=Counter)
    internal_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    # fuzz client -> its last bad inputs (after a fatal one, a client may send more while the daemon dies)
    last_inputs: dict[int, deque[str]] = field(default_factory=dict)
    load: trio.CancelScope | None = None  # the clients' scope: cancelled when the daemon dies
    checks: dict[str, Check] = field(default_factory=dict)
    samples: int = 0
    max_seen: Counter[str] = field(default_factory=Counter)
    circuits: Counter[str] = field(default_factory=Counter)
    tool_errors: Counter[str] = field(default_factory=Counter)
    rss: dict[str, int] = field(default_factory=dict)
    daemon_died: str | None = None

    def check(self, name: str) -> Check:
        return self.checks.setdefault(name, Check(name))

    def verify(self, name: str, holds: bool, detail: str) -> None:
        """Count the check `name`, failed with `detail` unless `holds`."""
        check = self.check(name)
        if not holds:
            check.fail(detail)

    def note_input(self, client: int, what: str) -> None:
        self.last_inputs.setdefault(client, deque(maxlen=3)).append(what)

    def record(self, action: str, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.by_action.setdefault(action, Counter())[outcome] += 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}


def result_outcome(soak: Soak, result: Any) -> str:
    if not result.is_error:
        return "ok"
    soak.tool_errors[re.sub(r"[\d.]+", "N", result.text)[:70]] += 1
    return "tool_error"


def failure(soak: Soak, what: str, exc: RpcError | ConnectionLost) -> str:
    """The outcome of a call that raised; a -32603 or an unexpected code is noted with `what`."""
    outcome = classify(exc)
    if outcome == "internal_error":
        soak.internal_errors.append(f"{what}: {exc} data={getattr(exc, 'data', None)}")
    elif outcome.startswith("rpc_"):
        soak.unexpected.append(f"{what}: {exc}")
    return outcome


def classify(exc: BaseException) -> str:
    if isinstance(exc, RpcError):
        return {-32001: "timed_out", -32000: "overloaded", INTERNAL_ERROR: "internal_error"}.get(
            exc.code, f"rpc_{exc.code}"
        )
    if isinstance(exc, CannotConnect):
        return "cannot_connect"
    if isinstance(exc, ConnectionLost):
        return "connection_lost"
    raise exc


# -- well-behaved clients ------------------------------------------------------------------

# (action, weight): what a call asks the simulator to do, and how the client behaves.
ACTIONS: Final = [
    ("ok", 6),
    ("latency", 3),
    ("retry_429", 2),
    ("error_5xx", 2),
    ("fail_5xx", 1),
    ("hang_deadline", 2),
    ("stall_stream", 2),
    ("cut_stream", 2),
    ("bad_chunk", 1),
    ("malformed_body", 1),
    ("client_cancel", 3),
    ("short_deadline", 2),
    ("burst", 1),
    ("outage", 1),
    ("disconnect", 2),
    ("other_tool", 2),
]


def directive(action: str, rng: random.Random) -> tuple[dict[str, Any], bool, float | None]:
    """(#sim behaviour, stream it, exai/timeout) for an action."""
    latency = round(rng.uniform(0.0, 0.2), 3)
    if action == "latency":
        return {"latency_s": round(rng.uniform(0.2, 1.5), 3)}, False, None
    if action == "retry_429":
        return {"status": 429, "retry_after": str(rng.choice([0, 1])), "fail_times": 1}, False, None
    if action == "error_5xx":
        return {"status": rng.choice([500, 502, 503]), "fail_times": 1}, rng.random() < 0.5, None
    if action == "fail_5xx":
        return {"status": rng.choice([500, 503]), "latency_s": latency}, False, None
    if action == "hang_deadline":
        return {"hang": True}, rng.random() < 0.5, round(rng.uniform(0.3, 2.0), 3)
    if action == "stall_stream":
        return {"stall_after": rng.randint(0, 3), "chunk_delay_s": 0.05}, True, None
    if action == "cut_stream":
        return {"cut_after": rng.randint(0, 3), "chunk_delay_s": 0.02}, True, None
    if action == "bad_chunk":
        return {"bad_chunk_after": rng.randint(0, 3)}, True, None
    if action == "malformed_body":
        return {"malformed": True, "latency_s": latency}, False, None
    if action == "client_cancel":
        return {"latency_s": 3.0}, rng.random() < 0.5, None
    if action == "short_deadline":
        return {"latency_s": 1.0, "chunk_delay_s": 0.1}, rng.random() < 0.5, round(rng.uniform(0.05, 0.5), 3)
    if action == "disconnect":
        return {"latency_s": 2.0, "chunk_delay_s": 0.2}, rng.random() < 0.5, None
    return {"latency_s": latency, "chunks": rng.randint(1, 8)}, rng.random() < 0.5, None


async def one_chat(soak: Soak, client: ExaiClient, action: str, tag: str) -> str:
    rng = soak.rng
    behaviour, stream, timeout = directive(action, rng)
    prompt = f"soak {tag}\n#sim {json.dumps(behaviour)}"
    arguments = {"prompt": prompt, "model": rng.choice(MODELS)}

    async def progress(params: dict[str, Any]) -> None:
        pass

    on_progress = progress if stream else None
    try:
        if action == "client_cancel":
            with trio.move_on_after(rng.uniform(0.05, 1.0)):
                result = await client.call_tool("chat", arguments, timeout=timeout, on_progress=on_progress)
                return result_outcome(soak, result)
            return "cancelled_by_client"
        result = await client.call_tool("chat", arguments, timeout=timeout, on_progress=on_progress)
        return result_outcome(soak, result)
    except (RpcError, ConnectionLost) as exc:
        return failure(soak, action, exc)


async def other_tool(soak: Soak, client: ExaiClient) -> str:
    name, arguments = soak.rng.choice(
        [
            ("version", {}),
            ("listmodels", {}),
            ("status", {}),
            ("chat", {"prompt": 7}),  # fails the tool's schema: an isError result
        ]
    )
    try:
        result = await client.call_tool(name, arguments)
        return result_outcome(soak, result)
    except (RpcError, ConnectionLost) as exc:
        return failure(soak, f"{name} {json.dumps(arguments)[:60]}", exc)


async def well_behaved_client(soak: Soak, number: int, stop_at: float) -> None:
    rng = soak.rng
    names = [name for name, _ in ACTIONS]
    weights = [weight for _, weight in ACTIONS]
    calls = 0
    while trio.current_time() < stop_at and soak.daemon_died is None:
        try:
            async with connect(soak.url, token=TOKEN) as client:
                while trio.current_time() < stop_at and soak.daemon_died is None:
                    action = rng.choices(names, weights)[0]
                    calls += 1
                    tag = f"c{number}-{calls}"
                    if action == "disconnect":
                        await disconnect_mid_call(soak, tag)
                    elif action == "burst":
                        await burst(soak, client, tag)
                    elif action == "outage":
                        await outage(soak, client, tag)
                    elif action == "other_tool":
                        soak.record(action, await other_tool(soak, client))
                    else:
                        soak.record(action, await one_chat(soak, client, action, tag))
                    await trio.sleep(rng.uniform(0, 0.2))  # a client thinks between calls
                    if client.closed_reason is not None:
                        soak.unexpected.append(f"client {number} lost its connection: {client.closed_reason}")
                        break
        except (CannotConnect, ConnectionLost) as exc:
            if not daemon_alive(soak):
                return
            soak.record("connect", classify(exc))
            await trio.sleep(0.2)


async def burst(soak: Soak, client: ExaiClient, tag: str) -> None:
    """More calls at once than the session may run: they queue, or overflow it."""

    async def one(i: int) -> None:
        soak.record("burst", await one_chat(soak, client, "latency", f"{tag}-{i}"))

    async with trio.open_nursery() as nursery:
        for i in range(soak.rng.randint(5, 10)):
            nursery.start_soon(one, i)


async def outage(soak: Soak, client: ExaiClient, tag: str) -> None:
    """Failing calls at once on one provider: enough failures in a row to open its circuit."""
    model = soak.rng.choice(MODELS[1:])

    async def one(i: int) -> None:
        behaviour = json.dumps({"status": 503, "latency_s": 0.05})
        arguments = {"prompt": f"soak {tag}-{i}\n#sim {behaviour}", "model": model}
        try:
            result = await client.call_tool("chat", arguments)
            outcome = result_outcome(soak, result)
        except (RpcError, ConnectionLost) as exc:
            outcome = failure(soak, "outage", exc)
        soak.record("outage", outcome)

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(one, i)


async def disconnect_mid_call(soak: Soak, tag: str) -> None:
    """A call on its own connection, whose TCP stream is dropped while the call runs."""
    outcome = "disconnected"
    try:
        async with connect(soak.url, token=TOKEN) as client:
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    nonlocal outcome
                    result = await one_chat(soak, client, "disconnect", tag)
                    if result not in ("connection_lost",):
                        outcome = result  # it finished before the drop

                nursery.start_soon(call)
                await trio.sleep(soak.rng.uniform(0.01, 1.0))
                await client.close_abruptly()
    except (CannotConnect, ConnectionLost, ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    soak.record("disconnect", outcome)


# -- fuzz clients ----------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def fuzz_frame(rng: random.Random, avoid_crashers: bool) -> tuple[str, str | bytes]:
    """(kind, frame) of one bad input; the daemon owes a contract error or nothing."""

    def req(method: Any, params: Any = None, id: Any = 1, **extra: Any) -> str:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method, **extra}
        if params is not None:
            message["params"] = params
        return json.dumps(message)

    weird: list[Any] = [None, True, 1.5, -1, 2**70, "", "x" * 300, [], [1], {}, {"a": {"b": []}}, "\u00e9\u4e2d"]
    hashable_weird = [w for w in weird if not isinstance(w, list | dict)]
    call_id = rng.randint(10**6, 10**9)
    choices: list[Callable[[], tuple[str, str | bytes]]] = [
        lambda: ("not_json", rng.choice(["{", "nope", '{"jsonrpc": "2.0",', "\x00\x01", "}{", "NaN x"])),
        lambda: ("binary", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))),
        lambda: ("wrong_shape", json.dumps(rng.choice([1, "s", None, True, [], [{"jsonrpc": "2.0"}], 2.5]))),
        lambda: ("batch", json.dumps([json.loads(req("ping"))])),
        lambda: ("no_jsonrpc", json.dumps({"id": 1, "method": "ping"})),
        lambda: ("bad_id", req("ping", id=rng.choice([None, 1.5, True, [1], {"x": 1}]))),
        lambda: ("bad_method", req(rng.choice([None, 1, [], {}, "", "nope/nothing"]))),
        lambda: ("bad_params", req("tools/list", rng.choice([1, "s", [1, 2], True]))),
        lambda: ("unknown_fields", req("ping", {}, extra_field={"x": 1}, another=[1])),
        lambda: ("call_bad_name", req("tools/call", {"name": rng.choice(weird), "arguments": {}}, id=call_id)),
        lambda: ("call_bad_args", req("tools/call", {"name": "chat", "arguments": rng.choice(weird)}, id=call_id)),
        lambda: (
            "call_bad_meta",
            req(
                "tools/call",
                {"name": "version", "arguments": {}, "_meta": rng.choice([1, "s", [], {"progressToken": rng.choice(weird)}])},
                id=call_id,
            ),
        ),
        lambda: (
            "call_bad_timeout",
            req(
                "tools/call",
                {"name": "version", "arguments": {}, "_meta": {"exai/timeout": rng.choice([0, -1, "1", None, [], 1e308, True])}},
                id=call_id,
            ),
        ),
        lambda: (
            "chat_wrong_types",
            req(
                "tools/call",
                {"name": "chat", "arguments": {"prompt": rng.choice(weird), "temperature": rng.choice(weird), "files": rng.choice(weird)}},
                id=call_id,
            ),
        ),
        lambda: (
            "cancel_bad_id",
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": rng.choice(weird if not avoid_crashers else hashable_weird), "reason": rng.choice(weird)},
                }
            ),
        ),
        lambda: ("cancel_bad_params", json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": rng.choice(weird)})),
        lambda: ("deep_nesting", nested(rng.randint(2, 500 if avoid_crashers else 3000))),
        lambda: ("deep_params", req("ping", {"a": json.loads(nested(rng.randint(2, 300)))})),
        lambda: ("huge_number", '{"jsonrpc": "2.0", "id": ' + "9" * rng.randint(20, 6000) + ', "method": "ping"}'),
        lambda: ("huge_float", '{"jsonrpc": "2.0", "id": 1e999, "method": "ping"}'),
        lambda: ("long_string", req("ping", {"s": "x" * rng.randint(1000, 60000)})),
        lambda: ("oversized", "x" * 70000),  # over EXAI_MAX_MESSAGE_BYTES: closed with 1009
        lambda: ("reinitialize", req("initialize", {"protocolVersion": rng.choice(weird)})),
        lambda: ("duplicate_id", req("tools/call", {"name": "chat", "arguments": {"prompt": "dup\n#sim {\"latency_s\": 0.3}"}}, id="dup")),
    ]
    if not avoid_crashers:
        # Deep enough to overflow a recursive parser, yet under EXAI_MAX_MESSAGE_BYTES (64 KiB here).
        choices.append(lambda: ("bracket_flood", "[" * rng.randint(10_000, 60_000)))
        # Found by this soak: a lone surrogate in an id is echoed, and encoding the answer fails.
        choices.append(lambda: ("lone_surrogate_id", '{"jsonrpc": "2.0", "id": "\\ud800", "method": "ping"}'))
    choices.append(lambda: ("lone_surrogate_param", '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"s": "\\udc00"}}'))
    return rng.choice(choices)()


async def fuzz_client(soak: Soak, number: int, stop_at: float) -> None:
    rng = soak.rng
    while trio.current_time() < stop_at and soak.daemon_died is None:
        if rng.random() < 0.1:
            await bad_handshake(soak, number)
            continue
        try:
            async with open_websocket(soak.url, token=TOKEN) as ws:
                if rng.random() < 0.9:
                    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}))
                    await ws.get_message()
                for n in range(rng.randint(1, 40)):
                    if trio.current_time() >= stop_at or soak.daemon_died is not None:
                        break
                    kind, frame = fuzz_frame(rng, soak.args.avoid_known_crashers)
                    soak.fuzz[kind] += 1
                    soak.note_input(number, f"{kind}: {frame[:60]!r}{'...' if len(frame) > 60 else ''}")
                    await trio.sleep(rng.uniform(0, 0.05))  # leave the daemon's CPU to the callers
                    await ws.send_message(frame)
                    if kind == "oversized":
                        await expect_closed(soak, ws, 1009)
                        break
                    # A ping after each frame: everything up to its answer belongs to the frame.
                    sync_id = f"sync-{number}-{n}"
                    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": sync_id, "method": "ping"}))
                    with trio.fail_after(10):
                        while True:
                            message = json.loads(await ws.get_message())
                            if isinstance(message, dict) and message.get("id") == sync_id:
                                break
                            note_fuzz_answer(soak, kind, message)
        except ConnectionClosed as exc:
            soak.unexpected.append(f"fuzz client {number}: daemon closed the connection ({exc.reason})")
        except (CannotConnect, ConnectionLost):
            if not daemon_alive(soak):
                return
            soak.fuzz_codes["cannot_connect"] += 1
            await trio.sleep(0.2)
        except trio.TooSlowError:
            soak.unexpected.append(f"fuzz client {number}: no answer to a ping within 10 s after {list(soak.last_inputs[number])[-1:]}")


def note_fuzz_answer(soak: Soak, kind: str, message: Any) -> None:
    error = message.get("error") if isinstance(message, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        soak.fuzz_codes[str(code)] += 1
        if code == INTERNAL_ERROR:
            soak.internal_errors.append(f"fuzz {kind}: {json.dumps(message)[:200]}")
    elif isinstance(message, dict) and "result" in message:
        soak.fuzz_codes["result"] += 1
    elif isinstance(message, dict) and message.get("method") == "notifications/progress":
        soak.fuzz_codes["progress"] += 1
    else:
        soak.fuzz_codes["other"] += 1
        soak.unexpected.append(f"fuzz {kind}: answer that is no JSON-RPC response: {str(message)[:200]}")


async def expect_closed(soak: Soak, ws: Any, code: int) -> None:
    try:
        with trio.fail_after(5):
            while True:
                await ws.get_message()
    except ConnectionClosed as exc:
        got = exc.reason.code if exc.reason else None
        soak.fuzz_codes[f"close_{got}"] += 1
        if got != code:
            soak.unexpected.append(f"oversized frame: closed with {got}, expected {code}")
    except trio.TooSlowError:
        soak.unexpected.append(f"oversized frame: connection not closed within 5 s (expected {code})")


async def bad_handshake(soak: Soak, number: int) -> None:
    """A wrong token (or, without --avoid-known-crashers, a non-ASCII one or a half handshake)."""
    host, port = soak.url.removeprefix("ws://").rstrip("/").rsplit(":", 1)
    kinds = ["wrong_token", "no_token"]
    if not soak.args.avoid_known_crashers:
        kinds += ["non_ascii_token", "half_handshake"]
    kind = soak.rng.choice(kinds)
    soak.fuzz[f"handshake_{kind}"] += 1
    soak.note_input(number, f"handshake_{kind}")
    auth = {
        "wrong_token": f"Authorization: Bearer {TOKEN[:-1]}x\r\n".encode(),
        "no_token": b"",
        "non_ascii_token": b"Authorization: Bearer soak-\xff\xfe\r\n",
        "half_handshake": f"Authorization: Bearer {TOKEN}\r\n".encode(),
    }[kind]
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    ).encode() + auth
    try:
        stream = await trio.open_tcp_stream(host, int(port))
    except OSError:
        soak.fuzz_codes["cannot_connect"] += 1
        return
    async with stream:
        try:
            if kind == "half_handshake":
                await stream.send_all(request)  # no blank line: the handshake never completes
                return
            await stream.send_all(request + b"\r\n")
            answer = b""
            with trio.move_on_after(5):
                while b"\r\n" not in answer:
                    chunk = await stream.receive_some()
                    if not chunk:
                        break
                    answer += chunk
        except (trio.BrokenResourceError, OSError):
            return
    status = answer.split(b" ", 2)[1].decode(errors="replace") if answer.count(b" ") >= 2 else "none"
    soak.fuzz_codes[f"http_{status}"] += 1
    if status != "401":
        soak.unexpected.append(f"handshake {kind}: HTTP {status}, expected 401")


# -- invariants --------------------------------------------------------------------------------


async def sim_stats(soak: Soak, http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get(soak.sim_url.rsplit("/v1", 1)[0] + "/_sim/stats")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def daemon_status(soak: Soak, http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get(soak.monitor_url + "/api/status", headers=soak.headers)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def daemon_alive(soak: Soak) -> bool:
    assert soak.daemon is not None
    if soak.daemon.poll() is None:
        return True
    if soak.daemon_died is None:
        soak.daemon_died = f"exit code {soak.daemon.returncode}"
        soak.check("daemon alive").fail(
            f"the daemon died ({soak.daemon_died}); each fuzz client's last inputs: "
            + " | ".join(" < ".join(reversed(inputs)) for inputs in soak.last_inputs.values())
        )
        if soak.load is not None:
            soak.load.cancel()  # what follows a death is no news
    return False


def check_bounds(soak: Soak, status: dict[str, Any]) -> None:
    limit = LIMITS["EXAI_GLOBAL_MAX_INFLIGHT"]
    bounds = soak.check("borrowed <= total, every limiter")
    for name, stats in status["limiters"].items():
        if not 0 <= stats["borrowed"] <= stats["total"]:
            bounds.fail(f"{name}: borrowed {stats['borrowed']} of {stats['total']}")
    soak.verify(f"inflight <= {limit}", status["inflight"] <= limit, f"inflight {status['inflight']}")
    queued_max = LIMITS["EXAI_MAX_QUEUED"]
    soak.verify(f"queued <= {queued_max}", 0 <= status["queued"] <= queued_max, f"queued {status['queued']}")
    for key in ("inflight", "queued", "connections"):
        soak.max_seen[key] = max(soak.max_seen[key], status[key])
    provider_inflight = sum(p["inflight"] for p in status["providers"].values())
    soak.max_seen["provider_inflight"] = max(soak.max_seen["provider_inflight"], provider_inflight)


async def sample(soak: Soak, http: httpx.AsyncClient) -> None:
    """One round of the every-second checks.

    A simulator request the daemon does not count is a leak. Counted here without a race:
    the simulator's open requests at its first read minus those that ended before its second
    (SIM_RESAMPLE_S after the daemon's status) is a lower bound on the requests open at the
    simulator all along, so while the daemon's status was taken. The daemon counts a request
    from before it is sent until it has closed it, and the simulator sees an abort within
    milliseconds; so that bound must never exceed the daemon's count.
    """
    before = await sim_stats(soak, http)
    asked = trio.current_time()
    status = await daemon_status(soak, http)
    took_ms = round((trio.current_time() - asked) * 1000)
    soak.max_seen["status_ms"] = max(soak.max_seen["status_ms"], took_ms)
    health = await http.get(soak.monitor_url + "/healthz")
    soak.verify("/healthz 200 (the daemon's loop responsive)", health.status_code == 200, f"{health.status_code} {health.text[:100]}")
    await trio.sleep(SIM_RESAMPLE_S)
    after = await sim_stats(soak, http)
    soak.samples += 1
    check_bounds(soak, status)
    ended_between = (after["requests_total"] - after["inflight"]) - (before["requests_total"] - before["inflight"])
    open_throughout = before["inflight"] - ended_between
    provider_inflight = sum(p["inflight"] for p in status["providers"].values())
    soak.max_seen["sim_inflight"] = max(soak.max_seen["sim_inflight"], before["inflight"], after["inflight"])
    leak = soak.check("simulator open requests <= daemon's provider requests")
    if open_throughout > provider_inflight:
        leak.fail(f"{open_throughout} open at the simulator throughout, daemon counts {provider_inflight}")
    for name, provider in status["providers"].items():
        soak.circuits[f"{name} {provider['circuit']}"] += 1
        soak.max_seen["rpm_waiting"] = max(soak.max_seen["rpm_waiting"], provider["rpm_waiting"])
        soak.max_seen["probes_inflight"] = max(soak.max_seen["probes_inflight"], provider["probes_inflight"])


async def monitor(soak: Soak, stop_at: float, started: float) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        while trio.current_time() < stop_at:
            next_tick = trio.current_time() + 1.0
            if not daemon_alive(soak):
                return
            assert soak.daemon is not None
            if "25%" not in soak.rss and trio.current_time() >= started + 0.25 * (stop_at - started):
                soak.rss["25%"] = rss_kib(soak.daemon.pid)
            try:
                await sample(soak, http)
            except httpx.HTTPError as exc:
                if daemon_alive(soak):
                    soak.check("monitor answers").fail(f"/api/status or /_sim/stats failed: {exc!r}")
            except Exception as exc:  # a bug of the soak's own: reported, the sampling goes on
                traceback.print_exception(exc)
                soak.check("the soak's own sampling raised nothing").fail(repr(exc)[:300])
            await trio.sleep_until(next_tick)


async def final_checks(soak: Soak) -> dict[str, Any]:
    """After the quiet second: everything at rest. Watches a failing state a little longer,
    to say in the report whether it was slow or stuck."""
    assert soak.daemon is not None
    await trio.sleep(QUIET_S)
    if not daemon_alive(soak):
        return {}
    soak.rss["100%"] = rss_kib(soak.daemon.pid)
    async with httpx.AsyncClient(timeout=5) as http:
        status = await daemon_status(soak, http)
        sim = await sim_stats(soak, http)
        problems = rest_problems(status, sim)
        suffix = ""
        if problems:
            settled = False
            with trio.move_on_after(SETTLE_S):
                while rest_problems(await daemon_status(soak, http), await sim_stats(soak, http)):  # noqa: ASYNC110 - another process's state
                    await trio.sleep(0.1)
                settled = True
            suffix = f" (settled within {SETTLE_S:g} s)" if settled else f" (still so {SETTLE_S:g} s later)"
        soak.verify("at rest after a quiet second", not problems, "; ".join(problems) + suffix)
        metrics_text = (await http.get(soak.monitor_url + "/metrics", headers=soak.headers)).text
    return {"status": status, "sim": sim, "metrics": metrics_text}


def rest_problems(status: dict[str, Any], sim: dict[str, Any]) -> list[str]:
    found = []
    borrowed = {n: s["borrowed"] for n, s in status["limiters"].items() if s["borrowed"] or s["waiting"]}
    if borrowed:
        found.append(f"limiters busy: {borrowed}")
    for key in ("inflight", "queued", "connections"):
        if status[key]:
            found.append(f"{key}={status[key]}")
    if status["requests"]:
        found.append(f"calls alive: {[r['id'] for r in status['requests']]}")
    for name, provider in status["providers"].items():
        for key in ("inflight", "busy_connections", "rpm_waiting", "probes_inflight"):
            if provider.get(key):
                found.append(f"{name}.{key}={provider[key]}")
    if sim["inflight"]:
        found.append(f"simulator inflight={sim['inflight']}")
    return found


def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


async def guarded(soak: Soak, client: Callable[[Soak, int, float], Awaitable[None]], number: int, stop_at: float) -> None:
    """Run one client; an error of the soak's own (not the daemon's) ends only that client,
    shown in the report and, with its traceback, on stderr."""
    try:
        await client(soak, number, stop_at)
    except Exception as exc:
        traceback.print_exception(exc)
        soak.check("the soak's own clients raised nothing").fail(
            f"{client.__name__} {number}: {''.join(traceback.format_exception_only(exc)).strip()[-300:]}"
        )


# -- main ----------------------------------------------------------------------------------------


async def run(soak: Soak, workdir: str, log: Any, sim_log: Any) -> dict[str, Any]:
    """Start both processes, run the load and the checks, stop both. The daemon's stderr
    goes to `log`, the simulator's to `sim_log`."""
    args = soak.args
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
    sim_proc = await trio.lowlevel.open_process(
        [*EXAI, "mock-provider", "--port", "0"], stdout=subprocess.PIPE, stderr=sim_log, env=env, cwd=workdir
    )
    try:
        assert sim_proc.stdout is not None
        with trio.fail_after(30):
            soak.sim_url = (await read_until(sim_proc.stdout, rb"mock-provider on (\S+)", bytearray())).group(1).decode()
        env.update(ENV)
        env.update(
            KIMI_API_KEY="soak-dummy-kimi",
            GLM_API_KEY="soak-dummy-glm",
            KIMI_BASE_URL=soak.sim_url,
            GLM_BASE_URL=soak.sim_url,
            EXAI_PORT="0",
            EXAI_MONITOR_PORT="0",
            EXAI_HTTP_PORT="0",
            EXAI_STATE_DIR=os.path.join(workdir, "state"),
            EXAI_ALLOWED_ROOTS=workdir,
        )
        soak.daemon = await trio.lowlevel.open_process(
            [*EXAI, "serve"], stdout=subprocess.PIPE, stderr=log, env=env, cwd=workdir
        )
        assert soak.daemon.stdout is not None
        seen = bytearray()
        with trio.fail_after(30):
            soak.url = (await read_until(soak.daemon.stdout, rb"exai listening on (\S+)", seen)).group(1).decode()
            soak.monitor_url = (await read_until(soak.daemon.stdout, rb"exai monitor on (\S+)", seen)).group(1).decode()
        started = trio.current_time()
        stop_at = started + args.duration
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor, soak, stop_at, started)
            async with trio.open_nursery() as clients:
                soak.load = clients.cancel_scope
                for number in range(args.clients):
                    clients.start_soon(guarded, soak, well_behaved_client, number, stop_at)
                for number in range(args.fuzz_clients):
                    clients.start_soon(guarded, soak, fuzz_client, number, stop_at)
                # Clients stop starting work at stop_at; whatever is still running gets 15 s.
                await trio.sleep_until(stop_at)
                clients.cancel_scope.deadline = stop_at + 15
            if clients.cancel_scope.cancelled_caught:
                soak.unexpected.append("clients still busy 15 s after the end; cancelled")
        final = await final_checks(soak)
        if daemon_alive(soak):
            code = await stop_process(soak.daemon)
            soak.verify("daemon exits 0 on SIGTERM", code == 0, f"exit code {code}")
        return final
    finally:
        with trio.CancelScope(shield=True):
            if soak.daemon is not None:
                await stop_process(soak.daemon)
            await stop_process(sim_proc)
        soak.check("daemon alive")
        log_checks(soak, log.name)


def log_checks(soak: Soak, log_path: str) -> None:
    try:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            text = log.read()
    except OSError:
        text = ""
    soak.rss["log_lines"] = text.count("\n")
    tracebacks = text.count("Traceback")
    check = soak.check("no traceback in the daemon's log")
    if tracebacks:
        raised = re.findall(r"^[\s|]*((?:[\w.]+Error|[\w.]+Exception|[\w.]*Closed)\b.*)$", text, re.MULTILINE)
        check.fail(f"{tracebacks} traceback(s); raised: {sorted(set(raised))[:4]}")
    leaked = [secret for secret in (TOKEN, "soak-dummy-kimi", "soak-dummy-glm") if secret in text]
    soak.verify("no secret in the daemon's log", not leaked, f"{leaked} appear in the log")


def report(soak: Soak, final: dict[str, Any], took: float) -> bool:
    args = soak.args
    print(f"exai soak: {args.duration:g} s, {args.clients} clients + {args.fuzz_clients} fuzzers, seed {args.seed}"
          f"{', known crashers avoided' if args.avoid_known_crashers else ''}; took {took:.0f} s, {soak.samples} samples")
    total = sum(soak.outcomes.values())
    print(f"calls by outcome ({total}): " + ", ".join(f"{k} {v}" for k, v in soak.outcomes.most_common()))
    for action, counts in sorted(soak.by_action.items()):
        print(f"  {action:<15} " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    metrics_text = final.get("metrics", "")
    if metrics_text:
        cancels = metric_samples(metrics_text, "exai_cancellations_total")
        print("cancellations by reason (daemon): " + ", ".join(
            f"{dict(k)['reason']} {v:g}" for k, v in sorted(cancels.items())))
        outcomes: Counter[str] = Counter()
        for labels, value in metric_samples(metrics_text, "exai_requests_total").items():
            outcomes[dict(labels)["outcome"]] += int(value)
        print("daemon outcomes: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
        provider: Counter[str] = Counter()
        for labels, value in metric_samples(metrics_text, "exai_provider_requests_total").items():
            provider[dict(labels)["outcome"]] += int(value)
        print("provider attempts: " + ", ".join(f"{k} {v}" for k, v in provider.most_common()))
    print(f"fuzz frames ({sum(soak.fuzz.values())}): answers " + ", ".join(f"{k} {v}" for k, v in soak.fuzz_codes.most_common()))
    print("tool errors: " + "; ".join(f"{v}x {k}" for k, v in soak.tool_errors.most_common(4)))
    print("peaks: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.max_seen.items())))
    print("circuit states (samples): " + ", ".join(f"{k} {v}" for k, v in sorted(soak.circuits.items())))
    rss25, rss100 = soak.rss.get("25%"), soak.rss.get("100%")
    growth_check = soak.check(f"RSS growth 25%->100% < {RSS_GROWTH_MAX:.0%}")
    if rss25 and rss100:
        growth = (rss100 - rss25) / rss25
        if growth >= RSS_GROWTH_MAX:
            growth_check.fail(f"{growth:+.1%}")
        print(f"daemon RSS: 25% {rss25 / 1024:.1f} MiB, 100% {rss100 / 1024:.1f} MiB ({growth:+.1%}); log {soak.rss.get('log_lines', 0)} lines")
    elif soak.daemon_died is None:
        growth_check.fail("RSS not sampled")
    internal = soak.check("no -32603 answered")
    for item in soak.internal_errors[:1]:
        internal.fail(f"{len(soak.internal_errors)} time(s); first: {item}")
    unexpected = soak.check("no unexpected answer or dropped connection")
    for item in soak.unexpected[:1] if soak.daemon_died is None else []:
        unexpected.fail(f"{len(soak.unexpected)} time(s); first: {item}")
    odd = {k: v for k, v in soak.outcomes.items() if k.startswith("rpc_") or k in ("connection_lost", "cannot_connect")}
    soak.verify("well-behaved calls get contract answers", not odd or soak.daemon_died is not None, str(odd))
    print("invariants:")
    ok = True
    for check in soak.checks.values():
        ok = ok and check.ok
        mark = "pass" if check.ok else f"FAIL x{check.failures}"
        print(f"  [{mark}] {check.name}{': ' + check.detail if check.detail else ''}")
    print("RESULT: " + ("pass" if ok else "FAIL"))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--clients", type=int, default=16, help="well-behaved clients (default 16)")
    parser.add_argument("--fuzz-clients", type=int, default=3, help="clients sending bad input (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the time)")
    parser.add_argument(
        "--avoid-known-crashers",
        action="store_true",
        help="leave out the inputs known to kill today's daemon: the four of issue 6 "
        "(deep nesting, unhashable requestId, half handshake, non-ASCII bearer) and a lone surrogate in an id",
    )
    args = parser.parse_args()
    if args.seed is None:
        args.seed = int(time.time()) % 100_000
    soak = Soak(args, random.Random(args.seed))
    workdir = tempfile.mkdtemp(prefix="exai-soak-")
    started = time.monotonic()
    with open(os.path.join(workdir, "daemon.log"), "wb") as log, open(os.path.join(workdir, "sim.log"), "wb") as sim_log:
        try:
            final = trio.run(run, soak, workdir, log, sim_log)
        except Exception as exc:  # the report still says what was seen up to here
            traceback.print_exception(exc)
            soak.check("the soak itself ran to its end").fail(f"{type(exc).__name__}: {exc} (traceback on stderr)")
            final = {}
    ok = report(soak, final, time.monotonic() - started)
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept for inspection: {workdir} (daemon.log, sim.log)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
