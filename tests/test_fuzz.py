"""Property tests (hypothesis) at the edge that takes input from clients.

At the protocol layer: arbitrary text and JSON for every message shape, every method's
params, every tool's arguments; only the contract's errors come out. Over a live connection:
ONE daemon and ONE connection take every example (hypothesis runs in a worker thread and
hands each frame to the trio loop), and after each frame a ping proves the connection still
serves. Property: every frame is answered by valid JSON-RPC with a contract code (a request
with our id exactly once; a notification never), no -32603, the daemon stays up, and the
`daemons` fixture's invariant check holds afterwards.

Examples per test: FUZZ_EXAMPLES (default 800: three live tests give 2,400 frames).
The long run: `FUZZ_EXAMPLES=100000 python -m pytest tests/test_fuzz.py`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import WebSocketConnection

from exai.client import connect, open_websocket
from exai.protocol import (
    INVALID_PARAMS,
    MAX_DEPTH,
    BadMessage,
    Notification,
    Request,
    Response,
    RpcError,
    parse_cancelled,
    parse_initialize,
    parse_message,
    parse_tool_call,
)
from exai.tools import all_tools
from exai.tools.base import ToolArgumentError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "800"))
CONTRACT_CODES = {-32700, -32600, -32601, -32602, -32000, -32001}
ANSWER_WAIT_S = 10.0

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
QUICK = settings(max_examples=max(200, EXAMPLES // 4), deadline=None, database=None)

# -- strategies ------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.floats()  # NaN and Infinity are written as such by json.dumps: not JSON for us
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
huge_strings = st.integers(min_value=10_000, max_value=200_000).map(lambda n: "x" * n)
huge_numbers = st.integers(min_value=10**19, max_value=10**400) | st.sampled_from([1e308, -1e308, 5e-324])

METHODS = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "resources/list",
    "",
]
TOOLS = all_tools()


def tool_arguments(name: str) -> st.SearchStrategy[Any]:
    fields = sorted(TOOLS[name].input_schema().get("properties", {})) or ["x"]
    plausible = st.dictionaries(
        st.sampled_from(fields) | st.text(max_size=8),
        json_values | st.text(min_size=1, max_size=30) | st.floats(0, 2) | st.lists(st.text(max_size=20), max_size=3),
        max_size=5,
    )
    return plausible | json_values


call_params = st.sampled_from(sorted(TOOLS)).flatmap(
    lambda name: st.fixed_dictionaries(
        {},
        optional={
            "name": st.just(name) | json_values,
            "arguments": tool_arguments(name),
            "_meta": st.fixed_dictionaries(
                {},
                optional={
                    "progressToken": json_values,
                    "exai/timeout": st.floats(min_value=0.001, max_value=5) | json_values | huge_numbers,
                    "other": json_values,
                },
            )
            | json_values,
            "unknown": json_values,
        },
    )
)
method_params = {
    "initialize": st.fixed_dictionaries(
        {},
        optional={
            "protocolVersion": st.sampled_from(["2025-11-25", "2025-03-26", "1999-01-01"]) | json_values,
            "capabilities": json_values,
            "clientInfo": json_values,
        },
    ),
    "notifications/cancelled": st.fixed_dictionaries(
        {}, optional={"requestId": json_values, "reason": json_values | huge_strings}
    ),
    "tools/call": call_params,
}


def params_for(method: str) -> st.SearchStrategy[Any]:
    return method_params.get(method, st.dictionaries(st.text(max_size=10), json_values, max_size=3)) | json_values


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """A message of the right shape with wrong types in any field, and unknown fields."""
    method = draw(st.sampled_from(METHODS) | json_values)
    message: dict[str, Any] = {"jsonrpc": draw(st.just("2.0") | json_values)}
    if draw(st.booleans()):
        message["method"] = method
    if draw(st.booleans()):
        message["params"] = draw(params_for(method if isinstance(method, str) else ""))
    choice = draw(st.sampled_from(["ours", "ours", "none", "fuzzed"]))
    if choice == "ours":
        message["id"] = "ours"  # replaced by a fresh integer when sent
    elif choice == "fuzzed":
        message["id"] = draw(json_values | huge_numbers)
    for key in draw(st.lists(st.text(max_size=8), max_size=2)):
        message.setdefault(key, draw(json_values))
    return message


def nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"jsonrpc":"2.0","id":1,"method":"ping","params":' + '{"a":' * depth + "1" + "}" * depth + "}"


frames = (
    st.text(max_size=200)
    | st.binary(max_size=200)
    | json_values.map(json.dumps)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(nested, st.integers(1, 3000), st.sampled_from(["array", "object"]))
    | huge_numbers.map(lambda n: f'{{"jsonrpc":"2.0","id":{json.dumps(n)},"method":"ping"}}')
    | huge_strings.map(lambda s: json.dumps({"jsonrpc": "2.0", "id": 1, "method": s}))
    | st.sampled_from(["NaN", "Infinity", "-Infinity", '"\\ud800"', '{"a":"\\udc00"}', "1e999", "\ufeff{}"])
)


# -- the protocol layer ------------------------------------------------------------------


@QUICK
@given(st.text() | st.binary() | json_values.map(json.dumps) | messages().map(json.dumps))
def test_parse_message_gives_a_message_or_a_contract_error(frame: str | bytes) -> None:
    try:
        message = parse_message(frame)
    except BadMessage as bad:
        assert bad.code in CONTRACT_CODES
        assert bad.id is None or (isinstance(bad.id, str | int) and not isinstance(bad.id, bool))
        return
    assert isinstance(message, Request | Notification | Response)
    if isinstance(message, Request):
        assert isinstance(message.id, str | int) and not isinstance(message.id, bool)
        assert isinstance(message.method, str) and isinstance(message.params, dict)


@QUICK
@given(st.integers(1, 2000))
def test_depth_is_checked_without_recursion(depth: int) -> None:
    for kind in ("array", "object"):
        frame = nested(depth, kind)
        try:
            parse_message(frame)
        except BadMessage as bad:
            assert bad.code in (-32700, -32600)
            assert kind == "array" or depth + 1 > MAX_DEPTH
        else:  # the message object is level 1, the params nest `depth` more
            assert kind == "object" and depth + 1 <= MAX_DEPTH


@QUICK
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=5) | call_params)
def test_method_params_are_checked_field_by_field(params: dict[str, Any]) -> None:
    for check in (parse_tool_call, parse_cancelled, parse_initialize):
        try:
            check(params)
        except RpcError as exc:
            assert exc.code == INVALID_PARAMS
            assert '"' in exc.message  # names the field


@QUICK
@given(call_params)
def test_a_valid_tool_call_has_checked_fields(params: dict[str, Any]) -> None:
    try:
        call = parse_tool_call(params)
    except RpcError:
        return
    assert isinstance(call.name, str) and call.name and isinstance(call.arguments, dict)
    assert call.timeout is None or (math.isfinite(call.timeout) and call.timeout > 0)
    token = call.progress_token
    assert token is None or (isinstance(token, str | int) and not isinstance(token, bool))


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_tool_takes_any_arguments_without_surprise(name: str) -> None:
    tool = TOOLS[name]

    @QUICK
    @given(tool_arguments(name).filter(lambda a: isinstance(a, dict)))
    def check(arguments: dict[str, Any]) -> None:
        try:
            tool.parse(arguments)
        except ToolArgumentError as exc:
            assert str(exc).startswith(f"Invalid arguments for {name}: ")

    check()


# -- over a live connection ---------------------------------------------------------------


class Wire:
    """One live connection fed by hypothesis from a worker thread; checks every answer."""

    def __init__(self, ws: WebSocketConnection):
        self.ws = ws
        self.ids = itertools.count(1)
        self.owed: dict[int, str] = {}  # our request ids still owed an answer: their frame
        self.answered: set[Any] = set()
        self.problems: list[str] = []
        self.sentinels: dict[str, trio.Event] = {}
        self.frames = 0
        self.changed = trio.Event()

    async def read(self) -> None:
        async for text in _messages(self.ws):
            self.check(text)
            self.changed.set()
            self.changed = trio.Event()

    def check(self, text: str | bytes) -> None:
        if not isinstance(text, str):
            self.problems.append(f"a binary frame came back: {text[:100]!r}")
            return
        message = json.loads(text)
        if message.get("method") == "notifications/progress":
            return
        if not (message.get("jsonrpc") == "2.0" and "id" in message and ("result" in message) != ("error" in message)):
            self.problems.append(f"not a JSON-RPC response: {text[:300]}")
            return
        answer_id = message["id"]
        if isinstance(answer_id, str) and answer_id in self.sentinels:
            self.sentinels.pop(answer_id).set()
            return
        if "error" in message:
            error = message["error"]
            if error.get("code") not in CONTRACT_CODES or not isinstance(error.get("message"), str):
                self.problems.append(f"not a contract error: {text[:300]}")
        if isinstance(answer_id, int) and answer_id in self.owed:
            del self.owed[answer_id]
            self.answered.add(answer_id)
        elif isinstance(answer_id, int) and answer_id in self.answered:
            self.problems.append(f"answered twice: {text[:300]}")

    async def exchange(self, frame: str | bytes) -> None:
        """Send one frame, then a ping; raise if anything answered so far broke the contract."""
        self.frames += 1
        await self.ws.send_message(frame)
        sentinel = f"sentinel-{next(self.ids)}"
        done = self.sentinels[sentinel] = trio.Event()
        await self.ws.send_message(json.dumps({"jsonrpc": "2.0", "id": sentinel, "method": "ping"}))
        with trio.fail_after(ANSWER_WAIT_S):
            await done.wait()
        problems, self.problems = self.problems, []
        assert not problems, problems

    def prepare(self, message: dict[str, Any]) -> str:
        """Our fresh id where the message says "ours": it is owed exactly one answer, unless
        the message is shaped as a response (ignored), or a later cancel names it."""
        if message.get("id") == "ours":
            message["id"] = request_id = 10**9 + next(self.ids)
            response_shaped = message.get("method") is None and ("result" in message or "error" in message)
            if is_json(json.dumps(message)) and not response_shaped:  # else -32700 with id null
                self.owed[request_id] = json.dumps(message)[:300]
        params = message.get("params")
        if message.get("method") == "notifications/cancelled" and isinstance(params, dict):
            cancelled = params.get("requestId")
            if isinstance(cancelled, int):
                self.owed.pop(cancelled, None)
        return json.dumps(message)

    async def settle(self) -> None:
        with trio.move_on_after(ANSWER_WAIT_S):
            while self.owed:
                await self.changed.wait()
        assert not self.owed, f"never answered: {self.owed}"
        assert not self.problems, self.problems


def is_json(text: str) -> bool:
    """Strict JSON: no NaN or Infinity, no number beyond a double, no lone surrogate."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


