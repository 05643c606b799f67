"""Conversation threads: the store on its own (a fake clock for time), then through the
daemon over real WebSockets (restart, second connection, concurrent calls on one thread),
then the `exai threads` / `exai thread ID` commands.

Rules: every test of the store's behaviour takes `store_settings`, which runs it once per
backend (`BACKENDS`), so a new backend inherits them all. Tests of how the SQLite backend does
its work (its file, WAL, locks, worker threads, schema migration) are in the section marked
"SQLite backend only" and use `sqlite_settings`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
import trio
from click.testing import CliRunner
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from support import eventually

from exai.cli import main
from exai.client import RpcError, connect
from exai.config import Settings
from exai.store import (
    NewTask,
    StoreUnavailable,
    TaskNotFound,
    TaskStatus,
    ThreadNotFound,
    TooManyTasks,
    Turn,
    open_reader,
    open_store,
    read_thread,
)
from exai.store.sqlite import CHECKPOINT_EVERY, DB_NAME, SCHEMA_VERSION, SqliteStore, ThreadRows
from exai.store.tasks import LEASE_LOST
from exai.tools.chat import SYSTEM

HOUR = 3600.0


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# Backend -> the EXAI_STORE_URL of a fresh, empty store for one test (given the test's request).
BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "sqlite": lambda request, tmp_path: f"sqlite:///{tmp_path}/state/{DB_NAME}",
    "redis": lambda request, tmp_path: str(request.getfixturevalue("redis_url")),
}


def settings_for(
    tmp_path: Path, store_url: str = "", *, ttl_hours: float = 1.0, max_turns: int = 40
) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        store_url=store_url,
        conversation_ttl_hours=ttl_hours,
        max_conversation_turns=max_turns,
    )


class StoreSettings(Protocol):
    def __call__(self, *, ttl_hours: float = ..., max_turns: int = ...) -> Settings: ...


@pytest.fixture(params=list(BACKENDS))
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSettings:
    """Settings of a fresh store of each backend in turn."""
    url = BACKENDS[request.param](request, tmp_path)

    def make(*, ttl_hours: float = 1.0, max_turns: int = 40) -> Settings:
        return settings_for(tmp_path, url, ttl_hours=ttl_hours, max_turns=max_turns)

    return make


def sqlite_settings(tmp_path: Path, *, ttl_hours: float = 1.0) -> Settings:
    """The default store: the SQLite file under the state directory."""
    return settings_for(tmp_path, ttl_hours=ttl_hours)


def db_path(settings: Settings) -> Path:
    return settings.store_location.path


def pair(n: int, tool: str = "chat") -> list[Turn]:
    return [Turn("user", f"question {n}", tool), Turn("assistant", f"answer {n}", tool)]


# -- the store, every backend ------------------------------------------------------------


async def test_new_thread_round_trip_and_both_id_spellings(store_settings: StoreSettings) -> None:
    async with open_store(store_settings()) as store:
        first = await store.append(
            None, "debug", [Turn("user", "step 1", "debug", step_number=1, files=["/r/a.py"])],
            findings=["f1"], files=["/r/a.py"], model="glm-4.6",
        )  # fmt: skip
        assert first.dropped_now == 0
        assert str(uuid.UUID(first.thread_id)) == first.thread_id  # a hyphenated UUID
        thread = await store.get(first.thread_id)
        assert thread.id == first.thread_id and thread.tool == "debug"
        assert [(t.role, t.content, t.step_number, t.files) for t in thread.turns] == [
            ("user", "step 1", 1, ["/r/a.py"])
        ]
        assert (thread.findings, thread.files, thread.model) == (["f1"], ["/r/a.py"], "glm-4.6")
        # The hex spelling names the same thread; another tool may continue it.
        hex_id = uuid.UUID(first.thread_id).hex
        again = await store.append(
            hex_id, "chat", pair(2), findings=["f2"], files=["/r/b.py", "/r/a.py", "/r/b.py"]
        )
        assert again.thread_id == first.thread_id
        thread = await store.get(hex_id.upper())
        assert [t.content for t in thread.turns] == ["step 1", "question 2", "answer 2"]
        assert [t.tool for t in thread.turns] == ["debug", "chat", "chat"]
        assert thread.findings == ["f1", "f2"]
        assert thread.files == ["/r/a.py", "/r/b.py"]  # de-duplicated, in order
        assert thread.model == "glm-4.6"  # no model given: the last one stays
        assert thread.tool == "debug"  # the tool that started it


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        "",
        "x" * 100_000,
        "' OR 1=1 --",
        "00000000-0000-0000-0000-00000000000g",
        "{12345678-1234-5678-1234-567812345678}",  # uuid.UUID accepts braces; a thread id does not
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "12345678-1234-5678-1234-5678123456789",
        "é" * 32,
        "\x00" * 32,
    ],
)
async def test_a_bad_id_is_thread_not_found_and_changes_nothing(store_settings: StoreSettings, bad: str) -> None:
    async with open_store(store_settings()) as store:
        with pytest.raises(ThreadNotFound) as got:
            await store.get(bad)
        assert got.value.thread_id == bad
        assert str(got.value).startswith("continuation_id '")
        assert str(got.value).endswith("' is unknown or expired; start a new thread")
        assert len(str(got.value)) < 200  # an absurd id is shortened, not echoed whole
        with pytest.raises(ThreadNotFound):
            await store.append(bad, "chat", pair(1))
        async with store.hold(bad):  # holding any string is harmless
            pass
        assert await store.list() == []


async def test_thread_not_found_message_names_the_id(store_settings: StoreSettings) -> None:
    unknown = str(uuid.uuid4())
    async with open_store(store_settings()) as store:
        with pytest.raises(ThreadNotFound) as got:
            await store.get(unknown)
        assert (
            str(got.value)
            == f"continuation_id '{unknown}' is unknown or expired; start a new thread"
        )
        # Appending to an unknown (valid) id creates nothing.
        with pytest.raises(ThreadNotFound):
            await store.append(unknown, "chat", pair(1))
        assert await store.list() == []


async def test_ttl_expires_threads_and_use_refreshes_it(store_settings: StoreSettings) -> None:
    clock = FakeClock()
    async with open_store(store_settings(ttl_hours=1), clock=clock) as store:
        kept = (await store.append(None, "chat", pair(1))).thread_id
        lapsed = (await store.append(None, "chat", pair(2))).thread_id
        clock.now += 0.9 * HOUR
        touched = await store.get(kept)  # use refreshes the TTL
        assert touched.updated == clock.now and touched.expires == clock.now + HOUR
        clock.now += 0.2 * HOUR  # 1.1 h after creation, 0.2 h after the last use of `kept`
        with pytest.raises(ThreadNotFound):
            await store.get(lapsed)
        with pytest.raises(ThreadNotFound):
            await store.append(lapsed, "chat", pair(3))
        listed = await store.list()
        assert [t.id for t in listed] == [kept]
        assert listed[0].expires == pytest.approx(clock.now - 0.2 * HOUR + HOUR)
        assert await store.expire() == 1
        assert await store.expire() == 0
        clock.now += 0.7 * HOUR  # within an hour of the last append
        await store.append(kept, "chat", pair(3))
        clock.now += 0.9 * HOUR
        assert len((await store.get(kept)).turns) == 4
        clock.now += 1.01 * HOUR
        with pytest.raises(ThreadNotFound):
            await store.get(kept)
        assert await store.list() == []


async def test_turn_cap_keeps_the_newest_and_counts_the_dropped(store_settings: StoreSettings) -> None:
    async with open_store(store_settings(max_turns=5)) as store:
        first = await store.append(None, "chat", pair(1))
        tid = first.thread_id
        assert (await store.append(tid, "chat", pair(2))).dropped_now == 0
        assert (await store.append(tid, "chat", pair(3))).dropped_now == 1
        assert (await store.append(tid, "chat", pair(4) + pair(5))).dropped_now == 4
        thread = await store.get(tid)
        assert thread.dropped == 5
        assert [t.content for t in thread.turns] == [
            "answer 3", "question 4", "answer 4", "question 5", "answer 5",
        ]  # fmt: skip
        assert (await store.list())[0].dropped == 5


async def test_threads_survive_reopening(store_settings: StoreSettings) -> None:
    settings = store_settings()
    async with open_store(settings) as store:
        tid = (await store.append(None, "chat", pair(1), findings=["f"], model="m")).thread_id
    async with open_store(settings) as store:
        thread = await store.get(tid)
        assert [t.content for t in thread.turns] == ["question 1", "answer 1"]
        assert (thread.findings, thread.model) == (["f"], "m")


async def test_a_turns_usage_survives_reopening(store_settings: StoreSettings) -> None:
    settings = store_settings()
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "cached_tokens": 2, "cost_usd": 0.000017}
    async with open_store(settings) as store:
        turns = [Turn("user", "q", "chat"), Turn("assistant", "a", "chat", model="m", usage=usage)]
        tid = (await store.append(None, "chat", turns)).thread_id
    async with open_store(settings) as store:
        thread = await store.get(tid)
    assert [t.usage for t in thread.turns] == [None, usage]


async def test_hold_serialises_one_thread_first_come_first_served(
    store_settings: StoreSettings, autojump_clock: trio.abc.Clock
) -> None:
    async with open_store(store_settings()) as store:
        # A hold needs no stored thread: no I/O here, which the jumping clock would outrun.
        tid, other = str(uuid.uuid4()), str(uuid.uuid4())
        events: list[str] = []

        async def use(name: str, thread_id: str | None, delay: float) -> None:
            await trio.sleep(delay)
            async with store.hold(thread_id):
                events.append(f"{name} in")
                await trio.sleep(1)
                events.append(f"{name} out")

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(use, "a", tid, 0)
            nursery.start_soon(use, "b", uuid.UUID(tid).hex, 0.1)  # same thread, hex spelling
            nursery.start_soon(use, "c", tid, 0.2)
            nursery.start_soon(use, "x", other, 0.3)  # another thread does not wait
            nursery.start_soon(use, "n", None, 0.3)  # no thread holds nothing
        assert events.index("x in") < events.index("a out")
        assert events.index("n in") < events.index("a out")
        same = [e for e in events if e[0] in "abc"]
        assert same == ["a in", "a out", "b in", "b out", "c in", "c out"]
        assert trio.current_time() - start == pytest.approx(3)


async def test_waiting_for_a_hold_is_cancellable(
    store_settings: StoreSettings, autojump_clock: trio.abc.Clock
) -> None:
    async with open_store(store_settings()) as store:
        tid = str(uuid.uuid4())  # no stored thread, no I/O (see above)
        got_in: list[str] = []

        async def second() -> None:
            with trio.move_on_after(2) as waited:
                async with store.hold(tid):
                    got_in.append("second")
            assert waited.cancelled_caught

        async with store.hold(tid):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(second)
                await trio.sleep(1)
            assert not got_in
        with trio.fail_after(1):  # the cancelled waiter is no longer in the queue
            async with store.hold(tid):
                pass


async def test_held_read_modify_write_never_interleaves(store_settings: StoreSettings) -> None:
    """Each call reads the thread, thinks, then appends what it read: under hold none is lost."""
    async with open_store(store_settings()) as store:
        tid = (await store.append(None, "chat", [])).thread_id

        async def call() -> None:
            async with store.hold(tid):
                seen = len((await store.get(tid)).turns)
                await trio.sleep(0.01)  # another call would read the same length here
                await store.append(tid, "chat", [Turn("user", str(seen), "chat")])

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(call)
        thread = await store.get(tid)
        assert [t.content for t in thread.turns] == [str(n) for n in range(8)]


async def test_count_is_the_number_of_live_threads(store_settings: StoreSettings) -> None:
    clock = FakeClock()
    async with open_store(store_settings(ttl_hours=1), clock=clock) as store:
        assert await store.count() == 0
        await store.append(None, "chat", [Turn("user", "a", "chat")])
        await store.append(None, "chat", [Turn("user", "b", "chat")])
        assert await store.count() == 2
        clock.now += HOUR + 1
        assert await store.count() == 0


# -- tasks, every backend ----------------------------------------------------------------


def new_task(task_id: str = "t1", *, owner: str = "alice", ttl_s: float = HOUR, lease_s: float = 60.0, runner: str = "r1") -> NewTask:
    return NewTask(id=task_id, owner=owner, tool="chat", ttl_s=ttl_s, runner=runner, lease_s=lease_s, message="queued")


async def test_a_task_round_trip_from_working_to_completed(store_settings: StoreSettings) -> None:
    clock = FakeClock()
    async with open_store(store_settings(), clock=clock) as store:
        created = await store.create_task(new_task(), max_unfinished=4)
        assert (created.status, created.created, created.expires) == (TaskStatus.WORKING, clock.now, clock.now + HOUR)
        clock.now += 5
        await store.update_task("t1", "running: 12 tokens")
        seen = await store.task("t1", "alice")
        assert (seen.status, seen.message, seen.updated) == (TaskStatus.WORKING, "running: 12 tokens", clock.now)
        result = {"result": {"content": [{"type": "text", "text": "hi"}], "isError": False}}
        done = await store.finish_task("t1", TaskStatus.COMPLETED, "done", result)
        assert (done.status, done.outcome, done.message) == (TaskStatus.COMPLETED, result, "done")
        # A finished task keeps its status, message and outcome whatever comes after.
        again = await store.finish_task("t1", TaskStatus.CANCELLED, "too late", None)
        await store.update_task("t1", "late progress")
        assert again == done == await store.task("t1", None)
    async with open_store(store_settings(), clock=clock) as store:
        assert await store.task("t1", "alice") == done  # durable


async def test_only_its_owner_sees_a_task(store_settings: StoreSettings) -> None:
    async with open_store(store_settings(), clock=FakeClock()) as store:
        await store.create_task(new_task("a1", owner="alice"), max_unfinished=4)
        await store.create_task(new_task("b1", owner="bob"), max_unfinished=4)
        with pytest.raises(TaskNotFound):
            await store.task("a1", "bob")
        with pytest.raises(TaskNotFound) as raised:
            await store.task("no-such-task", "alice")
        assert "no-such-task" in str(raised.value)
        assert [t.id for t in await store.tasks("alice")] == ["a1"]
        assert sorted(t.id for t in await store.tasks(None)) == ["a1", "b1"]


async def test_tasks_expire_after_their_ttl_and_are_deleted(store_settings: StoreSettings) -> None:
    clock = FakeClock()
    async with open_store(store_settings(), clock=clock) as store:
        await store.create_task(new_task("short", ttl_s=10), max_unfinished=4)
        await store.create_task(new_task("long", ttl_s=100), max_unfinished=4)
        clock.now += 10
        assert (await store.task("short", "alice")).id == "short"  # kept for its whole ttl
        clock.now += 1
        with pytest.raises(TaskNotFound):
            await store.task("short", "alice")
        with pytest.raises(TaskNotFound):
            await store.finish_task("short", TaskStatus.COMPLETED, "done", None)
        assert [t.id for t in await store.tasks(None)] == ["long"]
        assert await store.expire_tasks() == 1
        assert await store.expire_tasks() == 0
        assert (await store.count_tasks())[TaskStatus.WORKING] == 1


async def test_at_most_max_unfinished_tasks(store_settings: StoreSettings) -> None:
    clock = FakeClock()
    async with open_store(store_settings(), clock=clock) as store:
        await store.create_task(new_task("t1"), max_unfinished=2)
        await store.create_task(new_task("t2"), max_unfinished=2)
        with pytest.raises(TooManyTasks) as raised:
            await store.create_task(new_task("t3"), max_unfinished=2)
        assert "EXAI_MAX_TASKS=2" in str(raised.value)
        with pytest.raises(TaskNotFound):
            await store.task("t3", "alice")  # nothing of it was kept
        await store.finish_task("t1", TaskStatus.FAILED, "boom", None)
        await store.create_task(new_task("t3"), max_unfinished=2)  # a finished one frees its place


async def test_a_working_task_whose_lease_runs_out_reads_failed(store_settings: StoreSettings) -> None:
    clock = FakeClock()
    async with open_store(store_settings(), clock=clock) as store:
        await store.create_task(new_task("kept", lease_s=10), max_unfinished=1)
        await store.create_task(new_task("other", lease_s=10, runner="r2"), max_unfinished=2)
        clock.now += 8
        assert await store.renew_tasks("r1", 10) == 1
        clock.now += 8  # r1 renewed, r2 did not
        assert (await store.task("kept", None)).status is TaskStatus.WORKING
        lost = await store.task("other", None)
        assert (lost.status, lost.message) == (TaskStatus.FAILED, LEASE_LOST)
        assert lost.outcome == {"error": {"code": -32603, "message": LEASE_LOST}}
        counts = await store.count_tasks()
        assert (counts[TaskStatus.WORKING], counts[TaskStatus.FAILED]) == (1, 1)
        # A lost task holds no place among the unfinished.
        await store.create_task(new_task("new"), max_unfinished=2)


async def test_fail_tasks_fails_only_that_runner_s_working_tasks(store_settings: StoreSettings) -> None:
    async with open_store(store_settings(), clock=FakeClock()) as store:
        await store.create_task(new_task("w1"), max_unfinished=9)
        await store.create_task(new_task("w2", runner="r2"), max_unfinished=9)
        await store.create_task(new_task("done"), max_unfinished=9)
        await store.finish_task("done", TaskStatus.COMPLETED, "ok", {"result": {}})
        assert await store.fail_tasks("r1", "the daemon stopped") == 1
        failed = await store.task("w1", None)
        assert (failed.status, failed.message) == (TaskStatus.FAILED, "the daemon stopped")
        assert failed.outcome == {"error": {"code": -32603, "message": "the daemon stopped"}}
        assert (await store.task("w2", None)).status is TaskStatus.WORKING
        assert (await store.task("done", None)).status is TaskStatus.COMPLETED


async def test_tasks_page_oldest_first_after_a_cursor(store_settings: StoreSettings) -> None:
    clock = FakeClock()
    async with open_store(store_settings(), clock=clock) as store:
        for n in range(5):
            await store.create_task(new_task(f"t{n}"), max_unfinished=9)
            clock.now += 1 if n != 2 else 0  # two tasks created at the same time
        first = await store.tasks("alice", limit=2)
        assert [t.id for t in first] == ["t0", "t1"]
        rest = await store.tasks("alice", after=(first[-1].created, first[-1].id), limit=10)
        assert [t.id for t in rest] == ["t2", "t3", "t4"]



def test_the_reader_sees_live_tasks_newest_first(store_settings: StoreSettings) -> None:
    """`exai tasks` / `exai task ID`: anyone's live tasks, a lost one failed, an expired one never."""
    settings = store_settings()
    clock = FakeClock(time.time() - 100)

    async def make() -> None:
        async with open_store(settings, clock=clock) as store:
            await store.create_task(new_task("expired", ttl_s=50), max_unfinished=9)
            await store.create_task(new_task("lost", owner="bob", lease_s=10), max_unfinished=9)
            clock.now += 1
            await store.create_task(new_task("done"), max_unfinished=9)
            await store.finish_task("done", TaskStatus.COMPLETED, "ok", {"result": {}})
            clock.now += 1
            await store.create_task(new_task("live", lease_s=HOUR), max_unfinished=9)

    trio.run(make)
    reader = open_reader(settings)
    assert [(t.id, t.status) for t in reader.tasks()] == [
        ("live", TaskStatus.WORKING), ("done", TaskStatus.COMPLETED), ("lost", TaskStatus.FAILED)
    ]  # fmt: skip
    lost = reader.task("lost")
    assert (lost.owner, lost.message) == ("bob", LEASE_LOST)
    assert reader.task("done").outcome == {"result": {}}
    for missing in ("expired", "no-such-task"):
        with pytest.raises(TaskNotFound):
            reader.task(missing)

