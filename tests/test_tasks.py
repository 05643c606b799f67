"""Tasks (contract 3d): calls whose work the daemon owns, polled for their result.

Over real loopback sockets (WebSocket and Streamable HTTP) on the simulator over real HTTP,
real time with short generous bounds; restarts run `exai serve` as a subprocess on one store
(SIGTERM after the grace, SIGKILL). The runner's rules about time (TTL, expiry, deadline,
leases) run in-process on `autojump_clock` at the end.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from click.testing import CliRunner
from support import EXAI, eventually, serve_process

from exai import legacytasks
from exai.cli import main
from exai.client import ExaiClient, RpcError, connect
from exai.config import Settings
from exai.lifecycle import Calls, Services
from exai.limits import Limits
from exai.protocol import RpcError as ProtocolRpcError
from exai.protocol import ToolCall
from exai.store import TaskRecord, TaskStatus, open_store
from exai.tasks import (
    EXPIRE_EVERY_S,
    LOST_AT_START,
    STOPPED_AT_SHUTDOWN,
    TaskRunner,
    open_task_runner,
)
from exai.tools.base import Tool, ToolArgs, ToolContext, ToolOutput

HANG = '#sim {"hang": true}'
# These tests speak legacy 2025-11-25 tasks; the modern extension's are in test_tasks_modern.py.
connect_legacy = partial(connect, era="legacy")


def sim_prompt(text: str, **behaviour: Any) -> str:
    return f"{text}\n#sim {json.dumps(behaviour)}"


async def create_task(client: ExaiClient, prompt: str, **task: Any) -> dict[str, Any]:
    result = await client.request("tools/call", {"name": "chat", "arguments": {"prompt": prompt}, "task": task})
    assert set(result) == {"task"}, result
    return dict(result["task"])


async def next_status(client: ExaiClient, task_id: str) -> dict[str, Any]:
    """The next notifications/tasks/status of that task (other messages are skipped)."""
    while True:
        message = await client.receive_raw()
        if message.get("method") == "notifications/tasks/status" and message["params"]["taskId"] == task_id:
            return dict(message["params"])


async def rpc_error(client: ExaiClient, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as raised:
        await client.request(method, params)
    return raised.value


# -- legacy 2025-11-25 over WebSocket ------------------------------------------------------


async def test_initialize_and_tools_list_offer_tasks(daemon: Any) -> None:
    async with connect_legacy(daemon.url) as client:
        assert client.capabilities["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        tools = await client.list_tools()
        assert tools and all(tool["execution"] == {"taskSupport": "optional"} for tool in tools)


async def test_a_task_answers_at_once_and_its_result_is_the_call_s(daemon: Any, simulator: Any) -> None:
    async with connect_legacy(daemon.url) as client:
        prompt = sim_prompt("slow", chunks=4, chunk_delay_s=0.1, reply="the answer")
        with trio.fail_after(0.3):  # well before the call could end
            task = await create_task(client, prompt, ttl=60_000)
        assert set(task) == {"taskId", "status", "statusMessage", "createdAt", "lastUpdatedAt", "ttl", "pollInterval"}
        assert task["status"] == "working" and task["ttl"] == 60_000 and task["pollInterval"] > 0
        assert len(task["taskId"]) >= 22 and re.fullmatch(r"[A-Za-z0-9_-]+", task["taskId"])  # >= 128 bits
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", task["createdAt"])
        got = await client.request("tasks/get", {"taskId": task["taskId"]})
        assert got["taskId"] == task["taskId"] and got["status"] == "working"
        result = await client.request("tasks/result", {"taskId": task["taskId"]})
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}
        assert result["isError"] is False and "the answer" in result["content"][0]["text"]
        plain = await client.call_tool("chat", {"prompt": prompt})
        same = re.compile(r"continuation_id: \S+")  # each call starts its own thread
        assert same.sub("", plain.text) == same.sub("", result["content"][0]["text"])
        done = await next_status(client, task["taskId"])
        assert done["status"] == "completed" and done["statusMessage"] == "completed"
        got = await client.request("tasks/get", {"taskId": task["taskId"]})
        assert got["status"] == "completed" and got["lastUpdatedAt"] >= got["createdAt"]
    assert simulator.stats.aborted == 0


async def test_status_message_tracks_model_and_tokens(daemon: Any) -> None:
    async with connect_legacy(daemon.url) as client:
        task = await create_task(client, sim_prompt("slow", chunks=30, chunk_delay_s=0.1))
        messages: set[str] = set()
        with trio.fail_after(10):
            while True:
                got = await client.request("tasks/get", {"taskId": task["taskId"]})
                if got["status"] != "working":
                    break
                messages.add(got["statusMessage"])
                await trio.sleep(0.1)
        assert any(re.search(r"running, model kimi-k2-0905-preview, \d+ tokens", m) for m in messages), messages


async def test_closing_the_connection_does_not_cancel_a_task(daemon: Any, simulator: Any) -> None:
    prompt = sim_prompt("survives", chunks=3, chunk_delay_s=0.2, reply="still here")
    async with connect_legacy(daemon.url) as client:
        task = await create_task(client, prompt)
        await client.close_abruptly()
    await simulator.wait_until(lambda s: s.inflight == 1)
    async with connect_legacy(daemon.url) as client:
        with trio.fail_after(10):
            result = await client.request("tasks/result", {"taskId": task["taskId"]})
        assert "still here" in result["content"][0]["text"]
    assert simulator.stats.aborted == 0


async def test_tasks_cancel_stops_the_work_and_aborts_the_provider_request(daemon: Any, simulator: Any) -> None:
    async with connect_legacy(daemon.url) as client:
        task = await create_task(client, HANG)
        await simulator.wait_until(lambda s: s.inflight == 1)
        cancelled = await client.request("tasks/cancel", {"taskId": task["taskId"]})
        assert cancelled["status"] == "cancelled" and cancelled["taskId"] == task["taskId"]
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 0 and s.aborted == 1)
        assert (await next_status(client, task["taskId"]))["status"] == "cancelled"
        assert (await client.request("tasks/get", {"taskId": task["taskId"]}))["status"] == "cancelled"
        again = await rpc_error(client, "tasks/cancel", {"taskId": task["taskId"]})
        assert again.code == -32602 and "terminal status 'cancelled'" in again.message
        no_result = await rpc_error(client, "tasks/result", {"taskId": task["taskId"]})
        assert "cancelled" in no_result.message



async def test_giving_up_on_tasks_result_cancels_the_wait_not_the_task(daemon: Any, simulator: Any) -> None:
    async with connect_legacy(daemon.url) as client:
        task = await create_task(client, sim_prompt("x", latency_s=0.5, reply="kept going"))
        with trio.move_on_after(0.1):  # the client library sends notifications/cancelled
            await client.request("tasks/result", {"taskId": task["taskId"]})
        result = await client.request("tasks/result", {"taskId": task["taskId"]})
        assert "kept going" in result["content"][0]["text"]
    assert simulator.stats.aborted == 0

async def test_a_finished_task_cannot_be_cancelled(daemon: Any) -> None:
    async with connect_legacy(daemon.url) as client:
        task = await create_task(client, "quick")
        await client.request("tasks/result", {"taskId": task["taskId"]})
        refused = await rpc_error(client, "tasks/cancel", {"taskId": task["taskId"]})
        assert refused.code == -32602 and "'completed'" in refused.message
        assert (await client.request("tasks/get", {"taskId": task["taskId"]}))["status"] == "completed"


async def test_the_task_deadline_replaces_the_tool_timeout(daemons: Any, simulator: Any) -> None:
    daemon = await daemons.start(tool_timeout_secs=0.5, provider_timeout_secs=0.5, task_timeout_secs=2.5)
    async with connect_legacy(daemon.url) as client:
        # A failed attempt, a retry, a slow answer: longer than the tool timeout in all.
        prompt = sim_prompt("slower than the tool timeout", latency_s=0.3, status=503, fail_times=1, reply="made it")
        started = trio.current_time()
        task = await create_task(client, prompt)
        result = await client.request("tasks/result", {"taskId": task["taskId"]})
        assert "made it" in result["content"][0]["text"] and trio.current_time() - started > 0.5
    shorter = await daemons.start(tool_timeout_secs=5, provider_timeout_secs=5, task_timeout_secs=1.0)
    async with connect_legacy(shorter.url) as client:
        task = await create_task(client, HANG)
        with trio.fail_after(4):
            timed_out = await rpc_error(client, "tasks/result", {"taskId": task["taskId"]})
        assert timed_out.code == -32001 and timed_out.data == {"timeout_s": 1.0}
        got = await client.request("tasks/get", {"taskId": task["taskId"]})
        assert got["status"] == "failed" and "timed out after 1 s" in got["statusMessage"]
    assert simulator.stats.aborted >= 1 and simulator.stats.inflight == 0


async def test_a_tool_error_reads_failed_and_its_result_is_the_error_result(daemon: Any) -> None:
    async with connect_legacy(daemon.url) as client:
        task = await create_task(client, "x", ttl=1000)
        await client.request("tasks/result", {"taskId": task["taskId"]})
        result = await client.request(
            "tools/call", {"name": "chat", "arguments": {"prompt": 5}, "task": {}}
        )
        task_id = result["task"]["taskId"]
        error_result = await client.request("tasks/result", {"taskId": task_id})
        assert error_result["isError"] is True and "prompt" in error_result["content"][0]["text"]
        got = await client.request("tasks/get", {"taskId": task_id})
        assert got["status"] == "failed" and "isError" in got["statusMessage"]


async def test_at_most_max_tasks_unfinished(daemons: Any) -> None:
    daemon = await daemons.start(max_tasks=1)
    async with connect_legacy(daemon.url) as client:
        first = await create_task(client, HANG)
        refused = await rpc_error(client, "tools/call", {"name": "chat", "arguments": {"prompt": "x"}, "task": {}})
        assert refused.code == -32000 and refused.data["retry_after_s"] >= 1
        assert "EXAI_MAX_TASKS=1" in refused.message
        await client.request("tasks/cancel", {"taskId": first["taskId"]})
        second = await create_task(client, "now there is room")
        await client.request("tasks/result", {"taskId": second["taskId"]})


async def test_a_longer_ttl_is_cut_and_a_shorter_one_kept(daemons: Any) -> None:
    daemon = await daemons.start(task_ttl_secs=30)
    async with connect_legacy(daemon.url) as client:
        assert (await create_task(client, "a", ttl=10**9))["ttl"] == 30_000
        assert (await create_task(client, "b", ttl=1500))["ttl"] == 1500
        assert (await create_task(client, "c"))["ttl"] == 30_000
        for task in (await client.request("tasks/list", {}))["tasks"]:
            await client.request("tasks/result", {"taskId": task["taskId"]})


@pytest.mark.parametrize("method", ["tasks/get", "tasks/result", "tasks/cancel"])
async def test_unknown_or_malformed_task_ids_are_invalid_params(daemon: Any, method: str) -> None:
    async with connect_legacy(daemon.url) as client:
        for params in ({"taskId": "no-such-task"}, {"taskId": "x" * 500}, {}, {"taskId": 7}, {"taskId": ""}):
            error = await rpc_error(client, method, params)
            assert error.code == -32602, (params, error)
        await client.ping()


async def test_bad_task_params_are_invalid_params_and_start_nothing(daemon: Any) -> None:
    async with connect_legacy(daemon.url) as client:
        for task in ([], "soon", {"ttl": -1}, {"ttl": "long"}, {"ttl": True}):
            error = await rpc_error(client, "tools/call", {"name": "chat", "arguments": {"prompt": "x"}, "task": task})
            assert error.code == -32602 and "task" in error.message
        unknown = await rpc_error(client, "tools/call", {"name": "nope", "task": {}})
        assert unknown.code == -32602 and "Unknown tool" in unknown.message
        assert (await client.request("tasks/list", {}))["tasks"] == []
        for cursor in ("not-a-cursor", 5, "WzEsMl0=", "bnVsbA=="):
            error = await rpc_error(client, "tasks/list", {"cursor": cursor})
            assert error.code == -32602


async def test_tasks_list_pages_with_next_cursor(daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(legacytasks, "PAGE_SIZE", 2)
    async with connect_legacy(daemon.url) as client:
        created = [(await create_task(client, f"task {n}"))["taskId"] for n in range(5)]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await client.request("tasks/list", {"cursor": cursor} if cursor else {})
            pages += 1
            seen.extend(task["taskId"] for task in page["tasks"])
            cursor = page.get("nextCursor")
            if cursor is None:
                break
        assert sorted(seen) == sorted(created) and pages == 3
        for task_id in created:
            await client.request("tasks/result", {"taskId": task_id})


async def test_only_the_same_credentials_see_a_task(daemons: Any, tmp_path: Path) -> None:
    daemon = await daemons.start(auth_token="first-token")
    async with connect_legacy(daemon.url, token="first-token") as client:
        task = await create_task(client, "mine")
        await client.request("tasks/result", {"taskId": task["taskId"]})
    daemon.daemon.request_shutdown()
    await daemon.daemon.stopped.wait()
    other = await daemons.start(auth_token="second-token")
    async with connect_legacy(other.url, token="second-token") as client:
        assert (await rpc_error(client, "tasks/get", {"taskId": task["taskId"]})).code == -32602
        assert (await client.request("tasks/list", {}))["tasks"] == []
    again = await daemons.start(auth_token="first-token")
    async with connect_legacy(again.url, token="first-token") as client:
        assert (await client.request("tasks/get", {"taskId": task["taskId"]}))["status"] == "completed"


async def test_status_and_tasks_in_api_status(daemon: Any) -> None:
    async with connect_legacy(daemon.url) as client, httpx.AsyncClient(base_url=daemon.monitor_url) as http:
        task = await create_task(client, HANG)
        await eventually(lambda: daemon.daemon.status()["tasks"]["running"] != [], what="the task is listed")
        status = (await http.get("/api/status")).json()
        assert status["tasks"]["working"] == 1
        [running] = status["tasks"]["running"]
        assert running["tool"] == "chat" and running["age_s"] >= 0 and "message" in running
        assert task["taskId"] not in json.dumps(status)  # the id is a capability: only its start is shown
        assert task["taskId"].startswith(running["id"])
        await client.request("tasks/cancel", {"taskId": task["taskId"]})
        await eventually(lambda: daemon.daemon.status()["tasks"]["cancelled"] == 1, what="the count follows")
        assert daemon.daemon.status()["tasks"]["working"] == 0


# -- Streamable HTTP -----------------------------------------------------------------------


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url.removesuffix("/mcp"), timeout=10) as http:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
        answer = await http.post("/mcp", json=init, headers={**headers, "Accept": "application/json"})
        assert answer.json()["result"]["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
        headers["Mcp-Session-Id"] = answer.headers["mcp-session-id"]
        yield http, headers
        await http.delete("/mcp", headers=headers)


def sse_response(text: str) -> dict[str, Any]:
    messages = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
    return next(m for m in messages if "id" in m)


async def test_over_streamable_http_a_dropped_result_stream_cancels_nothing(daemon: Any, simulator: Any) -> None:
    async with http_session(daemon.http_url) as (http, headers):
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "chat", "arguments": {"prompt": sim_prompt("x", latency_s=0.6, reply="over http")}, "task": {}},
        }
        answer = await http.post("/mcp", json=call, headers={**headers, "Accept": "application/json"})
        task_id = answer.json()["result"]["task"]["taskId"]
        wait = {"jsonrpc": "2.0", "id": 2, "method": "tasks/result", "params": {"taskId": task_id}}
        async with http.stream("POST", "/mcp", json=wait, headers=headers) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            # Dropped before the task ends.
        await simulator.wait_until(lambda s: s.completed == 1)
        again = {"jsonrpc": "2.0", "id": 3, "method": "tasks/result", "params": {"taskId": task_id}}
        answer = await http.post("/mcp", json=again, headers=headers)
        result = sse_response(answer.text)["result"]
        assert "over http" in result["content"][0]["text"]
        got = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 4, "method": "tasks/get", "params": {"taskId": task_id}},
            headers={**headers, "Accept": "application/json"},
        )
        assert got.json()["result"]["status"] == "completed"
    assert simulator.stats.aborted == 0


async def test_a_task_outlives_its_http_session(daemon: Any, simulator: Any) -> None:
    async with http_session(daemon.http_url) as (http, headers):
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "chat", "arguments": {"prompt": sim_prompt("x", latency_s=0.4, reply="later")}, "task": {}},
        }
        answer = await http.post("/mcp", json=call, headers={**headers, "Accept": "application/json"})
        task_id = answer.json()["result"]["task"]["taskId"]
    # The session is deleted; the task goes on and a new connection reads its result.
    async with connect_legacy(daemon.url) as client:
        result = await client.request("tasks/result", {"taskId": task_id})
        assert "later" in result["content"][0]["text"]
    assert simulator.stats.aborted == 0


# -- durable: restarts on one store ----------------------------------------------------------


async def read_task(url: str, task_id: str) -> dict[str, Any]:
    async with connect_legacy(url) as client:
        return dict(await client.request("tasks/get", {"taskId": task_id}))


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_after_a_restart_finished_tasks_answer_and_working_ones_read_failed(tmp_path: Path, stop: str) -> None:
    env = {"EXAI_SHUTDOWN_GRACE_SECS": "0.3"}
    async with serve_process(tmp_path, "--demo", **env) as first:
        async with connect_legacy(first.url) as client:
            done = await create_task(client, "finished before the stop")
            finished = await client.request("tasks/result", {"taskId": done["taskId"]})
            working = await create_task(client, HANG)
        if stop == "sigterm":
            first.proc.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await first.proc.wait() == 0
        else:
            first.proc.kill()
            await first.proc.wait()
    async with serve_process(tmp_path, "--demo", **env) as second:
        async with connect_legacy(second.url) as client:
            again = await client.request("tasks/result", {"taskId": done["taskId"]})
            assert again == finished
            lost = await client.request("tasks/get", {"taskId": working["taskId"]})
            assert lost["status"] == "failed"
            assert lost["statusMessage"] == (STOPPED_AT_SHUTDOWN if stop == "sigterm" else LOST_AT_START)
            error = await rpc_error(client, "tasks/result", {"taskId": working["taskId"]})
            assert error.code == -32603
        second.proc.send_signal(signal.SIGTERM)
        await second.proc.wait()


# -- the runner's rules about time, in-process on the autojump clock ---------------------------


class NapArgs(ToolArgs):
    seconds: float = 1.0
    steps: int = 1


class Nap(Tool[NapArgs]):
    """A tool that takes its time in steps, saying which one it is on (no provider)."""

    name = "nap"
    description = "sleeps"
    Args = NapArgs

    async def run(self, args: NapArgs, ctx: ToolContext) -> ToolOutput:
        for step in range(1, args.steps + 1):
            ctx.show(step=f"{step}/{args.steps}")
            await trio.sleep(args.seconds / args.steps)
        return ToolOutput(f"slept {args.seconds:g} s")


def nap(seconds: float, steps: int = 1) -> ToolCall:
    return ToolCall("nap", {"seconds": seconds, "steps": steps}, None, None)


WALL: float = 1_000_000.0  # the store's wall clock is trio's plus this


def wall_clock() -> Callable[[], float]:
    """The store's clock: trio's (its worker threads read it too), so autojump moves both."""
    clock = trio.lowlevel.current_clock()
    return lambda: WALL + clock.current_time()


@asynccontextmanager
async def runner_on_autojump(tmp_path: Path, **overrides: Any) -> AsyncIterator[TaskRunner]:
    """A TaskRunner over a real SQLite store on trio's clock."""
    settings = Settings(state_dir=tmp_path / "state", **overrides)
    async with open_store(settings, clock=wall_clock()) as store:
        services = Services(
            settings=settings,
            limits=Limits.from_settings(settings),
            gateway=None,
            tools={"nap": Nap()},
            store=store,
            calls=Calls(),
            status=dict,
        )
        async with open_task_runner(services) as runner:
            yield runner


