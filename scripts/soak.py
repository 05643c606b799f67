"""exai chaos soak: many misbehaving clients against a real daemon, invariants checked every second.

Three processes on loopback: the simulator (`exai mock-provider`), the daemon (`exai serve`,
small limits so queues overflow) and this driver. Well-behaved clients (exai.client) make
random tool calls whose prompts carry `#sim` directives (429 with Retry-After, 5xx, hangs,
stalled, cut and malformed streams, malformed bodies, latency); they cancel calls, set short
deadlines, burst past the queue and drop their TCP connection mid-call; they call the other
tools too (challenge, precommit on a git repository, secaudit, tracer, clink), and clink with a
CLI that never answers (tests/fake_cli.py), cancelled or abandoned: at the end, neither it nor
its child may be left. Fuzz clients send
frames that are not JSON, of the wrong shape or with wrong types, and bad handshakes.

Beside them, Streamable HTTP clients on the same daemon (httpx, httpx-sse) make the same calls
in sessions; they also drop a call's SSE stream and come back with Last-Event-ID (the result
must arrive), DELETE sessions while their calls run, and walk away from sessions, which the
idle timeout (EXAI_HTTP_SESSION_IDLE_SECS, 3 s here) must end. An HTTP fuzz client sends bad bodies,
headers, session ids, methods and sizes: only the contract's 4xx or JSON-RPC errors may come back.
Modern clients (MCP 2026-07-28, no session) make the same calls, close a call's stream mid-way
(its cancellation: nothing it started may be left) and send bad routing headers and _meta,
which must get their 400/404 and code.

Every second: /healthz answers 200, borrowed <= total for every limiter, inflight <= the global
limit, queued <= EXAI_MAX_QUEUED, and no simulator request open that the daemon does not count
(see `sample`). At the end,
after a quiet wait (the HTTP idle timeout + 1 s): nothing borrowed, queued, alive or open, no
session left, each session walked away from gone; RSS growth under 10% between
the 25% and 100% marks; no -32603; no traceback in the daemon's log; the daemon alive and
exiting 0 on SIGTERM. Prints a one-screen report; exits 1 on any violation.

    python scripts/soak.py --duration 60 --clients 16          # CI
    python scripts/soak.py --duration 600                      # the long run

Without --avoid-known-crashers the fuzz clients also send the inputs known to kill today's
daemon (issue 6): a violation until they are fixed, and the report says which input it was.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed

from exai.client import CannotConnect, ConnectionLost, ExaiClient, RpcError, connect, open_websocket

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from harness import HttpAnswer, RawMcpHttp, read_until, rss_kib, status_leaks, stop_process
from processes_support import gone

EXAI: Final = [sys.executable, "-c", "from exai.cli import main; main()"]
# clink's CLIs: one that answers at once, one that never does (it and its child ignore SIGTERM)
FAKE_CLI: Final = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fake_cli.py")
TOKEN: Final = "soak-token-0123456789"
HTTP_IDLE_S: Final = 3.0  # EXAI_HTTP_SESSION_IDLE_SECS: a session walked away from ends this long after
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
    "EXAI_HTTP_SESSION_IDLE_SECS": f"{HTTP_IDLE_S:g}",
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
    http_url: str = ""
    http: Counter[str] = field(default_factory=Counter)  # sessions, reconnects (see `report`)
    http_outcomes: Counter[str] = field(default_factory=Counter)
    http_by_action: dict[str, Counter[str]] = field(default_factory=dict)
    http_fuzz: Counter[str] = field(default_factory=Counter)
    http_fuzz_answers: Counter[str] = field(default_factory=Counter)
    abandoned: list[str] = field(default_factory=list)  # ids of HTTP sessions walked away from
    repo: str = ""  # a git repository for precommit
    clink_pids: str = ""  # where each sleepy CLI run writes its pid and its child's
    clink: Counter[str] = field(default_factory=Counter)  # runs, left (see clink_checks)
    tasks: Counter[str] = field(default_factory=Counter)  # created, cancelled, ... (see task_round)
    daemon_log: str = ""

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

    def record_http(self, action: str, outcome: str) -> None:
        self.http_outcomes[outcome] += 1
        self.http_by_action.setdefault(action, Counter())[outcome] += 1

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


def code_outcome(code: Any) -> str:
    return {-32001: "timed_out", -32000: "overloaded", INTERNAL_ERROR: "internal_error"}.get(code, f"rpc_{code}")


def classify(exc: BaseException) -> str:
    if isinstance(exc, RpcError):
        return code_outcome(exc.code)
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
    ("clink", 2),
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
            ("challenge", {"prompt": "soak: the cache is thread-safe"}),
            ("clink", {"prompt": "soak", "cli_name": "echo"}),
            ("secaudit", {**FIRST_STEP, "audit_focus": "owasp"}),
            ("tracer", {**FIRST_STEP, "trace_mode": "precision", "target_description": "soak"}),
            ("precommit", {**FIRST_STEP, "path": soak.repo}),  # reads the repository with git
            ("tools/list", None),
            ("ping", None),
        ]
    )
    try:
        if arguments is None:  # a method, not a tool
            if name == "ping":
                await client.ping()  # ping, or server/discover on a modern client (which has no ping)
            else:
                await client.request(name)
            return "ok"
        result = await client.call_tool(name, arguments)
        return result_outcome(soak, result)
    except (RpcError, ConnectionLost) as exc:
        return failure(soak, f"{name} {json.dumps(arguments)[:60]}", exc)


FIRST_STEP: Final = {"step": "soak", "step_number": 1, "total_steps": 2, "next_step_required": True, "findings": "none yet"}


async def clink_sleepy(soak: Soak, client: ExaiClient, tag: str) -> str:
    """clink with the CLI that never answers, cancelled by the client or abandoned on a
    connection dropped mid-call; `clink_checks` finds neither it nor its child left."""
    arguments = {"prompt": f"soak {tag}", "cli_name": "sleepy"}
    if soak.rng.random() < 0.5:
        try:
            with trio.move_on_after(soak.rng.uniform(0.1, 1.0)):
                return result_outcome(soak, await client.call_tool("clink", arguments))
        except (RpcError, ConnectionLost) as exc:
            return failure(soak, "clink", exc)
        return "cancelled_by_client"
    outcome = "abandoned"
    try:
        async with connect(soak.url, token=TOKEN) as own, trio.open_nursery() as nursery:

            async def call() -> None:
                nonlocal outcome
                try:
                    outcome = result_outcome(soak, await own.call_tool("clink", arguments))
                except ConnectionLost:
                    pass  # the drop below
                except RpcError as exc:
                    outcome = failure(soak, "clink", exc)

            nursery.start_soon(call)
            await trio.sleep(soak.rng.uniform(0.1, 1.0))
            await own.close_abruptly()
    except (CannotConnect, ConnectionLost, ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return outcome


async def well_behaved_client(soak: Soak, number: int, stop_at: float) -> None:
    rng = soak.rng
    names = [name for name, _ in ACTIONS]
    weights = [weight for _, weight in ACTIONS]
    calls = 0
    while trio.current_time() < stop_at and soak.daemon_died is None:
        try:
            # Half the WebSocket clients speak the legacy revision, half the library's default (modern).
            async with connect(soak.url, token=TOKEN, era="legacy" if number % 2 else "auto") as client:
                while trio.current_time() < stop_at and soak.daemon_died is None:
                    action = rng.choices(names, weights)[0]
                    calls += 1
                    tag = f"c{number}-{calls}"
                    if action == "disconnect":
                        await disconnect_mid_call(soak, tag)
                    elif action == "burst":
                        await burst(soak, client, tag, soak.record)
                    elif action == "outage":
                        await outage(soak, client, tag)
                    elif action == "other_tool":
                        soak.record(action, await other_tool(soak, client))
                    elif action == "clink":
                        soak.record(action, await clink_sleepy(soak, client, tag))
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


async def burst(soak: Soak, client: ExaiClient, tag: str, record: Callable[[str, str], None]) -> None:
    """More calls at once than the session may run: they queue, or overflow it."""

    async def one(i: int) -> None:
        record("burst", await one_chat(soak, client, "latency", f"{tag}-{i}"))

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


# -- Streamable HTTP clients ---------------------------------------------------------------------

HTTP_VERSION: Final = "2025-11-25"
ACCEPT_BOTH: Final = "application/json, text/event-stream"
# The JSON-RPC errors the contract gives for bad input, load and deadlines; never -32603.
CONTRACT_CODES: Final = frozenset({-32700, -32600, -32601, -32602, -32000, -32001})
# What a well-behaved HTTP client does within its session: the WebSocket clients' calls
# (a dropped TCP connection and the outage left to them), and dropping a call's SSE stream.
HTTP_ACTIONS: Final = [
    *[(name, weight) for name, weight in ACTIONS if name not in ("disconnect", "outage")],
    ("drop_stream", 6),
]
# What a session is for: calls, then DELETE (or, one time in ten, walking away); calls ended
# by DELETE while they run; or opening one, maybe starting a call, and walking away.
HTTP_SESSIONS: Final = [("calls", 6), ("delete_mid_call", 2), ("abandon", 1)]
# The client's bounds: far past the tool timeout (8 s), and keep-alive connections dropped
# before hypercorn's own 5 s keep-alive timeout closes them under a request.
HTTP_TIMEOUT: Final = httpx.Timeout(30.0)
HTTP_POOL: Final = httpx.Limits(keepalive_expiry=2.0)


class HttpTrouble(Exception):
    """An HTTP exchange that did not give what the contract owes a well-behaved client."""


def rpc(id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return message


class HttpMcp(RawMcpHttp):
    """One Streamable HTTP session driven raw (the harness's sender), with the soak's
    bookkeeping: for the clients that drop streams or walk away, and for the fuzz client."""

    def __init__(self, soak: Soak, http: httpx.AsyncClient, name: str):
        super().__init__(http, soak.http_url, TOKEN)
        self.soak = soak
        self.name = name
        self.overloaded = 0  # calls refused with -32000 ("Server overloaded"), for backing off
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        return f"{self.name}-{next(self._ids)}"

    def headers(self, **extra: str | bytes | None) -> dict[str, Any]:
        return super().headers(**{"MCP-Protocol-Version": HTTP_VERSION, **extra})

    async def send(self, message: Any, **kwargs: Any) -> HttpAnswer:
        answer = await self.exchange("POST", content=json.dumps(message), **kwargs)
        error = (answer.response() or {}).get("error")
        if isinstance(error, dict) and error.get("code") == -32000:
            self.overloaded += 1
        return answer

    async def open(self) -> None:
        """Open the session: initialize (its answer carries the session id), then initialized."""
        params = {"protocolVersion": HTTP_VERSION, "capabilities": {}, "clientInfo": {"name": "exai-soak", "version": "0"}}
        answer = await self.send(rpc(0, "initialize", params))
        response = answer.response()
        if answer.status != 200 or not answer.session_id or response is None or "result" not in response:
            raise HttpTrouble(f"initialize: {answer.describe()}")
        self.session_id = answer.session_id
        self.soak.http["opened"] += 1
        note = await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if note.status != 202:
            raise HttpTrouble(f"notifications/initialized: {note.describe()}")

    async def end(self) -> None:
        """End the session, as a well-behaved client does: 204, then its id is unknown."""
        response = await self.delete()
        if response.status_code != 204:
            raise HttpTrouble(f"DELETE: HTTP {response.status_code} {response.text[:160]}")
        self.soak.http["deleted"] += 1
        await self.expect_ended("a ping after DELETE")

    async def expect_ended(self, what: str) -> None:
        after = await self.send(rpc(self.next_id(), "ping"))
        if after.status != 404:
            raise HttpTrouble(f"{what}: {after.describe()}, expected HTTP 404")


def http_outcome(soak: Soak, what: str, answer: HttpAnswer, request_id: Any, *, no_response: str = "no_response") -> str:
    """The outcome of a well-behaved call's answer, classified as the WebSocket clients' are;
    a -32603, a code outside the contract or a broken answer is noted with `what`. A stream
    that ends without a response is `no_response`: a violation unless the caller expected it."""
    if answer.status != 200:
        soak.unexpected.append(f"http {what}: {answer.describe()}")
        return f"http_{answer.status}"
    if answer.text:
        soak.unexpected.append(f"http {what}: data that is not JSON: {answer.text[:160]}")
    check_progress(soak, what, answer)
    response = answer.response()
    if response is None:
        if no_response == "no_response":
            soak.unexpected.append(f"http {what}: the stream ended without a response ({answer.describe()})")
        return no_response
    if response.get("id") != request_id:
        soak.unexpected.append(f"http {what}: a response to {response.get('id')!r} on the stream of {request_id!r}")
    error = response.get("error")
    if isinstance(error, dict):
        outcome = code_outcome(error.get("code"))
        if outcome == "internal_error":
            soak.internal_errors.append(f"http {what}: {json.dumps(response)[:200]}")
        elif outcome.startswith("rpc_"):
            soak.unexpected.append(f"http {what}: {json.dumps(response)[:200]}")
        return outcome
    result = response.get("result")
    if not isinstance(result, dict):
        soak.unexpected.append(f"http {what}: a response that is neither result nor error: {json.dumps(response)[:200]}")
        return "bad_response"
    if not result.get("isError"):
        return "ok"
    content = result.get("content") or [{}]
    soak.tool_errors[re.sub(r"[\d.]+", "N", str(content[0].get("text", "")))[:70]] += 1
    return "tool_error"


def check_progress(soak: Soak, what: str, answer: HttpAnswer) -> None:
    """Progress strictly increases and none comes after the response; every event has an id."""
    values: list[Any] = []
    answered = False
    for message in answer.messages:
        if isinstance(message, dict) and message.get("method") == "notifications/progress":
            if answered:
                soak.unexpected.append(f"http {what}: progress after the response")
            values.append(message.get("params", {}).get("progress"))
        else:
            answered = True
    if any(not isinstance(v, int | float) for v in values) or any(b <= a for a, b in itertools.pairwise(values)):
        soak.unexpected.append(f"http {what}: progress not strictly increasing: {values}")
    if answer.content_type.startswith("text/event-stream") and not answer.modern and not all(answer.event_ids):
        soak.unexpected.append(f"http {what}: an SSE event without an id: {answer.event_ids}")


def chat_call(soak: Soak, s: HttpMcp, tag: str, behaviour: dict[str, Any], stream: bool, timeout: float | None = None) -> tuple[str, dict[str, Any]]:
    """(request id, message) of a chat call whose prompt carries the `#sim` behaviour."""
    request_id = s.next_id()
    params: dict[str, Any] = {
        "name": "chat",
        "arguments": {"prompt": f"soak {tag}\n#sim {json.dumps(behaviour)}", "model": soak.rng.choice(MODELS)},
    }
    meta: dict[str, Any] = {}
    if stream:
        meta["progressToken"] = f"p-{request_id}"
    if timeout is not None:
        meta["exai/timeout"] = timeout
    if meta:
        params["_meta"] = meta
    return request_id, rpc(request_id, "tools/call", params)


async def http_drop_stream(soak: Soak, s: HttpMcp, tag: str) -> str:
    """A call whose SSE stream the client drops early; it comes back with Last-Event-ID
    (maybe dropping that stream too) and must get the call's response. A call refused as
    overloaded is asked again, a few times: the point is a call that runs."""
    rng = soak.rng
    if rng.random() < 0.7:
        behaviour: dict[str, Any] = {"chunks": rng.randint(4, 10), "chunk_delay_s": round(rng.uniform(0.05, 0.2), 3)}
    else:
        behaviour = {"latency_s": round(rng.uniform(0.2, 1.5), 3)}
    # A streamed call is left after its first progress (so it runs at the provider); one
    # without progress after the priming event (it may still be queued).
    wanted = 1 if "chunks" in behaviour else 0
    attempts = 5
    while True:
        attempts -= 1
        request_id, message = chat_call(soak, s, tag, behaviour, stream=True)
        overloaded = s.overloaded
        seen = await s.send(message, drop_when=lambda answer: answer.progress_count() >= wanted and bool(answer.event_ids))
        if seen.dropped and seen.response() is None:
            break
        outcome = http_outcome(soak, "drop_stream", seen, request_id)  # done before the drop
        if s.overloaded == overloaded or not attempts:
            return outcome
        soak.record_http("drop_stream", outcome)
        await trio.sleep(rng.uniform(0.1, 0.3))
    for attempt in range(3):
        soak.http["reconnects"] += 1
        # Sometimes the replay is dropped too, after one event: the next comes back from there.
        again_drop = attempt < 2 and rng.random() < 0.3
        again = await s.exchange(
            "GET",
            headers=s.headers(**{"Last-Event-ID": seen.event_ids[-1]}),
            drop_when=(lambda answer: bool(answer.event_ids)) if again_drop else None,
        )
        if again.status != 200:
            soak.unexpected.append(f"http drop_stream: GET with Last-Event-ID {seen.event_ids[-1]}: {again.describe()}")
            return f"http_{again.status}"
        seen.messages += again.messages
        seen.event_ids += again.event_ids
        seen.text += again.text
        if not again.dropped or seen.response() is not None:
            break
    outcome = http_outcome(soak, "drop_stream", seen, request_id)
    if seen.response() is not None:
        soak.http["reconnect_result"] += 1
        if seen.progress_count() and outcome in ("ok", "tool_error"):
            soak.http["reconnect_ran"] += 1  # it ran when its stream was dropped, and finished
    return outcome


async def http_delete_mid_call(soak: Soak, http: httpx.AsyncClient, tag: str) -> None:
    """A session of its own (the client library), DELETEd while its calls run: each call ends
    with no response, or, sent after the DELETE, is refused with 404 (the sampler sees that
    none of their provider requests outlives the session). The first call streams, and is
    asked again while refused as overloaded: the DELETE comes once it shows progress (so it
    runs at the provider) or has ended, or after 3 s."""
    rng = soak.rng
    outcomes: list[str] = []
    running = trio.Event()
    deleted = False
    async with connect(soak.http_url, token=TOKEN, era="legacy") as client:  # a session, to DELETE
        soak.http["opened"] += 1
        raw = HttpMcp(soak, http, f"{tag}d")
        raw.session_id = client.session_id

        def progressed(params: dict[str, Any]) -> None:
            running.set()

        async def one(i: int) -> None:
            while True:
                behaviour = rng.choice([{"hang": True}, {"latency_s": 3.0}, {"chunks": 20, "chunk_delay_s": 0.2}])
                stream = rng.random() < 0.5
                if i == 0:
                    behaviour, stream = {"chunks": 20, "chunk_delay_s": 0.2}, True
                arguments = {"prompt": f"soak {tag}-{i}\n#sim {json.dumps(behaviour)}", "model": rng.choice(MODELS)}
                on_progress = progressed if i == 0 else (ignore_progress if stream else None)
                try:
                    outcome = result_outcome(soak, await client.call_tool("chat", arguments, on_progress=on_progress))
                except RpcError as exc:
                    outcome = failure(soak, "delete_mid_call", exc)
                except ConnectionLost as exc:
                    if not deleted:
                        soak.unexpected.append(f"http delete_mid_call: a call lost before the DELETE: {exc}")
                    outcome = "refused_after_delete" if "HTTP 404" in str(exc) else "ended_by_delete"
                outcomes.append(outcome)
                if i > 0:
                    return
                if outcome != "overloaded" or deleted:
                    running.set()  # done without progress (a failing provider): nothing to wait for
                    return
                await trio.sleep(rng.uniform(0.1, 0.3))

        async with trio.open_nursery() as nursery:
            for i in range(rng.randint(1, 3)):
                nursery.start_soon(one, i)
            with trio.move_on_after(3.0):
                await running.wait()
            await trio.sleep(rng.uniform(0.0, 0.3))
            deleted = True
            await raw.end()
    for outcome in outcomes:
        soak.record_http("delete_mid_call", outcome)


def ignore_progress(params: dict[str, Any]) -> None:
    """Asks for progress (so the call streams) and needs nothing of it: the library checks
    each notification belongs to its call."""


async def http_session(soak: Soak, http: httpx.AsyncClient, number: int, tag: str, stop_at: float) -> None:
    """One session of a well-behaved HTTP client, through the client library (the same calls
    as the WebSocket clients make), beside which it drops a call's SSE stream now and then
    (the raw sender: no library drops a stream on purpose). Ended by the library's DELETE, or
    one time in ten walked away from."""
    rng = soak.rng
    names, weights = zip(*HTTP_ACTIONS, strict=True)
    walked = False
    async with connect(soak.http_url, token=TOKEN, era="legacy") as client:  # the legacy session clients
        soak.http["opened"] += 1
        raw = HttpMcp(soak, http, tag)
        raw.session_id = client.session_id
        for n in range(rng.randint(3, 12)):
            if not running(soak, stop_at):
                break
            action = rng.choices(names, weights)[0]
            call_tag = f"{tag}-{n}"
            if action == "burst":
                await burst(soak, client, call_tag, soak.record_http)
                outcome = ""
            elif action == "drop_stream":
                outcome = await http_drop_stream(soak, raw, call_tag)
            elif action == "other_tool":
                outcome = await other_tool(soak, client)
            else:
                outcome = await one_chat(soak, client, action, call_tag)
            if outcome:
                soak.record_http(action, outcome)
            await trio.sleep(rng.uniform(0, 0.2))  # a client thinks between calls
            if outcome == "overloaded":  # told to come back later (retry_after_s)
                await trio.sleep(rng.uniform(0.3, 1.0))
        if rng.random() < 0.1:
            walked = True
            walk_away(soak, raw)
            await client.close_abruptly()  # no DELETE: only the idle timeout ends it
    if not walked:
        soak.http["deleted"] += 1
        await raw.expect_ended("a ping after the client library's DELETE")


async def http_abandon(soak: Soak, http: httpx.AsyncClient, tag: str) -> None:
    """A session of its own that the client walks away from, maybe leaving a call's stream
    on the way: no DELETE, so only the idle timeout ends it (checked at the end)."""
    rng = soak.rng
    s = HttpMcp(soak, http, f"{tag}a")
    await s.open()
    if rng.random() < 0.6:
        behaviour = rng.choice([{"hang": True}, {"latency_s": round(rng.uniform(0.5, 5.0), 3)}, {"chunks": 30, "chunk_delay_s": 0.2}])
        request_id, message = chat_call(soak, s, tag, behaviour, stream=rng.random() < 0.5)
        answer = await s.send(message, hold_s=rng.uniform(0.05, 1.0))
        outcome = "left_running" if answer.dropped else http_outcome(soak, "abandon", answer, request_id)
        soak.record_http("abandon", outcome)
    walk_away(soak, s)


def walk_away(soak: Soak, s: HttpMcp) -> None:
    assert s.session_id is not None
    soak.abandoned.append(s.session_id)
    soak.http["abandoned"] += 1


def http_trouble(exc: Exception) -> Exception | None:
    """`exc` when it is HTTP trouble (also inside a nursery's exception group), else None."""
    if isinstance(exc, httpx.HTTPError | HttpTrouble | ConnectionLost | RpcError):
        return exc
    if isinstance(exc, ExceptionGroup):
        trouble, rest = exc.split((httpx.HTTPError, HttpTrouble, ConnectionLost, RpcError))
        if trouble is not None and rest is None:
            return http_trouble(trouble.exceptions[0])
    return None


async def went_on_after_trouble(soak: Soak, group: Exception, who: str) -> bool:
    """After an HTTP client's failure: recorded and paused for, True to go on; False when the
    daemon is gone; what is not HTTP trouble is raised again."""
    exc = http_trouble(group)
    if exc is None:
        raise group
    if not daemon_alive(soak):
        return False
    soak.record_http("transport", "connection_lost" if isinstance(exc, httpx.HTTPError | ConnectionLost) else "refused")
    soak.unexpected.append(f"{who}: {type(exc).__name__}: {exc}"[:300])
    await trio.sleep(0.2)
    return True


def running(soak: Soak, stop_at: float) -> bool:
    return trio.current_time() < stop_at and soak.daemon_died is None


async def http_client(soak: Soak, number: int, stop_at: float) -> None:
    """A well-behaved Streamable HTTP client: one session after another (see HTTP_SESSIONS)."""
    rng = soak.rng
    kinds, kind_weights = zip(*HTTP_SESSIONS, strict=True)
    calls = 0
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=HTTP_POOL) as http:
        while running(soak, stop_at):
            calls += 1
            tag = f"h{number}-{calls}"
            try:
                kind = rng.choices(kinds, kind_weights)[0]
                if kind == "delete_mid_call":
                    await http_delete_mid_call(soak, http, tag)
                elif kind == "abandon":
                    await http_abandon(soak, http, tag)
                else:
                    await http_session(soak, http, number, tag, stop_at)
                await trio.sleep(rng.uniform(0, 0.2))
            except Exception as group:
                if not await went_on_after_trouble(soak, group, f"http client {number}"):
                    return


# -- modern Streamable HTTP clients (MCP 2026-07-28: no session, each request on its own) ----------

MODERN_VERSION: Final = "2026-07-28"
MODERN_ACTIONS: Final = [
    *[(name, weight) for name, weight in HTTP_ACTIONS if name not in ("client_cancel", "drop_stream", "burst")],
    ("closed_stream", 6),
    ("bad_headers", 3),
    ("discover", 1),
]
# A routing header or _meta field a conforming client would not send, and what it must get.
MODERN_BAD: Final = {
    "no Mcp-Method": (400, -32020),
    "another Mcp-Name": (400, -32020),
    "another MCP-Protocol-Version": (400, -32020),
    "no clientCapabilities": (400, -32602),
    "unsupported version": (400, -32022),
    "a method modern has not": (404, -32601),
}


def modern_request(soak: Soak, request_id: str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "exai-soak-modern", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    params = dict(params or {})
    params["_meta"] = {**meta, **params.get("_meta", {})}
    return rpc(request_id, method, params)


def modern_headers(message: dict[str, Any]) -> dict[str, str]:
    headers = {
        "Accept": ACCEPT_BOTH,
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
        "MCP-Protocol-Version": MODERN_VERSION,
        "Mcp-Method": message["method"],
    }
    if message["method"] == "tools/call":
        headers["Mcp-Name"] = message["params"]["name"]
    return headers


async def modern_post(s: HttpMcp, message: dict[str, Any], headers: dict[str, str] | None = None, **kwargs: Any) -> HttpAnswer:
    answer = await s.exchange("POST", content=json.dumps(message), headers=headers or modern_headers(message), **kwargs)
    answer.modern = True
    return answer


def modern_outcome(soak: Soak, what: str, answer: HttpAnswer, request_id: str, **kwargs: Any) -> str:
    """As `http_outcome`, and a modern result must say what it is and who answered."""
    outcome = http_outcome(soak, f"modern {what}", answer, request_id, **kwargs)
    if answer.session_id is not None:
        soak.unexpected.append(f"http modern {what}: a session id was minted ({answer.describe()})")
    result = (answer.response() or {}).get("result")
    if isinstance(result, dict):
        server = (result.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo") or {}
        if result.get("resultType") != "complete" or server.get("name") != "exai":
            soak.unexpected.append(f"http modern {what}: a result without resultType or serverInfo: {json.dumps(result)[:160]}")
    return outcome


async def modern_closed_stream(soak: Soak, s: HttpMcp, tag: str) -> str:
    """Close a call's stream while it runs: that is its cancellation (the final checks see
    that nothing it started is left)."""
    behaviour = soak.rng.choice([{"hang": True}, {"latency_s": 2.0, "chunk_delay_s": 0.2, "chunks": 8}])
    request_id, message = chat_call(soak, s, tag, behaviour, stream=True)
    answer = await modern_post(s, modern_request(soak, request_id, "tools/call", message["params"]), hold_s=soak.rng.uniform(0.05, 0.6))
    if answer.status != 200:
        return modern_outcome(soak, "closed_stream", answer, request_id)
    if not answer.dropped:  # it finished before the client left
        return modern_outcome(soak, "closed_stream", answer, request_id)
    soak.http["modern_closed"] += 1
    return "closed_stream"


async def modern_bad_headers(soak: Soak, s: HttpMcp) -> str:
    what = soak.rng.choice(list(MODERN_BAD))
    message = modern_request(soak, s.next_id(), "tools/call", {"name": "version", "arguments": {}})
    headers = modern_headers(message)
    meta = message["params"]["_meta"]
    if what == "no Mcp-Method":
        del headers["Mcp-Method"]
    elif what == "another Mcp-Name":
        headers["Mcp-Name"] = "chat"
    elif what == "another MCP-Protocol-Version":
        headers["MCP-Protocol-Version"] = HTTP_VERSION
    elif what == "no clientCapabilities":
        del meta["io.modelcontextprotocol/clientCapabilities"]
    elif what == "unsupported version":
        meta["io.modelcontextprotocol/protocolVersion"] = headers["MCP-Protocol-Version"] = "1900-01-01"
    else:
        message["method"] = headers["Mcp-Method"] = "ping"
    answer = await modern_post(s, message, headers)
    status, code = MODERN_BAD[what]
    error = (answer.response() or {}).get("error") or {}
    soak.verify(
        "modern requests with bad headers or _meta get their 4xx and code",
        answer.status == status and error.get("code") == code,
        f"{what}: {answer.describe()}, expected HTTP {status} with {code}",
    )
    return f"refused_{status}"


async def modern_client(soak: Soak, number: int, stop_at: float) -> None:
    """A modern Streamable HTTP client: no initialize and no session; calls, closed streams,
    bad headers and server/discover, each request on its own."""
    rng = soak.rng
    names, weights = zip(*MODERN_ACTIONS, strict=True)
    calls = 0
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=HTTP_POOL) as http:
        s = HttpMcp(soak, http, f"m{number}")
        while running(soak, stop_at):
            calls += 1
            tag = f"m{number}-{calls}"
            action = rng.choices(names, weights)[0]
            try:
                if action == "closed_stream":
                    outcome = await modern_closed_stream(soak, s, tag)
                elif action == "bad_headers":
                    outcome = await modern_bad_headers(soak, s)
                elif action == "discover":
                    request_id = s.next_id()
                    outcome = modern_outcome(soak, action, await modern_post(s, modern_request(soak, request_id, "server/discover")), request_id)
                elif action == "other_tool":
                    request_id = s.next_id()
                    message = modern_request(soak, request_id, "tools/call", {"name": rng.choice(["version", "listmodels", "status"]), "arguments": {}})
                    outcome = modern_outcome(soak, action, await modern_post(s, message), request_id)
                else:
                    behaviour, stream, timeout = directive(action, rng)
                    request_id, message = chat_call(soak, s, tag, behaviour, stream, timeout)
                    modern_message = modern_request(soak, request_id, "tools/call", message["params"])
                    outcome = modern_outcome(soak, action, await modern_post(s, modern_message), request_id)
                soak.record_http(f"modern_{action}", outcome)
                await trio.sleep(rng.uniform(0, 0.2))
                if outcome == "overloaded":
                    await trio.sleep(rng.uniform(0.3, 1.0))
            except Exception as group:
                if not await went_on_after_trouble(soak, group, f"modern client {number}"):
                    return


# -- task clients (contract 3d) --------------------------------------------------------------

TASK_ACTIONS: Final = ["result", "cancel", "abandon", "poll_after_disconnect"]


def task_prompt(tag: str, behaviour: dict[str, Any]) -> dict[str, Any]:
    return {"name": "chat", "arguments": {"prompt": f"soak task {tag}\n#sim {json.dumps(behaviour)}"}, "task": {"ttl": 60_000}}


async def create_task(soak: Soak, client: ExaiClient, tag: str, behaviour: dict[str, Any]) -> str:
    task = (await client.request("tools/call", task_prompt(tag, behaviour)))["task"]
    soak.verify("a task is created working", task["status"] == "working", f"{tag}: {task}")
    soak.tasks["created"] += 1
    return str(task["taskId"])


async def poll_task(client: ExaiClient, task_id: str) -> dict[str, Any]:
    """tasks/get until the task is no longer working."""
    while True:
        got: dict[str, Any] = await client.request("tasks/get", {"taskId": task_id})
        if got["status"] != "working":
            return got
        await trio.sleep(min(0.2, got.get("pollInterval", 200) / 1000))


async def task_round(soak: Soak, client: ExaiClient, action: str, tag: str) -> str:
    """One legacy task (tools/call with params.task): its result fetched, cancelled while it
    hangs, abandoned (never asked about again), or polled from a new connection after the one
    that created it died."""
    rng = soak.rng
    slow = {"chunks": rng.randint(2, 6), "chunk_delay_s": rng.uniform(0.05, 0.3)}
    if action == "result":
        task_id = await create_task(soak, client, tag, slow)
        result = await client.request("tasks/result", {"taskId": task_id})
        soak.tasks["result_fetched"] += 1
        soak.tasks["completed"] += (await client.request("tasks/get", {"taskId": task_id}))["status"] == "completed"
        return "tool_error" if result.get("isError") else "ok"
    if action == "cancel":
        for attempt in range(5):  # under overload most hanging tasks fail before the cancel comes
            task_id = await create_task(soak, client, f"{tag}-{attempt}", {"hang": True})
            await trio.sleep(rng.uniform(0.05, 0.5))
            try:
                cancelled = await client.request("tasks/cancel", {"taskId": task_id})
                break
            except RpcError as exc:
                if exc.code != -32602 or "terminal status" not in exc.message:
                    raise
        else:
            return "finished_before_cancel"
        soak.verify("tasks/cancel answers cancelled", cancelled["status"] == "cancelled", f"{tag}: {cancelled}")
        soak.tasks["cancelled"] += 1
        return "cancelled"
    if action == "abandon":
        await create_task(soak, client, tag, slow)
        soak.tasks["abandoned"] += 1
        return "abandoned"
    async with connect(soak.url, token=TOKEN, era="legacy") as own:
        task_id = await create_task(soak, own, tag, slow)
        await own.close_abruptly()
    async with connect(soak.url, token=TOKEN, era="legacy") as again:
        got = await poll_task(again, task_id)
    soak.tasks["polled_after_disconnect"] += 1
    soak.tasks["completed"] += got["status"] == "completed"
    return str(got["status"])


async def task_client(soak: Soak, number: int, stop_at: float) -> None:
    calls = 0
    while running(soak, stop_at):
        try:
            async with connect(soak.url, token=TOKEN, era="legacy") as client:
                while running(soak, stop_at):
                    action = soak.rng.choice(TASK_ACTIONS)
                    calls += 1
                    try:
                        outcome = await task_round(soak, client, action, f"t{number}-{calls}")
                    except (RpcError, ConnectionLost) as exc:
                        outcome = failure(soak, f"task {action}", exc)
                    soak.record(f"task_{action}", outcome)
                    await trio.sleep(soak.rng.uniform(0, 0.3))
                    if client.closed_reason is not None:
                        soak.unexpected.append(f"task client {number} lost its connection: {client.closed_reason}")
                        break
        except (CannotConnect, ConnectionLost) as exc:
            if not daemon_alive(soak):
                return
            soak.record("connect", classify(exc))
            await trio.sleep(0.2)


def check_tasks(soak: Soak, status: dict[str, Any]) -> None:
    """No task working in /api/status without a live call: the calls of the daemon's tasks
    (connection "tasks") are at least its working tasks, in one snapshot."""
    working = len(status["tasks"]["running"])
    calls = sum(1 for call in status["requests"] if call["connection"] == "tasks")
    soak.max_seen["tasks_working"] = max(soak.max_seen["tasks_working"], working)
    soak.verify("every working task has a live call", working <= calls, f"{working} working tasks, {calls} task calls")


# -- Streamable HTTP fuzz client -------------------------------------------------------------------


@dataclass
class FuzzRequest:
    """One bad HTTP request and the statuses the contract allows for it."""

    kind: str
    allowed: frozenset[int]
    method: str = "POST"
    content: Any = None
    headers: Any = None  # None: the session's well-behaved headers
    url: str | None = None
    hold_s: float = 10.0  # a stream still open after this long is dropped (a violation, but for GET)


def http_fuzz_request(soak: Soak, s: HttpMcp, ended: list[str]) -> FuzzRequest:
    rng = soak.rng
    ping = json.dumps(rpc("fz", "ping"))
    session_id = s.session_id or ""
    base = soak.http_url.removesuffix("/mcp")
    method = rng.choice(["POST", "GET", "DELETE"])

    def body_fuzz() -> FuzzRequest:
        kind, frame = fuzz_frame(rng, soak.args.avoid_known_crashers)
        return FuzzRequest(f"body_{kind}", frozenset({413} if kind == "oversized" else {200, 202, 400}), content=frame)

    async def chunks(size: int) -> AsyncIterator[bytes]:
        for _ in range(0, size, 8192):
            yield b" " * 8192

    choices: list[Callable[[], FuzzRequest]] = [
        body_fuzz,
        body_fuzz,
        body_fuzz,
        lambda: FuzzRequest("empty_body", frozenset({400}), content=b""),
        lambda: FuzzRequest(
            "batch", frozenset({400}), content=json.dumps([rpc(i, rng.choice(["ping", "tools/list"])) for i in range(rng.randint(1, 4))])
        ),
        lambda: FuzzRequest("no_session_id", frozenset({400}), method, ping, s.headers(Mcp_Session_Id=None)),
        lambda: FuzzRequest(
            "unknown_session_id",
            frozenset({404}),
            method,
            ping,
            s.headers(Mcp_Session_Id=rng.choice([secrets.token_urlsafe(24), "", "x" * 2000, "null", session_id[:-1], b"\xff\xfe\x80"])),
        ),
        lambda: FuzzRequest("ended_session_id", frozenset({404}), method, ping, s.headers(Mcp_Session_Id=rng.choice(ended or [""]))),
        lambda: FuzzRequest(
            "two_session_ids", frozenset({404}), "POST", ping, [*s.headers().items(), ("Mcp-Session-Id", session_id)]
        ),
        lambda: FuzzRequest(
            "bad_protocol_version",
            frozenset({400}),
            "POST",
            ping,
            s.headers(MCP_Protocol_Version=rng.choice(["2024-11-05", "banana", "", "2025-11-25x", "2025-11-25, 2025-06-18", b"\xe9"])),
        ),
        lambda: FuzzRequest(
            "foreign_origin",
            frozenset({403}),
            method,
            ping,
            s.headers(Origin=rng.choice(["http://evil.example", "http://127.0.0.1:1", "null", "https://" + base.removeprefix("http://"), "", b"http://\xff"])),
        ),
        lambda: FuzzRequest(
            "bad_auth",
            frozenset({401}),
            method,
            ping,
            s.headers(Authorization=rng.choice([None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", TOKEN, f"Bearer {TOKEN}x", b"Bearer \xff\xfe"])),
        ),
        lambda: FuzzRequest("wrong_method", frozenset({405}), rng.choice(["PUT", "PATCH", "OPTIONS"]), ping),
        lambda: FuzzRequest(
            "wrong_content_type",
            frozenset({415}),
            "POST",
            ping,
            s.headers(Content_Type=rng.choice(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/jsonx", ""])),
        ),
        lambda: FuzzRequest("wrong_accept", frozenset({406}), "POST", ping, s.headers(Accept=rng.choice(["text/html", "image/png", "application/xml"]))),
        lambda: FuzzRequest("get_wrong_accept", frozenset({406}), "GET", None, s.headers(Accept="application/json")),
        lambda: FuzzRequest("huge_body", frozenset({413}), "POST", b" " * rng.randint(65537, 200_000)),
        lambda: FuzzRequest("huge_chunked_body", frozenset({413}), "POST", chunks(rng.randint(65537, 200_000))),
        lambda: FuzzRequest(
            "bad_last_event_id",
            frozenset({400}),
            "GET",
            None,
            s.headers(Last_Event_ID=rng.choice(["1000000-1", "abc", "", "1-", "-1", "9" * 40 + "-1", "1000000-x", b"\xb2-1", b"1-\xb3", b"\xb9"])),
        ),
        lambda: FuzzRequest("wrong_path", frozenset({404}), method, ping, url=base + rng.choice(["/", "/other", "/mcp/x", "/MCP", "/mcpx"])),
        lambda: FuzzRequest("get_stream", frozenset({200}), "GET", None, hold_s=rng.uniform(0.1, 0.4)),
        lambda: FuzzRequest("initialize_again", frozenset({200}), "POST", json.dumps(rpc("again", "initialize", {"protocolVersion": HTTP_VERSION}))),
        lambda: FuzzRequest(
            "bad_initialize",
            frozenset({200, 400}),
            "POST",
            json.dumps(rpc("init", "initialize", rng.choice([{"protocolVersion": 5}, {"protocolVersion": []}]))),
            s.headers(Mcp_Session_Id=None),
        ),
        lambda: FuzzRequest(
            "cancel_unknown",
            frozenset({202}),
            "POST",
            json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "nope"}}),
        ),
        lambda: FuzzRequest("client_response", frozenset({202}), "POST", json.dumps({"jsonrpc": "2.0", "id": 5, "result": {}})),
    ]
    request = rng.choice(choices)()
    return body_fuzz() if request.kind == "ended_session_id" and not ended else request


def note_http_fuzz(soak: Soak, request: FuzzRequest, answer: HttpAnswer) -> None:
    """Count an answer to a bad request; anything but the contract's status and body is noted."""
    soak.http_fuzz_answers[str(answer.status)] += 1
    what = f"http fuzz {request.kind} ({request.method})"
    if answer.status >= 500:
        soak.check("HTTP fuzz: never a 5xx").fail(f"{what}: {answer.describe()}")
    elif answer.status not in request.allowed:
        soak.unexpected.append(f"{what}: {answer.describe()}, expected HTTP {sorted(request.allowed)}")
    if answer.text:
        soak.unexpected.append(f"{what}: a body that is not JSON: {answer.text[:160]}")
    if answer.status >= 400 and not (answer.messages and isinstance(answer.messages[0], dict) and "error" in answer.messages[0]):
        soak.unexpected.append(f"{what}: HTTP {answer.status} without a JSON-RPC error body: {answer.describe()}")
    if answer.dropped and request.kind != "get_stream":
        soak.unexpected.append(f"{what}: its stream still open after {request.hold_s:g} s")
    for message in answer.messages:
        error = message.get("error") if isinstance(message, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            soak.http_fuzz_answers[f"code {code}"] += 1
            if code == INTERNAL_ERROR:
                soak.internal_errors.append(f"{what}: {json.dumps(message)[:200]}")
            elif code not in CONTRACT_CODES:
                soak.unexpected.append(f"{what}: error code outside the contract: {json.dumps(message)[:200]}")


async def http_fuzz_client(soak: Soak, number: int, stop_at: float) -> None:
    """Bad HTTP requests on and around a live session; after each, the session must still work."""
    rng = soak.rng
    key = 1000 + number  # its last inputs, beside the WebSocket fuzz clients'
    ended: deque[str] = deque(maxlen=8)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=HTTP_POOL) as http:
        while running(soak, stop_at):
            s = HttpMcp(soak, http, f"f{number}")
            try:
                await s.open()
                for _ in range(rng.randint(5, 40)):
                    if not running(soak, stop_at):
                        break
                    request = http_fuzz_request(soak, s, list(ended))
                    soak.http_fuzz[request.kind] += 1
                    soak.note_input(key, f"http {request.kind} {request.method} {str(request.content)[:40]!r}")
                    await trio.sleep(rng.uniform(0, 0.05))
                    try:
                        answer = await s.exchange(
                            request.method, content=request.content, headers=request.headers, url=request.url, hold_s=request.hold_s
                        )
                    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
                        if not request.kind.startswith("huge"):
                            raise
                        soak.http_fuzz_answers["closed while sending"] += 1  # refused before the body was read
                        continue
                    note_http_fuzz(soak, request, answer)
                    if answer.session_id is not None and request.kind == "bad_initialize":
                        soak.unexpected.append(f"http fuzz bad_initialize made a session: {answer.describe()}")
                    pong = await s.send(rpc(s.next_id(), "ping"))
                    if pong.status != 200 or (pong.response() or {}).get("result") != {}:
                        soak.unexpected.append(f"http fuzz: the session broken after {request.kind}: {pong.describe()}")
                        break
                await s.end()
                assert s.session_id is not None
                ended.append(s.session_id)
            except Exception as group:
                exc = http_trouble(group)
                if exc is None:
                    raise
                if not daemon_alive(soak):
                    return
                soak.unexpected.append(
                    f"http fuzz client {number}: {type(exc).__name__}: {exc} after {list(soak.last_inputs.get(key, []))[-1:]}"[:300]
                )
                await trio.sleep(0.2)


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
    check_tasks(soak, status)
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


def quiet_s(soak: Soak) -> float:
    """How long the final check waits: a second, or past the idle timeout of the HTTP
    sessions walked away from last."""
    return max(QUIET_S, HTTP_IDLE_S + 1) if soak.args.http_clients else QUIET_S


async def final_checks(soak: Soak) -> dict[str, Any]:
    """After the quiet wait: everything at rest, the HTTP sessions walked away from ended by
    their idle timeout. Watches a failing state a little longer, to say in the report whether
    it was slow or stuck."""
    assert soak.daemon is not None
    await trio.sleep(quiet_s(soak))
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
        soak.verify(f"at rest after {quiet_s(soak):g} s quiet", not problems, "; ".join(problems) + suffix)
        tasks = status["tasks"]
        soak.verify("no task working at rest", not tasks.get("working") and not tasks["running"], f"{tasks.get('working')} working: {tasks['running'][:3]}")
        await abandoned_checks(soak, http)
        await clink_checks(soak)
        metrics_text = (await http.get(soak.monitor_url + "/metrics", headers=soak.headers)).text
    return {"status": status, "sim": sim, "metrics": metrics_text}


async def abandoned_checks(soak: Soak, http: httpx.AsyncClient) -> None:
    """Each HTTP session walked away from is gone (404), though no DELETE ended it. Asked only
    now: a request to a session that still lives would keep it alive."""
    alive = []
    for session_id in soak.abandoned:
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": ACCEPT_BOTH, "Content-Type": "application/json", "Mcp-Session-Id": session_id}
        response = await http.post(soak.http_url, content=json.dumps(rpc("gone?", "ping")), headers=headers)
        if response.status_code == 404:
            soak.http["idle_ended"] += 1
        else:
            alive.append(f"HTTP {response.status_code}")
    soak.verify(
        "HTTP sessions walked away from ended by the idle timeout",
        not alive,
        f"{len(alive)} of {len(soak.abandoned)} still answer {quiet_s(soak):g} s after the end: {alive[:3]}",
    )


async def clink_checks(soak: Soak) -> None:
    """Every sleepy CLI clink started, and its child, is gone: cancelled or abandoned, the
    call took the whole process group with it."""
    pids = []
    for name in os.listdir(soak.clink_pids):
        if not name.endswith(".tmp"):
            with open(os.path.join(soak.clink_pids, name)) as written:  # noqa: ASYNC230 - a few bytes on a local disk
                pids += [int(word) for word in written.read().split()]
    with trio.move_on_after(5):
        while not all(gone(pid) for pid in pids):  # noqa: ASYNC110 - other processes' state
            await trio.sleep(0.05)
    left = [pid for pid in pids if not gone(pid)]
    soak.clink["runs"], soak.clink["left"] = len(pids) // 2, len(left)
    soak.verify("clink CLIs and their children gone with their calls", not left, f"{len(left)} of {len(pids)} processes still run: {left[:4]}")


def rest_problems(status: dict[str, Any], sim: dict[str, Any]) -> list[str]:
    """The leak invariant the tests use (harness.status_leaks), the simulator's side included."""
    return status_leaks(status, simulator_inflight=sim["inflight"])


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
    soak.repo, soak.clink_pids = os.path.join(workdir, "repo"), os.path.join(workdir, "clink-pids")
    os.mkdir(soak.clink_pids)
    await trio.run_process(["git", "init", "-q", soak.repo], env={**env, "GIT_CONFIG_GLOBAL": os.devnull})
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
            EXAI_CLINK_CLIS=",".join(
                f"{name}={shlex.join([sys.executable, FAKE_CLI, *mode])}" for name, mode in (("echo", ["echo"]), ("sleepy", ["sleep", soak.clink_pids]))
            ),
        )
        soak.daemon = await trio.lowlevel.open_process(
            [*EXAI, "serve"], stdout=subprocess.PIPE, stderr=log, env=env, cwd=workdir
        )
        assert soak.daemon.stdout is not None
        seen = bytearray()
        with trio.fail_after(30):
            soak.url = (await read_until(soak.daemon.stdout, rb"exai listening on (\S+)", seen)).group(1).decode()
            soak.monitor_url = (await read_until(soak.daemon.stdout, rb"exai monitor on (\S+)", seen)).group(1).decode()
            soak.http_url = (await read_until(soak.daemon.stdout, rb"exai http on (\S+)", seen)).group(1).decode()
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
                for number in range(args.http_clients):
                    clients.start_soon(guarded, soak, http_client, number, stop_at)
                for number in range(args.http_fuzz_clients):
                    clients.start_soon(guarded, soak, http_fuzz_client, number, stop_at)
                for number in range(args.modern_clients):
                    clients.start_soon(guarded, soak, modern_client, number, stop_at)
                for number in range(args.task_clients):
                    clients.start_soon(guarded, soak, task_client, number, stop_at)
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
    for key, pattern in (
        ("log_opened", r"http session h\d+ open$"),
        ("log_deleted", r"http session h\d+ ended by the client \(DELETE\)"),
        ("log_idle", r"http session h\d+ idle for "),
        ("log_deleted_busy", r"http session h\d+ ended by the client \(DELETE\); cancelling [1-9]"),
    ):
        soak.http[key] = len(re.findall(pattern, text, re.MULTILINE))
    if soak.args.http_clients and soak.daemon_died is None:
        soak.verify(
            "the daemon's log: an idle end for each HTTP session walked away from",
            soak.http["log_idle"] >= len(soak.abandoned),
            f"{soak.http['log_idle']} idle ends logged, {len(soak.abandoned)} sessions walked away from",
        )


def report(soak: Soak, final: dict[str, Any], took: float) -> bool:
    args = soak.args
    print(f"exai soak: {args.duration:g} s, {args.clients} clients + {args.fuzz_clients} fuzzers, "
          f"{args.http_clients} HTTP clients + {args.http_fuzz_clients} HTTP fuzzers + {args.modern_clients} modern, seed {args.seed}"
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
    http = soak.http
    print(
        f"http sessions: opened {http['opened']}, ended by DELETE {http['deleted']}, walked away from {http['abandoned']}, "
        f"of which ended by idle {http['idle_ended']}; daemon log: {http['log_opened']} opened, "
        f"{http['log_deleted']} ended by DELETE ({http['log_deleted_busy']} with calls running), {http['log_idle']} by idle"
    )
    http_total = sum(soak.http_outcomes.values())
    print(f"http calls by outcome ({http_total}): " + ", ".join(f"{k} {v}" for k, v in soak.http_outcomes.most_common()))
    for action, counts in sorted(soak.http_by_action.items()):
        print(f"  {action:<15} " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    print(
        f"http reconnects with Last-Event-ID: {http['reconnects']}; dropped streams that got their result "
        f"{http['reconnect_result']}, of calls dropped while running that finished {http['reconnect_ran']}"
    )
    modern_calls = sum(sum(c.values()) for a, c in soak.http_by_action.items() if a.startswith("modern_"))
    print(f"modern http requests: {modern_calls}; streams closed mid-call {http['modern_closed']}")
    print(
        f"http fuzz requests ({sum(soak.http_fuzz.values())}, {len(soak.http_fuzz)} kinds): answers "
        + ", ".join(f"{k} {v}" for k, v in sorted(soak.http_fuzz_answers.items()))
    )
    print(f"clink: {soak.clink['runs']} runs of the CLI that never answers, cancelled or abandoned; {soak.clink['left']} processes left")
    print("tasks (legacy, WebSocket): " + ", ".join(f"{name} {count}" for name, count in sorted(soak.tasks.items())))
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
    contract = {
        "ok", "tool_error", "timed_out", "overloaded", "cancelled_by_client", "ended_by_delete", "refused_after_delete",
        "left_running", "closed_stream", "refused_400", "refused_404",
    }
    odd_http = {k: v for k, v in soak.http_outcomes.items() if k not in contract}
    soak.verify("well-behaved HTTP calls get contract answers", not odd_http or soak.daemon_died is not None, str(odd_http))
    print("invariants:")
    ok = True
    for check in soak.checks.values():
        ok = ok and check.ok
        mark = "pass" if check.ok else f"FAIL x{check.failures}"
        print(f"  [{mark}] {check.name}{': ' + check.detail if check.detail else ''}")
    print("RESULT: " + ("pass" if ok else "FAIL"))
    return ok


def summary(soak: Soak, ok: bool, took: float) -> dict[str, Any]:
    """What the report prints, as numbers (`--json`): what tests assert on, not the prose."""
    return {
        "result": "pass" if ok else "FAIL",
        "took_s": round(took, 1),
        "seed": soak.args.seed,
        "samples": soak.samples,
        "checks": {c.name: {"ok": c.ok, "failures": c.failures, "detail": c.detail} for c in soak.checks.values()},
        "ws": {"outcomes": dict(soak.outcomes), "by_action": {k: dict(v) for k, v in soak.by_action.items()},
               "fuzz_frames": sum(soak.fuzz.values()), "fuzz_answers": dict(soak.fuzz_codes)},
        "http": {"sessions": dict(soak.http), "outcomes": dict(soak.http_outcomes),
                 "by_action": {k: dict(v) for k, v in soak.http_by_action.items()},
                 "fuzz_requests": sum(soak.http_fuzz.values()), "fuzz_kinds": len(soak.http_fuzz),
                 "fuzz_answers": dict(soak.http_fuzz_answers)},
        "rss_kib": dict(soak.rss),
        "clink": dict(soak.clink),
        "tasks": dict(soak.tasks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--clients", type=int, default=16, help="well-behaved clients (default 16)")
    parser.add_argument("--fuzz-clients", type=int, default=3, help="clients sending bad input (default 3)")
    parser.add_argument("--http-clients", type=int, default=6, help="well-behaved Streamable HTTP clients (default 6)")
    parser.add_argument("--http-fuzz-clients", type=int, default=1, help="HTTP clients sending bad requests (default 1)")
    parser.add_argument("--modern-clients", type=int, default=3, help="modern (2026-07-28) HTTP clients (default 3)")
    parser.add_argument("--task-clients", type=int, default=2, help="legacy task clients over WebSocket (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the time)")
    parser.add_argument(
        "--avoid-known-crashers",
        action="store_true",
        help="leave out the inputs known to kill today's daemon: the four of issue 6 "
        "(deep nesting, unhashable requestId, half handshake, non-ASCII bearer) and a lone surrogate in an id",
    )
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the report's numbers to PATH as JSON")
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
    took = time.monotonic() - started
    ok = report(soak, final, took)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary(soak, ok, took), out, indent=1, sort_keys=True)
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept for inspection: {workdir} (daemon.log, sim.log)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