# -- SQLite backend only: its file, WAL, locks, worker threads, schema -------------------


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper())))
def test_any_text_as_a_thread_id_is_found_or_thread_not_found(thread_id: str) -> None:
    """A continuation_id comes from outside: whatever it is, no SQLite error escapes."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.row_factory = sqlite3.Row
    rows = ThreadRows(db, ttl_s=HOUR, max_turns=4, clock=FakeClock())
    rows.migrate()
    known = rows.append(None, "chat", pair(1), (), (), None).thread_id
    for attempt in (
        lambda: rows.get(thread_id, touch=True),
        lambda: rows.append(thread_id, "chat", [], (), (), None),
    ):
        try:
            found = attempt()
        except ThreadNotFound as exc:
            assert exc.thread_id == thread_id
        else:
            assert uuid.UUID(thread_id) == uuid.UUID(known)
            assert getattr(found, "id", getattr(found, "thread_id", None)) == known
    db.close()


async def test_starting_a_thread_sweeps_expired_ones(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = sqlite_settings(tmp_path, ttl_hours=1)
    async with open_store(settings, clock=clock) as store:
        old = (await store.append(None, "chat", pair(1))).thread_id
        clock.now += 2 * HOUR
        new = (await store.append(None, "chat", pair(2))).thread_id
    ids = [row[0] for row in sqlite3.connect(db_path(settings)).execute("SELECT id FROM threads")]
    assert ids == [new] and old not in ids


async def test_the_sweep_deletes_a_batch_at_a_time_at_most_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exai.store import sqlite as store_module

    monkeypatch.setattr(store_module, "SWEEP_BATCH", 2)
    clock = FakeClock()
    settings = sqlite_settings(tmp_path, ttl_hours=1)

    def stored() -> int:
        return int(sqlite3.connect(db_path(settings)).execute("SELECT COUNT(*) FROM threads").fetchone()[0])

    async with open_store(settings, clock=clock) as store:
        for i in range(3):
            await store.append(None, "chat", pair(i))
            clock.now += 2
        clock.now += 2 * HOUR
        await store.append(None, "chat", pair(3))  # the two oldest of the three expired go
        assert stored() == 2
        await store.append(None, "chat", pair(4))  # within the interval: no sweep
        assert stored() == 3
        clock.now += store_module.SWEEP_INTERVAL_S
        await store.append(None, "chat", pair(5))  # the last expired one goes
        assert stored() == 3
        assert len(await store.list()) == 3


async def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    async with open_store(settings) as store:
        assert isinstance(store, SqliteStore)
    assert db_path(settings) == tmp_path / "state" / DB_NAME  # the default: nothing moved
    assert sqlite3.connect(db_path(settings)).execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_holds_are_freed_when_unused(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with open_store(sqlite_settings(tmp_path)) as store:
        assert isinstance(store, SqliteStore)
        tid = (await store.append(None, "chat", pair(1))).thread_id

        async def second() -> None:
            with trio.move_on_after(2):
                async with store.hold(tid):
                    pass  # pragma: no cover

        async with store.hold(tid):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(second)
                await trio.sleep(1)
                assert store._holds[uuid.UUID(tid).hex].users == 2
            assert store._holds[uuid.UUID(tid).hex].users == 1
        assert store._holds == {}


async def test_a_store_url_elsewhere_is_used(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path}/other/threads.db")
    async with open_store(settings) as store:
        tid = (await store.append(None, "chat", pair(1))).thread_id
    assert (tmp_path / "other" / "threads.db").is_file()
    assert not (tmp_path / "state").exists()
    assert [t.content for t in read_thread(settings, tid).turns] == ["question 1", "answer 1"]
    (tmp_path / "blocked").write_text("a file where a directory should be")
    with pytest.raises(StoreUnavailable, match=r"blocked/threads\.db \(EXAI_STORE_URL\): "):
        async with open_store(settings_for(tmp_path, f"sqlite:///{tmp_path}/blocked/threads.db")):
            pass  # pragma: no cover


def first_schema_db(
    tmp_path: Path, rows: list[tuple[str, str, float, list[dict[str, str]]]]
) -> None:
    """A database as the first store wrote it: threads(id, tool, updated, turns)."""
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / DB_NAME)
    db.execute(
        "CREATE TABLE threads (id TEXT PRIMARY KEY, tool TEXT NOT NULL, updated REAL NOT NULL, turns TEXT NOT NULL)"
    )
    db.executemany(
        "INSERT INTO threads VALUES (?, ?, ?, ?)",
        [(tid, tool, updated, json.dumps(turns)) for tid, tool, updated, turns in rows],
    )
    db.commit()
    db.close()


async def test_migrates_a_first_schema_database_without_losing_it(tmp_path: Path) -> None:
    now = time.time()
    old_id = uuid.uuid4().hex  # the first store wrote hex ids
    stale_id = uuid.uuid4().hex
    old_turns = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    first_schema_db(
        tmp_path,
        [(old_id, "chat", now - 60, old_turns), (stale_id, "chat", now - 2 * HOUR, old_turns)],
    )
    settings = sqlite_settings(tmp_path)
    # The CLI reads an unmigrated file too.
    assert [t.content for t in read_thread(settings, old_id).turns] == ["hello", "hi there"]
    async with open_store(settings) as store:
        thread = await store.get(str(uuid.UUID(old_id)))  # either spelling finds it
        assert thread.id == old_id
        assert [(t.role, t.content, t.tool) for t in thread.turns] == [
            ("user", "hello", "chat"), ("assistant", "hi there", "chat"),
        ]  # fmt: skip
        assert (
            thread.created == pytest.approx(now - 60) and thread.turns[0].created == thread.created
        )
        assert (thread.findings, thread.files, thread.model, thread.dropped) == ([], [], None, 0)
        appended = await store.append(old_id, "debug", pair(2, "debug"), findings=["new"])
        assert appended.thread_id == old_id
        assert [t.id for t in await store.list()] == [old_id]  # the expired one was removed
    db = sqlite3.connect(db_path(settings))
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("SELECT COUNT(*) FROM threads").fetchone() == (1,)
    # Opening an up-to-date store again changes nothing.
    async with open_store(settings) as store:
        thread = await store.get(old_id)
        assert [t.content for t in thread.turns] == ["hello", "hi there", "question 2", "answer 2"]
        assert thread.findings == ["new"]


async def test_an_unusable_store_is_a_clear_error(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    settings.state_dir.mkdir()
    (settings.state_dir / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(
        StoreUnavailable, match=r"conversations\.sqlite3 \(EXAI_STATE_DIR\): file is not a database"
    ):
        async with open_store(settings):
            pass  # pragma: no cover
    blocked = sqlite_settings(tmp_path / "file")
    (tmp_path / "file").write_text("a file where the state directory should be")
    with pytest.raises(StoreUnavailable, match="cannot open the conversation store"):
        async with open_store(blocked):
            pass  # pragma: no cover


async def test_listing_runs_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow SQLite listing does not hold the event loop: another task keeps ticking."""
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real_list = ThreadRows.list

    def slow_list(self: ThreadRows) -> Any:
        seen.append(threading.get_ident())
        time.sleep(0.3)
        return real_list(self)

    async with open_store(sqlite_settings(tmp_path)) as store:
        await store.append(None, "chat", pair(1))
        monkeypatch.setattr(ThreadRows, "list", slow_list)
        ticks = 0
        async with trio.open_nursery() as nursery:

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await trio.sleep(0.01)
                    ticks += 1

            nursery.start_soon(tick)
            assert len(await store.list()) == 1
            nursery.cancel_scope.cancel()
    assert seen and seen[0] != loop_thread
    assert ticks >= 10  # 0.3 s of a blocked loop would give none