async def nobody(message: Any) -> None:
    pass


async def test_a_task_is_kept_for_its_ttl_then_gone(tmp_path: Path, autojump_clock: Any, log_lines: list[str]) -> None:
    async with runner_on_autojump(tmp_path, task_ttl_secs=600) as runner:
        record = await runner.start(nap(1), Nap(), ttl_s=30, send=nobody, notify=nobody)
        assert record.ttl_s == 30
        assert (await runner.wait(record.id)).status is TaskStatus.COMPLETED
        await trio.sleep_until(record.created - WALL + 29)
        assert (await runner.get(record.id)).status is TaskStatus.COMPLETED
        await trio.sleep(2)
        with pytest.raises(ProtocolRpcError) as raised:
            await runner.get(record.id)
        assert raised.value.code == -32602
        await trio.sleep(EXPIRE_EVERY_S)  # the record itself is deleted within EXPIRE_EVERY_S
        assert "tasks: deleted 1 expired task(s)" in log_lines
        longest = await runner.start(nap(1), Nap(), ttl_s=10**6, send=nobody, notify=nobody)
        assert longest.ttl_s == 600  # cut to EXAI_TASK_TTL_SECS
        await runner.wait(longest.id)


async def test_the_deadline_is_the_task_timeout_but_never_past_the_ttl(tmp_path: Path, autojump_clock: Any) -> None:
    async with runner_on_autojump(tmp_path, task_timeout_secs=100) as runner:
        long = await runner.start(nap(50), Nap(), ttl_s=None, send=nobody, notify=nobody)
        assert (await runner.wait(long.id)).status is TaskStatus.COMPLETED
        short_lived = await runner.start(nap(50), Nap(), ttl_s=5, send=nobody, notify=nobody)
        ended = await runner.wait(short_lived.id)
        assert ended.status is TaskStatus.FAILED and ended.message == "failed: Request timed out after 5 s"
        too_long = await runner.start(nap(150), Nap(), ttl_s=None, send=nobody, notify=nobody)
        ended = await runner.wait(too_long.id)
        assert ended.status is TaskStatus.FAILED and ended.message == "failed: Request timed out after 100 s"
        assert ended.outcome == {"error": {"code": -32001, "message": "Request timed out after 100 s", "data": {"timeout_s": 100.0}}}


