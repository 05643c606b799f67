"""The Redis store on a real redis-server (tests/redis_support.py): the client's behaviour
under cancellation, which the issue makes the reason to choose it, then what the Redis backend
does that the backend-parametrised tests of tests/test_store.py cannot see (outage, round trips,
another replica's write, the CLI's reader).

Rules: loopback only; the session's own redis-server (never a system one), flushed per test.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import coredis
import httpx
import pytest
import trio
from click.testing import CliRunner
from redis_support import RedisServer

from exai.cli import main
from exai.client import connect
from exai.config import Settings
from exai.store import (
    NewTask,
    StoreUnavailable,
    Thread,
    ThreadNotFound,
    TooManyTasks,
    Turn,
    open_store,
    read_thread,
)


def settings_for(tmp_path: Path, url: str) -> Settings:
    return Settings(state_dir=tmp_path / "state", store_url=url)


def pair(n: int) -> list[Turn]:
    return [Turn("user", f"question {n}", "chat"), Turn("assistant", f"answer {n}", "chat")]


# -- the client: cancellation leaves the connection usable --------------------------------


def _client(redis_server: RedisServer) -> coredis.Redis[str]:
    # The pool as the store makes it (no max_connections: see exai.store.redis._client).
    return coredis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True, stream_timeout=5)


async def test_a_cancelled_blpop_leaves_the_connection_usable(redis_url: str, redis_server: RedisServer) -> None:
    async with _client(redis_server) as client:
        await client.set("k", "v")
        for _ in range(10):
            with trio.move_on_after(0.05) as waited:
                await client.blpop(["nothing"], timeout=30)
            assert waited.cancelled_caught
            with trio.fail_after(1):
                assert await client.get("k") == "v"
        # The cancelled BLPOPs are not still waiting on the server: none takes a later item,
        # and their connections were closed, not left open beside the one in use.
        with trio.fail_after(1):
            await client.rpush("nothing", ["item"])
            assert await client.lpop("nothing") == "item"
        assert len(await client.client_list()) == 1  # as the server sees it


async def test_a_cancelled_pipeline_leaves_the_connection_usable(redis_url: str, redis_server: RedisServer) -> None:
    async with _client(redis_server) as client:
        await client.set("k", "v")
        with trio.move_on_after(0.1) as waited:
            async with client.pipeline(transaction=False) as pipe:
                pipe.incr("counter")
                pipe.blpop(["nothing"], timeout=30)
        assert waited.cancelled_caught
        with trio.fail_after(1):
            assert await client.get("k") == "v"
            async with client.pipeline(transaction=False) as pipe:
                got = pipe.get("k")
                counted = pipe.incr("counter")
            assert (await got, await counted) == ("v", 2)  # the cancelled pipeline's INCR ran once
        assert len(await client.client_list()) == 1  # as the server sees it


# -- the backend --------------------------------------------------------------------------


async def test_outage_is_store_unavailable_and_recovers_by_itself(
    tmp_path: Path, redis_url: str, redis_server: RedisServer
) -> None:
    async with open_store(settings_for(tmp_path, redis_url)) as store:
        tid = (await store.append(None, "chat", pair(1))).thread_id
        redis_server.stop()
        try:
            for attempt in (store.get(tid), store.append(tid, "chat", pair(2)), store.list()):
                with trio.fail_after(10), pytest.raises(StoreUnavailable) as got:
                    await attempt
                assert str(got.value).startswith(
                    f"the conversation store redis://127.0.0.1:{redis_server.port}/0 is unavailable: "
                )
        finally:
            redis_server.start()  # an empty server: nothing persisted (--save '')
        with pytest.raises(ThreadNotFound):
            await store.get(tid)
        again = await store.append(None, "chat", pair(3))
        assert [t.content for t in (await store.get(again.thread_id)).turns] == ["question 3", "answer 3"]


async def test_a_store_opens_while_redis_is_down(tmp_path: Path) -> None:
    from redis_support import free_port

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    async with open_store(settings_for(tmp_path, url)) as store:
        with pytest.raises(StoreUnavailable) as got:
            await store.count()
    assert "hunter2" not in str(got.value) and "redis://:****@127.0.0.1:" in str(got.value)


async def test_another_replicas_write_between_read_and_write_is_kept(tmp_path: Path, redis_url: str) -> None:
    """Two stores (two replicas) append to one thread at once, outside any hold: no turn is lost."""
    settings = settings_for(tmp_path, redis_url)
    async with open_store(settings) as one, open_store(settings) as two:
        tid = (await one.append(None, "chat", [])).thread_id

        async def add(store_name: str, n: int) -> None:
            store = one if store_name == "one" else two
            await store.append(tid, "chat", [Turn("user", f"{store_name}{n}", "chat")], files=[f"/{n}"])

        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(add, "one", n)
                nursery.start_soon(add, "two", n)
        thread = await two.get(tid)
        assert sorted(t.content for t in thread.turns) == sorted(
            f"{name}{n}" for name in ("one", "two") for n in range(10)
        )
        assert sorted(thread.files) == sorted(f"/{n}" for n in range(10))


async def test_a_thread_key_expires_in_redis(tmp_path: Path, redis_url: str, redis_server: RedisServer) -> None:
    settings = Settings(state_dir=tmp_path, store_url=redis_url, conversation_ttl_hours=2)
    async with open_store(settings) as store:
        tid = (await store.append(None, "chat", pair(1))).thread_id
        ttl = int(redis_server.command("TTL", f"exai:thread:{tid}")[1:])
        assert 2 * 3600 - 5 <= ttl <= 2 * 3600



async def test_two_replicas_never_create_more_than_max_unfinished_tasks(tmp_path: Path, redis_url: str) -> None:
    """The unfinished count and the insert are one script: replicas creating at once never
    exceed EXAI_MAX_TASKS together."""
    settings = settings_for(tmp_path, redis_url)
    created: list[str] = []
    refused: list[str] = []
    async with open_store(settings) as one, open_store(settings) as two:

        async def create(store: Any, task_id: str) -> None:
            task = NewTask(id=task_id, owner="o", tool="chat", ttl_s=60, runner=task_id[0], lease_s=30, message="")
            try:
                await store.create_task(task, max_unfinished=5)
                created.append(task_id)
            except TooManyTasks:
                refused.append(task_id)

        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(create, one, f"a{n}")
                nursery.start_soon(create, two, f"b{n}")
        assert (len(created), len(refused)) == (5, 15)
        assert sorted(t.id for t in await two.tasks(None)) == sorted(created)


async def test_a_task_key_expires_in_redis_and_the_sweep_clears_its_index(
    tmp_path: Path, redis_url: str, redis_server: RedisServer
) -> None:
    now = time.time()
    clock = lambda: now  # noqa: E731
    async with open_store(settings_for(tmp_path, redis_url), clock=clock) as store:
        task = NewTask(id="t1", owner="o", tool="chat", ttl_s=120, runner="r", lease_s=30, message="")
        await store.create_task(task, max_unfinished=5)
        ttl = int(redis_server.command("TTL", "exai:task:t1")[1:])
        assert 115 <= ttl <= 120
        now += 121
        assert await store.expire_tasks() == 1
        for index in ("exai:tasks", "exai:tasks:expiry", "exai:tasks:working"):
            assert redis_server.command("ZCARD", index) == b":0"
        assert redis_server.command("EXISTS", "exai:task:t1") == b":0"

async def test_per_operation_latency(tmp_path: Path, redis_url: str) -> None:
    """One round trip per read, two per append: each well under the issue's 2 ms budget here."""
    async with open_store(settings_for(tmp_path, redis_url)) as store:
        tid = (await store.append(None, "chat", pair(0))).thread_id
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            await store.get(tid)
        read_ms = (time.perf_counter() - start) / n * 1000
        start = time.perf_counter()
        for i in range(n):
            await store.append(tid, "chat", pair(i))
        append_ms = (time.perf_counter() - start) / n * 1000
    print(f"redis store: get {read_ms:.2f} ms, append {append_ms:.2f} ms (40 turns kept)")
    assert read_ms < 20 and append_ms < 40  # generous: a shared 2-core machine