async def test_a_call_s_write_waits_for_the_lock_in_a_worker_thread(tmp_path: Path) -> None:
    """Another process holding the write lock: the write waits for it in a worker thread, the
    event loop goes on, and the write lands once the lock is free."""
    settings = sqlite_settings(tmp_path)
    async with open_store(settings) as store:
        first = await store.append(None, "chat", pair(1))
        other = sqlite3.connect(db_path(settings), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # what a second daemon mid-write holds
        ticks = 0
        written: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await trio.sleep(0.01)
                    ticks += 1

            async def write() -> None:
                written.append(await store.append(first.thread_id, "chat", pair(2)))
                written.append(await store.get(first.thread_id))

            nursery.start_soon(tick)
            nursery.start_soon(write)
            await trio.sleep(0.3)
            assert written == []  # still waiting for the lock
            other.execute("COMMIT")
            other.close()
            await eventually(lambda: len(written) == 2, timeout=5, what="the write and the read")
            nursery.cancel_scope.cancel()
        assert ticks >= 10  # 0.3 s of a blocked loop would give none
    thread = read_thread(settings, first.thread_id)
    assert [t.content for t in thread.turns] == ["question 1", "answer 1", "question 2", "answer 2"]


async def test_wal_checkpoints_run_in_a_worker_thread(tmp_path: Path) -> None:
    """No commit on the event loop checkpoints the WAL (that syncs the disk); a worker thread
    does, every CHECKPOINT_EVERY writes, and every write stays readable."""
    settings = sqlite_settings(tmp_path)
    async with open_store(settings) as store:
        assert store._rows.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert store.checkpointer is not None
        ids = [(await store.append(None, "chat", pair(n))).thread_id for n in range(2 * CHECKPOINT_EVERY)]
        checkpointer = store.checkpointer
        await eventually(lambda: checkpointer.done >= 1, timeout=5, what="a WAL checkpoint")
        wal = db_path(settings).with_name(DB_NAME + "-wal")
        assert wal.exists()
    assert not wal.exists()  # the last connection closed checkpointed it and removed it
    assert [t.content for t in read_thread(settings, ids[-1]).turns] == [
        f"question {2 * CHECKPOINT_EVERY - 1}", f"answer {2 * CHECKPOINT_EVERY - 1}"
    ]


# -- through the daemon ------------------------------------------------------------------


def words(text: str) -> int:
    """Tokens as the simulator counts them."""
    return len(text.split())


async def test_a_thread_survives_a_daemon_restart(daemons: Any) -> None:
    first = await daemons.start()
    async with connect(first.url) as client:
        opened = await client.call_tool("chat", {"prompt": "remember the word walrus"})
    assert not opened.is_error, opened.text
    cid = opened.meta["continuation_id"]
    assert str(uuid.UUID(cid)) == cid
    first.daemon.request_shutdown()
    with trio.fail_after(10):
        await first.daemon.stopped.wait()

    second = await daemons.start()  # the same EXAI_STATE_DIR
    assert second.daemon.settings.state_dir == first.daemon.settings.state_dir
    async with connect(second.url) as client:
        continued = await client.call_tool(
            "chat", {"prompt": "which word?", "continuation_id": cid}
        )
    assert not continued.is_error, continued.text
    assert continued.meta["continuation_id"] == cid
    # The provider saw the system prompt, the first exchange, then the new prompt.
    expected = (
        words(SYSTEM)
        + words("remember the word walrus")
        + words(answer(opened))
        + words("which word?")
    )
    assert continued.meta["usage"]["prompt_tokens"] == expected
    turns = read_thread(second.daemon.settings, cid).turns
    assert [t.content for t in turns] == [
        "remember the word walrus",
        answer(opened),
        "which word?",
        answer(continued),
    ]


async def test_a_thread_continues_from_a_second_connection(daemon: Any) -> None:
    async with connect(daemon.url) as one, connect(daemon.url) as two:
        opened = await one.call_tool("chat", {"prompt": "first words"})
        cid = opened.meta["continuation_id"]
        continued = await two.call_tool("chat", {"prompt": "second words", "continuation_id": cid})
        assert not continued.is_error, continued.text
        again = await one.call_tool("chat", {"prompt": "third words", "continuation_id": cid})
        assert not again.is_error, again.text
    thread = read_thread(daemon.daemon.settings, cid)
    assert [t.content for t in thread.turns if t.role == "user"] == [
        "first words",
        "second words",
        "third words",
    ]
    assert thread.model == "kimi-k2-0905-preview"
    assert {t.model for t in thread.turns if t.role == "assistant"} == {"kimi-k2-0905-preview"}


def answer(result: Any) -> str:
    """The model's answer in a chat result: the text before exai's continuation line."""
    text, _, tail = result.text.partition("\n\n[exai] continuation_id: ")
    assert tail.startswith(result.meta["continuation_id"])
    return str(text)


async def test_two_calls_on_one_thread_are_serialised_in_order(daemon: Any, simulator: Any) -> None:
    results: dict[str, Any] = {}
    prompts = {name: f'{name} speaks\n#sim {{"latency_s": 0.3}}' for name in ("first", "second")}
    async with connect(daemon.url) as one, connect(daemon.url) as two:
        cid = (await one.call_tool("chat", {"prompt": "start"})).meta["continuation_id"]

        async def call(client: Any, name: str) -> None:
            args = {"prompt": prompts[name], "continuation_id": cid}
            results[name] = await client.call_tool("chat", args)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, one, "first")
            with trio.fail_after(5):
                await simulator.wait_until(lambda s: s.inflight == 1)
            nursery.start_soon(call, two, "second")
    assert not results["first"].is_error and not results["second"].is_error
    assert simulator.stats.max_inflight == 1  # never two provider requests on one thread at once
    thread = read_thread(daemon.daemon.settings, cid)
    contents = [t.content for t in thread.turns]
    assert contents == [
        "start", "Simulated answer to: start",
        prompts["first"], answer(results["first"]),
        prompts["second"], answer(results["second"]),
    ]  # fmt: skip
    # The second call waited and saw the first one's turns.
    history = words(SYSTEM) + sum(words(c) for c in contents[:4])
    assert results["second"].meta["usage"]["prompt_tokens"] == history + words(prompts["second"])