async def test_a_task_longer_than_the_tool_timeout_and_its_lease_keeps_working(tmp_path: Path, autojump_clock: Any) -> None:
    async with runner_on_autojump(tmp_path, tool_timeout_secs=10, provider_timeout_secs=10, replica_lease_secs=3) as runner:
        record = await runner.start(nap(60, steps=3), Nap(), ttl_s=None, send=nobody, notify=nobody)
        await trio.sleep(30)  # ten leases long: renewed all along
        now = await runner.get(record.id)
        assert now.status is TaskStatus.WORKING and now.message == "running, step 2/3"
        assert (await runner.wait(record.id)).status is TaskStatus.COMPLETED


async def test_leaving_the_runner_fails_what_still_works(tmp_path: Path, autojump_clock: Any) -> None:
    async with runner_on_autojump(tmp_path) as runner:
        record = await runner.start(nap(1000), Nap(), ttl_s=None, send=nobody, notify=nobody)
        await trio.sleep(1)
    async with open_store(Settings(state_dir=tmp_path / "state"), clock=wall_clock()) as store:
        ended = await store.task(record.id, None)
        assert ended.status is TaskStatus.FAILED and ended.message == STOPPED_AT_SHUTDOWN


# -- exai tasks / exai task ID / exai call --task -------------------------------------------------