def test_cli_reads_a_redis_store_and_names_it_when_down(tmp_path: Path, redis_url: str, redis_server: RedisServer) -> None:
    settings = settings_for(tmp_path, redis_url)

    async def make() -> Thread:
        async with open_store(settings) as store:
            tid = (await store.append(None, "debug", pair(1), model="m")).thread_id
            return await store.get(tid)

    made = trio.run(make)
    env = {"EXAI_STATE_DIR": str(settings.state_dir), "EXAI_STORE_URL": redis_url}
    listed = CliRunner().invoke(main, ["threads", "--json"], env=env)
    assert listed.exit_code == 0 and made.id in listed.output
    assert read_thread(settings, made.id).updated == made.updated  # reading does not touch it
    gone = str(uuid.uuid4())
    missing = CliRunner().invoke(main, ["thread", gone], env=env)
    assert missing.exit_code == 1 and "unknown or expired" in missing.output
    redis_server.stop()
    try:
        down = CliRunner().invoke(main, ["threads"], env=env)
    finally:
        redis_server.start()
    assert down.exit_code == 1
    assert f"exai: cannot read the conversation store redis://127.0.0.1:{redis_server.port}/0: " in down.output


# -- the daemon on a Redis store ------------------------------------------------------------


async def test_the_daemon_survives_a_redis_outage_and_recovers_by_itself(
    daemons: Any, redis_url: str, redis_server: RedisServer
) -> None:
    bound = await daemons.start(store_url=redis_url)
    where = f"the conversation store redis://127.0.0.1:{redis_server.port}/0 is unavailable: "
    async with httpx.AsyncClient(base_url=bound.monitor_url) as http, connect(bound.url) as client:
        first = await client.call_tool("chat", {"prompt": "hello"})
        assert not first.is_error
        cid = first.meta["continuation_id"]
        assert (await http.get("/readyz")).status_code == 200
        redis_server.stop()
        try:
            with trio.fail_after(5):
                while (ready := await http.get("/readyz")).status_code != 503:  # noqa: ASYNC110 - polled over HTTP
                    await trio.sleep(0.05)
            assert ready.json() == {"ready": False, "reason": ready.json()["reason"]}
            assert ready.json()["reason"].startswith(where)
            down = await client.call_tool("chat", {"prompt": "again", "continuation_id": cid})
            assert down.is_error and down.text.startswith(where), down.text
            assert (await http.get("/healthz")).status_code == 200  # the daemon is up
        finally:
            redis_server.start()  # empty: the server keeps nothing (--save '')
        with trio.fail_after(5):
            while (await http.get("/readyz")).status_code != 200:  # noqa: ASYNC110 - polled over HTTP
                await trio.sleep(0.05)
        back = await client.call_tool("chat", {"prompt": "after"})
        assert not back.is_error
        again = await client.call_tool("chat", {"prompt": "go on", "continuation_id": back.meta["continuation_id"]})
        assert not again.is_error and "go on" in again.text