async def test_waiting_for_a_busy_thread_counts_against_the_deadline(
    daemon: Any, simulator: Any
) -> None:
    async with connect(daemon.url) as one, connect(daemon.url) as two:
        cid = (await one.call_tool("chat", {"prompt": "start"})).meta["continuation_id"]
        slow: list[Any] = []

        async def hold_the_thread() -> None:
            args = {"prompt": 'slow\n#sim {"latency_s": 1.0}', "continuation_id": cid}
            slow.append(await one.call_tool("chat", args))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold_the_thread)
            with trio.fail_after(5):
                await simulator.wait_until(lambda s: s.inflight == 1)
            started = trio.current_time()
            with pytest.raises(RpcError) as timed_out:
                await two.call_tool(
                    "chat", {"prompt": "impatient", "continuation_id": cid}, timeout=0.3
                )
            assert timed_out.value.code == -32001
            assert trio.current_time() - started < 0.9  # it did not wait for the slow call
    assert not slow[0].is_error
    assert simulator.stats.requests_total == 2  # the impatient call never reached the provider
    user_turns = [
        t.content for t in read_thread(daemon.daemon.settings, cid).turns if t.role == "user"
    ]
    assert user_turns == ["start", 'slow\n#sim {"latency_s": 1.0}']


async def test_unknown_thread_is_a_tool_error_naming_it(daemon: Any, simulator: Any) -> None:
    unknown = str(uuid.uuid4())
    async with connect(daemon.url) as client:
        result = await client.call_tool("chat", {"prompt": "x", "continuation_id": unknown})
        huge = await client.call_tool("chat", {"prompt": "x", "continuation_id": "z" * 10_000})
    assert result.is_error
    assert result.text == f"continuation_id '{unknown}' is unknown or expired; start a new thread"
    assert huge.is_error and "unknown or expired" in huge.text and len(huge.text) < 200
    assert simulator.stats.requests_total == 0


