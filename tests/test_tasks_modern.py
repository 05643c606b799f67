"""Tasks as the modern extension `io.modelcontextprotocol/tasks` serves them (contract 3d,
first bullet), over real loopback sockets (WebSocket and modern Streamable HTTP) on the
simulator; real time with short generous bounds (EXAI_TASK_AFTER_SECS made short).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from exai.client import ConnectionLost, ExaiClient, RpcError, connect

HANG = '#sim {"hang": true}'
EXTENSION = "io.modelcontextprotocol/tasks"
DECLARED = {"_meta": {"io.modelcontextprotocol/clientCapabilities": {"extensions": {EXTENSION: {}}}}}
VERSION = "2026-07-28"
NODE_DIR = Path(__file__).parent / "node"


def sim_prompt(text: str, **behaviour: Any) -> str:
    return f"{text}\n#sim {json.dumps(behaviour)}"


async def call(client: ExaiClient, prompt: str, *, declared: bool = True) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "chat", "arguments": {"prompt": prompt}}
    if declared:
        params |= DECLARED
    return dict(await client.request("tools/call", params))


async def rpc_error(client: ExaiClient, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as raised:
        await client.request(method, params)
    return raised.value


async def poll(client: ExaiClient, task_id: str, timeout: float = 10) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while True:
            got = dict(await client.request("tasks/get", {"taskId": task_id}))
            if got["status"] != "working":
                return got
            await trio.sleep(0.05)


@pytest.fixture
async def modern(daemons: Any) -> Any:
    return await daemons.start(task_after_secs=0.3)


async def test_a_slow_call_becomes_a_task_and_a_fast_one_answers_as_usual(modern: Any, simulator: Any) -> None:
    async with connect(modern.url, era="modern") as client:
        fast = await call(client, "quick")
        assert fast["resultType"] == "complete" and fast["isError"] is False
        started = trio.current_time()
        task = await call(client, sim_prompt("slow", chunks=6, chunk_delay_s=0.2, reply="the long answer"))
        assert trio.current_time() - started == pytest.approx(0.3, abs=0.25)
        assert task["resultType"] == "task" and task["status"] == "working"
        assert {"taskId", "statusMessage", "createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs"} <= set(task)
        assert task["ttlMs"] == 3_600_000 and len(task["taskId"]) >= 22
        done = await poll(client, task["taskId"])
        assert done["status"] == "completed" and done["resultType"] == "complete"
        assert "the long answer" in done["result"]["content"][0]["text"]
        assert done["result"]["resultType"] == "complete"  # the CallToolResult the call would have returned
        assert "io.modelcontextprotocol/serverInfo" in done["_meta"]
    assert simulator.stats.aborted == 0


async def test_never_a_task_to_a_client_that_did_not_declare_the_extension(modern: Any) -> None:
    async with connect(modern.url, era="modern") as client:
        answer = await call(client, sim_prompt("slow", latency_s=0.8, reply="plain"), declared=False)
        assert answer["resultType"] == "complete" and "plain" in answer["content"][0]["text"]


async def test_a_tool_error_is_completed_and_a_timeout_failed(daemons: Any) -> None:
    daemon = await daemons.start(task_after_secs=0, task_timeout_secs=0.5)
    async with connect(daemon.url, era="modern") as client:
        task = await call(client, "x" * 0 + "")
        assert task["resultType"] == "task"  # EXAI_TASK_AFTER_SECS=0: always a task
        done = await poll(client, task["taskId"])
        assert done["status"] == "completed" and done["result"]["isError"] is True  # empty prompt refused
        hung = await call(client, HANG)
        failed = await poll(client, hung["taskId"])
        assert failed["status"] == "failed" and "result" not in failed
        assert failed["error"]["code"] == -32001 and failed["error"]["data"] == {"timeout_s": 0.5}


async def test_cancel_update_and_unknown_ids(modern: Any, simulator: Any) -> None:
    async with connect(modern.url, era="modern") as client:
        task = await call(client, HANG)
        await simulator.wait_until(lambda s: s.inflight == 1)
        assert (await client.request("tasks/update", {"taskId": task["taskId"], "inputResponses": {}}))["resultType"] == "complete"
        assert (await client.request("tasks/get", {"taskId": task["taskId"]}))["status"] == "working"  # update changed nothing
        acknowledged = await client.request("tasks/cancel", {"taskId": task["taskId"]})
        assert set(acknowledged) == {"resultType", "_meta"}  # an empty result
        with trio.fail_after(2):
            await simulator.wait_until(lambda s: s.inflight == 0 and s.aborted == 1)
        assert (await client.request("tasks/get", {"taskId": task["taskId"]}))["status"] == "cancelled"
        done = await call(client, sim_prompt("x", latency_s=0.5))
        finished = await poll(client, done["taskId"])
        await client.request("tasks/cancel", {"taskId": done["taskId"]})  # acknowledged, keeps its status
        assert (await client.request("tasks/get", {"taskId": done["taskId"]}))["status"] == finished["status"] == "completed"
        for method in ("tasks/get", "tasks/cancel", "tasks/update"):
            for params in ({"taskId": "no-such-task"}, {}, {"taskId": 5}):
                assert (await rpc_error(client, method, params)).code == -32602, (method, params)


async def test_closing_the_connection_before_the_task_cancels_after_it_does_not(modern: Any, simulator: Any) -> None:
    async with connect(modern.url, era="modern") as client:
        async def doomed() -> None:
            with contextlib.suppress(ConnectionLost):
                await call(client, HANG)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed)
            await simulator.wait_until(lambda s: s.inflight == 1)
            await client.close_abruptly()  # still the client's call: it stops with it
    with trio.fail_after(2):
        await simulator.wait_until(lambda s: s.inflight == 0 and s.aborted == 1)
    async with connect(modern.url, era="modern") as client:
        task = await call(client, sim_prompt("x", latency_s=1.0, reply="outlived its connection"))
        await client.close_abruptly()
    async with connect(modern.url, era="modern") as client:
        done = await poll(client, task["taskId"])
        assert "outlived its connection" in done["result"]["content"][0]["text"]
    assert simulator.stats.aborted == 1


async def test_notifications_tasks_on_subscriptions_listen(modern: Any) -> None:
    async with connect(modern.url, era="modern") as client, connect(modern.url, era="modern") as follower:
        task = await call(client, sim_prompt("x", latency_s=0.8, reply="heard"))
        listen = {"notifications": {"taskIds": [task["taskId"], "not-a-task"]}} | DECLARED
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.request, "subscriptions/listen", listen)
            heard: list[dict[str, Any]] = []
            with trio.fail_after(5):
                while not any(m.get("method") == "notifications/tasks" for m in heard):
                    heard.append(await follower.receive_raw())
            ack = next(m for m in heard if m.get("method") == "notifications/subscriptions/acknowledged")
            assert ack["params"]["notifications"]["taskIds"] == [task["taskId"]]
            note = next(m for m in heard if m.get("method") == "notifications/tasks")["params"]
            assert note["taskId"] == task["taskId"] and note["status"] == "completed"
            assert "heard" in note["result"]["content"][0]["text"]
            nursery.cancel_scope.cancel()
        undeclared = await rpc_error(follower, "subscriptions/listen", {"notifications": {"taskIds": [task["taskId"]]}})
        assert undeclared.code == -32021 and undeclared.data == {"requiredCapabilities": {"extensions": {EXTENSION: {}}}}


async def test_over_modern_streamable_http(modern: Any, simulator: Any) -> None:
    def headers(method: str, name: str | None = None) -> dict[str, str]:
        out = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": VERSION, "Mcp-Method": method}
        if name is not None:
            out["Mcp-Name"] = name
        return out

    envelope = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {EXTENSION: {}}},
    }
    async with httpx.AsyncClient(base_url=modern.http_url.removesuffix("/mcp"), timeout=10) as http:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "chat", "arguments": {"prompt": sim_prompt("x", latency_s=1.0, reply="over http")}, "_meta": envelope},
        }
        answer = await http.post("/mcp", json=body, headers=headers("tools/call", "chat") | {"Accept": "application/json"})
        task = answer.json()["result"]
        assert task["resultType"] == "task"
        get = {"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"taskId": task["taskId"], "_meta": envelope}}
        with trio.fail_after(10):
            while True:
                got = (await http.post("/mcp", json=get, headers=headers("tasks/get", task["taskId"]))).json()["result"]
                if got["status"] != "working":
                    break
                await trio.sleep(0.1)
        assert got["status"] == "completed" and "over http" in got["result"]["content"][0]["text"]
        assert re.fullmatch(r".*Z", got["createdAt"])
    assert simulator.stats.aborted == 0


@pytest.mark.skipif(shutil.which("node") is None, reason="no node on this machine")
@pytest.mark.parametrize("generation, version", [("legacy", "2025-11-25"), ("modern", VERSION)])
async def test_the_official_tasks_client_settles_a_chat_task(modern: Any, generation: str, version: str) -> None:
    assert (NODE_DIR / "node_modules" / "@modelcontextprotocol" / "ext-tasks").is_dir(), (
        "the tasks client is not installed: run `npm ci --prefix tests/node` (.ci/run does)"
    )
    with trio.fail_after(30):
        done = await trio.run_process(
            ["node", str(NODE_DIR / "ext_tasks_client.mjs"), modern.http_url, generation],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert (report["era"], report["version"]) == (generation, version)
    assert report["kind"] == "task" and report["outcome"] == "completed"  # a task, not an immediate answer
    assert "settled answer" in report["text"] and report["isError"] is False