# -- provider slots shared by replicas ------------------------------------------------------


async def test_two_replicas_never_exceed_the_provider_ceiling_together(
    daemons: Any, simulator: Any, redis_url: str
) -> None:
    replicas = [await daemons.start(store_url=redis_url, kimi_max_inflight=2) for _ in range(2)]
    results: list[Any] = []

    async def call(bound: Any, n: int) -> None:
        async with connect(bound.url) as client:
            results.append(await client.call_tool("chat", {"prompt": f"q{n}\n#sim {{\"latency_s\": 0.2}}"}))

    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(call, replicas[n % 2], n)
    assert len(results) == 8 and not any(r.is_error for r in results), [r.text for r in results if r.is_error]
    assert simulator.stats.max_inflight == 2  # each replica alone would have let 2 through


async def test_a_killed_replicas_slots_free_themselves_within_the_lease(
    tmp_path: Path, redis_url: str
) -> None:
    lease_s = 1.0
    holder = f"""
import sys, trio
from exai.config import Settings
from exai.store import open_store

async def main():
    settings = Settings(state_dir={str(tmp_path)!r}, store_url={redis_url!r}, replica_lease_secs={lease_s})
    async with open_store(settings) as store:
        async with store.provider_slot("kimi", 2), store.provider_slot("kimi", 2):
            print("held", flush=True)
            await trio.sleep(60)

trio.run(main)
"""
    process = await trio.lowlevel.open_process([sys.executable, "-c", holder], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        with trio.fail_after(20):
            assert (await process.stdout.receive_some(100)).startswith(b"held")
        settings = Settings(state_dir=tmp_path, store_url=redis_url, replica_lease_secs=lease_s)
        async with open_store(settings) as store:
            await trio.sleep(lease_s * 1.5)  # renewed meanwhile: both slots stay taken
            with trio.move_on_after(0.2) as waited:
                async with store.provider_slot("kimi", 2):
                    pass
            assert waited.cancelled_caught
            process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            with trio.fail_after(lease_s + 2):
                async with store.provider_slot("kimi", 2), store.provider_slot("kimi", 2):
                    freed_after = time.monotonic() - killed
            assert freed_after <= lease_s + 0.5
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()


async def test_a_released_or_cancelled_slot_is_free_at_once(tmp_path: Path, redis_url: str, redis_server: RedisServer) -> None:
    settings = Settings(state_dir=tmp_path, store_url=redis_url, replica_lease_secs=30)
    async with open_store(settings) as store:
        async with store.provider_slot("glm", 1):
            assert redis_server.command("ZCARD", "exai:slots:glm") == b":1"
        with trio.move_on_after(0.1):
            async with store.provider_slot("glm", 1):
                await trio.sleep(10)  # cancelled while holding it
        assert redis_server.command("ZCARD", "exai:slots:glm") == b":0"
        with trio.fail_after(1):
            async with store.provider_slot("glm", 1):
                pass


# -- the replica registry -------------------------------------------------------------------


async def test_a_single_daemon_is_its_own_only_replica(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http:
        status = (await http.get("/api/status")).json()
    me = status["replica"]
    assert set(me) == {"id", "started"} and me["started"] == pytest.approx(time.time(), abs=60)
    assert status["replicas"] == [{"id": me["id"], "started": me["started"], "inflight": 0, "tasks": 0}]


async def test_replicas_on_one_redis_list_each_other_until_one_stops(daemons: Any, redis_url: str) -> None:
    one = await daemons.start(store_url=redis_url, replica_lease_secs=1.0)
    two = await daemons.start(store_url=redis_url, replica_lease_secs=1.0)
    ids = {one.daemon.replica_id, two.daemon.replica_id}
    async with httpx.AsyncClient(base_url=one.monitor_url) as http:

        async def listed() -> set[str]:
            return {r["id"] for r in (await http.get("/api/status")).json()["replicas"]}

        with trio.fail_after(5):
            while await listed() != ids:  # noqa: ASYNC110 - polled over HTTP
                await trio.sleep(0.05)
        status = (await http.get("/api/status")).json()
        assert [r["started"] for r in status["replicas"]] == sorted(r["started"] for r in status["replicas"])
        assert all(set(r) == {"id", "started", "inflight", "tasks"} for r in status["replicas"])
        two.daemon.request_shutdown()
        with trio.fail_after(5):
            await two.daemon.stopped.wait()
        stopped = time.monotonic()
        with trio.fail_after(5):
            while await listed() != {one.daemon.replica_id}:  # noqa: ASYNC110 - polled over HTTP
                await trio.sleep(0.05)
        assert time.monotonic() - stopped <= 1.0 + 1.0  # its lease, and one announcement of ours


# -- request rates shared by replicas -------------------------------------------------------


async def test_two_replicas_share_one_request_rate(daemons: Any, redis_url: str) -> None:
    """EXAI_KIMI_RPM=60 (one request a second, no burst) across two replicas: three calls at
    once go a second apart (alone, each replica would have sent its first at once)."""
    replicas = [await daemons.start(store_url=redis_url, kimi_rpm=60) for _ in range(2)]
    done: list[float] = []

    async def call(bound: Any, n: int) -> None:
        async with connect(bound.url) as client:
            result = await client.call_tool("chat", {"prompt": f"q{n}"})
        assert not result.is_error, result.text
        done.append(time.monotonic())

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(call, replicas[n % 2], n)
    done.sort()
    assert done[1] - done[0] >= 0.8 and done[2] - done[0] >= 1.8, [t - done[0] for t in done]


async def test_a_shared_turn_past_the_deadline_is_refused_without_booking(tmp_path: Path, redis_url: str) -> None:
    from exai.providers.base import ProviderError

    async with open_store(settings_for(tmp_path, redis_url)) as one, open_store(settings_for(tmp_path, redis_url)) as two:
        first = one.rate_limiter("kimi", 60, env_var="EXAI_KIMI_RPM")
        second = two.rate_limiter("kimi", 60, env_var="EXAI_KIMI_RPM")
        await first.wait_turn(trio.current_time() + 0.5)  # free: at once
        with pytest.raises(ProviderError) as refused:
            await second.wait_turn(trio.current_time() + 0.5)  # the next turn is a second away
        assert refused.value.kind == "rate_limited"
        assert "kimi requests are limited to 60 per minute (EXAI_KIMI_RPM); this call would have to wait 1.0 s" in str(refused.value)
        start = trio.current_time()
        await second.wait_turn(start + 5)  # nothing was booked by the refusal: this is the next turn
        assert 0.8 <= trio.current_time() - start <= 1.2


# -- circuits shared by replicas ------------------------------------------------------------


async def test_a_circuit_opened_by_one_replica_is_open_on_the_other(
    daemons: Any, simulator: Any, redis_url: str
) -> None:
    settings = {"store_url": redis_url, "circuit_failures": 2, "circuit_cooldown_secs": 30, "provider_max_retries": 0}
    one, two = [await daemons.start(**settings) for _ in range(2)]
    failing = '#sim {"status": 503}'
    async with connect(one.url) as client:
        for n in range(2):
            assert (await client.call_tool("chat", {"prompt": f"q{n}\n{failing}"})).is_error
    assert one.daemon.services.gateway.routes["kimi"].circuit.state == "open"
    sent = simulator.stats.requests_total
    with trio.fail_after(3):  # published and read back within two announcements (0.5 s each)
        while two.daemon.services.gateway.routes["kimi"].circuit.state != "open":  # noqa: ASYNC110 - state set by the store watcher
            await trio.sleep(0.05)
    async with connect(two.url) as client:
        refused = await client.call_tool("chat", {"prompt": "fine"})
    assert refused.is_error and "stopped sending it requests" in refused.text, refused.text
    assert simulator.stats.requests_total == sent  # refused at once, no request sent
    left = two.daemon.services.gateway.routes["kimi"].circuit.probe_in_s()
    assert left is not None and 25 <= left <= 30  # the first opener's cooldown, not a fresh one
    glm = two.daemon.services.gateway.routes["glm"].circuit.state
    assert glm == "closed"


async def test_a_task_run_by_one_replica_is_read_on_the_other(daemons: Any, redis_url: str) -> None:
    """Tasks live in Redis: the other replica gets the task and its result, and `exai tasks`
    reads it there too."""
    one, two = [await daemons.start(store_url=redis_url) for _ in range(2)]
    async with connect(one.url, era="legacy") as first, connect(two.url, era="legacy") as second:
        created = await first.request(
            "tools/call", {"name": "chat", "arguments": {"prompt": "hello"}, "task": {"ttl": 60_000}}
        )
        task_id = created["task"]["taskId"]
        result = await first.request("tasks/result", {"taskId": task_id})
        assert result["isError"] is False
        got = await second.request("tasks/get", {"taskId": task_id})
        assert got["status"] == "completed"
        again = await second.request("tasks/result", {"taskId": task_id})
        assert again["content"] == result["content"]
    where = {"EXAI_STATE_DIR": str(one.daemon.settings.state_dir), "EXAI_STORE_URL": redis_url}
    listed = CliRunner().invoke(main, ["tasks", "--json"], env=where)
    assert listed.exit_code == 0, listed.output
    assert [(row["id"], row["status"]) for row in json.loads(listed.output)] == [(task_id, "completed")]