async def test_the_result_says_when_old_turns_were_dropped(daemons: Any) -> None:
    bound = await daemons.start(max_conversation_turns=3)
    async with connect(bound.url) as client:
        opened = await client.call_tool("chat", {"prompt": "one"})
        assert "dropped_turns" not in opened.meta
        cid = opened.meta["continuation_id"]
        continued = await client.call_tool("chat", {"prompt": "two", "continuation_id": cid})
    assert not continued.is_error
    assert continued.meta["dropped_turns"] == 1
    assert (
        "1 older turn(s) were dropped" in continued.text
        and "EXAI_MAX_CONVERSATION_TURNS" in continued.text
    )
    thread = read_thread(bound.daemon.settings, cid)
    assert [t.content for t in thread.turns][:2] == ["Simulated answer to: one", "two"]
    assert thread.dropped == 1


# -- exai threads / exai thread ID -------------------------------------------------------


def run_cli(settings: Settings, *args: str, **env: str) -> Any:
    where = {"EXAI_STATE_DIR": str(settings.state_dir), "EXAI_STORE_URL": settings.store_url}
    return CliRunner().invoke(main, list(args), env={**where, **env})

async def test_cli_reads_the_store_while_the_daemon_runs(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        cid = (await client.call_tool("chat", {"prompt": "look [bold]at[/bold] this"})).meta[
            "continuation_id"
        ]
    settings = daemon.daemon.settings
    before = read_thread(daemon.daemon.settings, cid).updated

    listed = run_cli(settings, "threads", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["id"], row["tool"], row["turns"]) == (cid, "chat", 2)
    assert row["expires"] == pytest.approx(row["updated"] + 24 * HOUR)

    table = run_cli(settings, "threads")
    assert table.exit_code == 0 and cid in table.output and "chat" in table.output

    shown = run_cli(settings, "thread", cid)
    assert shown.exit_code == 0, shown.output
    assert "look [bold]at[/bold] this" in shown.output  # printed as is, not as markup
    assert "Simulated answer to: look" in shown.output and "#1 user" in shown.output

    as_json = json.loads(run_cli(settings, "thread", cid, "--json").output)
    assert [t["role"] for t in as_json["turns"]] == ["user", "assistant"]
    assert read_thread(daemon.daemon.settings, cid).updated == before  # reading does not touch it


def test_cli_when_no_store_exists(tmp_path: Path, store_settings: StoreSettings) -> None:
    settings = store_settings()
    empty = run_cli(settings, "threads")
    assert empty.exit_code == 0 and "no conversation threads" in empty.output
    assert json.loads(run_cli(settings, "threads", "--json").output) == []
    missing = run_cli(settings, "thread", str(uuid.uuid4()))
    assert missing.exit_code == 1 and "unknown or expired" in missing.output
    assert list(tmp_path.iterdir()) == []  # reading creates nothing


def test_cli_unknown_and_expired_threads_exit_1(store_settings: StoreSettings) -> None:
    clock = FakeClock(time.time() - 2 * HOUR)
    settings = store_settings()

    async def make() -> str:
        async with open_store(settings, clock=clock) as store:
            return (await store.append(None, "debug", pair(1))).thread_id

    stale = trio.run(make)
    expired = run_cli(settings, "thread", stale, EXAI_CONVERSATION_TTL_HOURS="1")
    assert expired.exit_code == 1
    assert f"continuation_id '{stale}' is unknown or expired" in expired.output
    assert (
        json.loads(run_cli(settings, "threads", "--json", EXAI_CONVERSATION_TTL_HOURS="1").output)
        == []
    )
    # With a longer lifetime the same thread is live again: reading did not delete it.
    alive = run_cli(settings, "thread", stale, EXAI_CONVERSATION_TTL_HOURS="3")
    assert alive.exit_code == 0 and "question 1" in alive.output
    bad = run_cli(settings, "thread", "not-a-uuid")
    assert bad.exit_code == 1 and "continuation_id 'not-a-uuid' is unknown or expired" in bad.output


def test_cli_bad_configuration(store_settings: StoreSettings) -> None:
    bad = run_cli(store_settings(), "threads", EXAI_CONVERSATION_TTL_HOURS="soon")
    assert bad.exit_code == 2 and "EXAI_CONVERSATION_TTL_HOURS" in bad.output


def test_cli_unreadable_sqlite_store(tmp_path: Path) -> None:
    """SQLite backend only: a file that is no database."""
    settings = sqlite_settings(tmp_path)
    settings.state_dir.mkdir()
    db_path(settings).write_bytes(b"this is not a database" * 100)
    broken = run_cli(settings, "threads")
    assert broken.exit_code == 1
    assert broken.output.startswith(f"exai: cannot read the conversation store {db_path(settings)}: ")
    assert run_cli(settings, "thread", str(uuid.uuid4())).exit_code == 1