async def _messages(ws: WebSocketConnection) -> Any:
    from trio_websocket import ConnectionClosed

    try:
        while True:
            yield await ws.get_message()
    except ConnectionClosed:
        return


async def fuzz_live(daemon: Any, strategy: st.SearchStrategy[Any], send: Any) -> int:
    """Run `strategy` over one live connection; return the number of frames sent."""
    async with open_websocket(daemon.url) as ws, trio.open_nursery() as nursery:
        wire = Wire(ws)
        nursery.start_soon(wire.read)
        await wire.exchange(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}))
        token = trio.lowlevel.current_trio_token()

        @FUZZ
        @given(strategy)
        def run(example: Any) -> None:
            trio.from_thread.run(send, wire, example, trio_token=token)

        await trio.to_thread.run_sync(run)
        await wire.settle()
        frames = wire.frames
        nursery.cancel_scope.cancel()
    async with connect(daemon.url) as client:  # the daemon is still up
        await client.ping()
    assert len(daemon.daemon.connections) <= 1
    return frames


async def test_live_arbitrary_frames(daemon: Any) -> None:
    async def send(wire: Wire, frame: str | bytes) -> None:
        await wire.exchange(frame)

    assert await fuzz_live(daemon, frames, send) >= EXAMPLES


async def test_live_messages_with_wrong_types_in_every_field(daemon: Any) -> None:
    async def send(wire: Wire, message: dict[str, Any]) -> None:
        await wire.exchange(wire.prepare(message))

    assert await fuzz_live(daemon, messages(), send) >= EXAMPLES