def run_cli(settings: Settings, *args: str) -> Any:
    where = {"EXAI_STATE_DIR": str(settings.state_dir), "EXAI_STORE_URL": settings.store_url, "COLUMNS": "200"}
    return CliRunner().invoke(main, list(args), env=where)


async def run_exai(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(20):
        return await trio.run_process([*EXAI, *args], capture_stdout=True, capture_stderr=True, check=False)


async def test_exai_tasks_and_task_read_the_store(daemon: Any) -> None:
    async with connect_legacy(daemon.url) as client:
        done = await create_task(client, sim_prompt("x", reply="stored answer"))
        await client.request("tasks/result", {"taskId": done["taskId"]})
        cancelled = await create_task(client, HANG)
        await client.request("tasks/cancel", {"taskId": cancelled["taskId"]})
    settings = daemon.daemon.settings
    listed = run_cli(settings, "tasks", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(row["id"], row["status"]) for row in rows] == [(cancelled["taskId"], "cancelled"), (done["taskId"], "completed")]
    table = run_cli(settings, "tasks")
    assert table.exit_code == 0 and "completed" in table.output and "cancelled" in table.output
    shown = run_cli(settings, "task", done["taskId"])
    assert shown.exit_code == 0, shown.output
    assert done["taskId"] in shown.output and "stored answer" in shown.output and "completed" in shown.output
    as_json = json.loads(run_cli(settings, "task", done["taskId"], "--json").output)
    assert "stored answer" in as_json["outcome"]["result"]["content"][0]["text"]
    unknown = run_cli(settings, "task", "no-such-task")
    assert unknown.exit_code == 1 and "unknown or expired" in unknown.output


def test_exai_tasks_without_a_store(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "nothing-here")
    listed = run_cli(settings, "tasks")
    assert listed.exit_code == 0 and "no tasks in" in listed.output
    assert run_cli(settings, "task", "abc").exit_code == 1
    assert not (tmp_path / "nothing-here").exists()  # reading creates nothing


@pytest.mark.slow
async def test_exai_call_task_polls_to_the_result(daemon: Any) -> None:
    url = daemon.url
    ok = await run_exai("call", "chat", f"prompt={sim_prompt('x', chunks=8, chunk_delay_s=0.4, reply='polled answer')}", "--task", "--url", url, "--token", "unused")
    assert ok.returncode == 0, ok.stderr
    assert b"polled answer" in ok.stdout
    assert b"task " in ok.stderr and b"running" in ok.stderr  # the task's status messages, polled
    failed = await run_exai("call", "chat", f"prompt={HANG}", "--timeout", "0.5", "--task", "--url", url, "--token", "unused")
    assert failed.returncode == 3 and b"timed out" in failed.stderr
    unknown = await run_exai("call", "nope", "--task", "--url", url, "--token", "unused")
    assert unknown.returncode == 2 and b"Unknown tool" in unknown.stderr
    assert b"Traceback" not in ok.stderr + failed.stderr + unknown.stderr


async def test_call_or_task_answers_a_fast_call_as_usual(tmp_path: Path, autojump_clock: Any) -> None:
    async with runner_on_autojump(tmp_path) as runner:
        response = await runner.call_or_task(nap(1.5), Nap(), after_s=2, send=nobody, notify=nobody)
        assert isinstance(response, dict) and response["result"]["content"][0]["text"] == "slept 1.5 s"
        assert await runner.store.tasks(None) == []  # no task was ever recorded


async def test_call_or_task_hands_a_slow_call_off_as_a_task(tmp_path: Path, autojump_clock: Any) -> None:
    async with runner_on_autojump(tmp_path, tool_timeout_secs=5, provider_timeout_secs=5) as runner:
        started = trio.current_time()
        record = await runner.call_or_task(nap(20, steps=4), Nap(), after_s=2, send=nobody, notify=nobody)
        assert isinstance(record, TaskRecord) and trio.current_time() - started == pytest.approx(2)
        assert record.status is TaskStatus.WORKING
        ended = await runner.wait(record.id)  # past the 5 s tool timeout: a task's deadline is its own
        assert ended.status is TaskStatus.COMPLETED and ended.outcome is not None
        assert ended.outcome["result"]["content"][0]["text"] == "slept 20 s"
        always = await runner.call_or_task(nap(0.1), Nap(), after_s=0, send=nobody, notify=nobody)
        assert isinstance(always, TaskRecord)  # EXAI_TASK_AFTER_SECS=0: always a task
        assert (await runner.wait(always.id)).status is TaskStatus.COMPLETED


async def test_call_or_task_cancelled_before_it_is_a_task_stops_the_call(tmp_path: Path, autojump_clock: Any) -> None:
    async with runner_on_autojump(tmp_path) as runner:
        with trio.move_on_after(1):
            await runner.call_or_task(nap(100), Nap(), after_s=2, send=nobody, notify=nobody)
        await trio.sleep(0.1)
        assert len(runner.services.calls) == 0 and await runner.store.tasks(None) == []


async def test_call_or_task_at_max_tasks_stays_a_plain_call(tmp_path: Path, autojump_clock: Any) -> None:
    async with runner_on_autojump(tmp_path, max_tasks=1) as runner:
        busy = await runner.start(nap(50), Nap(), ttl_s=None, send=nobody, notify=nobody)
        response = await runner.call_or_task(nap(5), Nap(), after_s=2, send=nobody, notify=nobody)
        assert isinstance(response, dict) and response["result"]["content"][0]["text"] == "slept 5 s"
        await runner.wait(busy.id)


@pytest.mark.slow
async def test_exai_call_task_ctrl_c_cancels_the_task(daemon: Any, simulator: Any) -> None:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*EXAI, "call", "chat", f"prompt={HANG}", "--task", "--url", daemon.url, "--token", "unused"],
                check=False,
                stderr=subprocess.DEVNULL,
            )
        )
        with trio.fail_after(10):
            await simulator.wait_until(lambda s: s.inflight == 1)
        process.send_signal(signal.SIGINT)
    assert process.returncode == 130
    with trio.fail_after(2):
        await simulator.wait_until(lambda s: s.inflight == 0 and s.aborted == 1)
    assert daemon.daemon.status()["tasks"]["cancelled"] == 1