async def test_live_tool_calls_with_arbitrary_arguments(daemon: Any) -> None:
    async def send(wire: Wire, params: dict[str, Any]) -> None:
        message = {"jsonrpc": "2.0", "id": "ours", "method": "tools/call", "params": params}
        await wire.exchange(wire.prepare(message))

    assert await fuzz_live(daemon, call_params, send) >= EXAMPLES


# -- the tools that run processes (precommit's git, clink's CLI), with arguments that reach them ---

NEW_TOOLS = ("precommit", "secaudit", "refactor", "testgen", "docgen", "tracer", "challenge", "clink")
FAKE_CLI = str(Path(__file__).with_name("fake_cli.py"))
REFS = st.sampled_from(
    ["HEAD", "HEAD~1", "main", "-p", "--output=PWNED", "--end-of-options", "HEAD\n--cached", "a\x00b", "@{-1}", ":/x", "HEAD^{tree}", "..", "x" * 300, ""]
)


def reaching_calls(repo: Path, pwned: Path) -> st.SearchStrategy[dict[str, Any]]:
    """tools/call params for the new tools: their step fields mostly valid, so that the calls get
    past the schema to git, the CLI and the model, with hostile values where they matter."""
    text = st.text(max_size=30)
    paths = st.sampled_from([str(repo)] * 8 + [str(repo / "app.py"), str(repo.parent), "/", "/proc/self", "repo", "", f"{repo}\x00"])
    paths = st.one_of(paths, paths, text)
    refs = st.one_of(REFS.map(lambda ref: ref.replace("PWNED", str(pwned))), text)
    own: dict[str, dict[str, st.SearchStrategy[Any]]] = {
        "precommit": {"compare_to": refs, "include_staged": st.booleans() | json_values, "include_unstaged": st.booleans()},
        "secaudit": {"audit_focus": st.sampled_from(["owasp", "dependencies", "all"]) | text, "threat_level": st.sampled_from(["low", "critical", "x"])},
        "refactor": {"refactor_type": st.sampled_from(["decompose", "modernize", "rewrite"]) | json_values},
        "testgen": {},
        "docgen": {},
        "tracer": {"trace_mode": st.sampled_from(["precision", "dependencies", "ask"]) | json_values, "target_description": text},
    }
    steps = {
        "step": st.just("look at it") | text,
        "step_number": st.integers(1, 4) | st.just(0),
        "total_steps": st.integers(1, 4),
        "next_step_required": st.booleans(),
        "findings": st.just("seen") | text,
    }
    optional_steps = {
        "relevant_files": st.lists(paths, max_size=2),
        "use_assistant_model": st.booleans(),
        "confidence": st.sampled_from(["low", "certain", "sure"]),
        "auto_steps": st.integers(-1, 2),
        "continuation_id": text,
        "unknown": json_values,
    }

    def arguments(name: str) -> st.SearchStrategy[Any]:
        if name == "challenge":
            return st.fixed_dictionaries({"prompt": text | huge_strings}, optional={"x": json_values})
        if name == "clink":
            return st.fixed_dictionaries(
                {"prompt": st.just("hello") | text, "cli_name": st.sampled_from(["fake"] * 4 + ["FAKE", ""]) | text},
                optional={"role": st.sampled_from(["planner", "boss"]) | json_values, "files": st.lists(paths, max_size=2), "continuation_id": text},
            )
        reaching = st.fixed_dictionaries(steps, optional={**optional_steps, **own[name]})
        if name == "precommit":
            reaching = st.fixed_dictionaries({**steps, "path": paths}, optional={**optional_steps, **own[name]})
        return st.one_of(reaching, reaching, reaching, tool_arguments(name))

    return st.sampled_from(NEW_TOOLS).flatmap(lambda name: st.fixed_dictionaries({"name": st.just(name), "arguments": arguments(name)}))


async def test_live_new_tool_calls_reach_git_and_the_cli_safely(daemons: Any, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    (repo / "app.py").write_text("print('first')\n")
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *command], cwd=repo, check=True, env=env, capture_output=True)  # noqa: ASYNC221
    (repo / "app.py").write_text("print('edited')\n")
    pwned = tmp_path / "pwned"
    bound = await daemons.start(clink_clis={"fake": (sys.executable, FAKE_CLI, "echo")})

    async def send(wire: Wire, params: dict[str, Any]) -> None:
        message = {"jsonrpc": "2.0", "id": "ours", "method": "tools/call", "params": params}
        await wire.exchange(wire.prepare(message))

    assert await fuzz_live(bound, reaching_calls(repo, pwned), send) >= EXAMPLES
    assert not pwned.exists()  # no client value was ever taken for a git option
