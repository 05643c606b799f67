"""The SQLite backend of the store (`sqlite:///PATH`): conversation threads in one file.

One database file (by default conversations.sqlite3 under EXAI_STATE_DIR), in WAL mode, shared
by every tool and every client of the daemon; it survives restarts. A call's own read and
write of its thread (`get`, `append`: a few small statements, committed to the WAL before the
call answers) run on the event loop, where they cost a fraction of a thread hand-off; they
never wait there: one that would wait for the write lock (another process holds it) goes to
the worker thread instead, which also runs everything else (listing, expiry), one statement
at a time, on its own connection. Task records (tasks table) are all small indexed statements,
run on the event loop the same way. WAL checkpoints (which sync the disk) run in a worker
thread too, every CHECKPOINT_EVERY writes, never in a commit on the event loop. The
`exai threads` commands read the same file directly, read-only (`SqliteReader`).
"""

from __future__ import annotations

import builtins
import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
import trio
from loguru import logger

from exai.config import STORE_FILE
from exai.providers.ratelimit import RequestRateLimiter
from exai.store.deployment import Deployment, OpenCircuit, Replica
from exai.store.tasks import (
    NewTask,
    TaskCursor,
    TaskNotFound,
    TaskRecord,
    TaskStatus,
    TooManyTasks,
    lost_outcome,
)
from exai.store.threads import (
    Appended,
    StoreUnavailable,
    Thread,
    ThreadNotFound,
    Turn,
    lookup_ids,
)

DB_NAME: Final = STORE_FILE
SCHEMA_VERSION: Final = 3
# Another process (a second daemon, `exai threads`) may hold the write lock briefly; the
# worker thread waits up to this long for it (the event loop never waits).
BUSY_TIMEOUT_MS: Final = 5000
# The WAL is copied into the database after this many writes, by a worker thread, instead of
# by whichever commit crosses SQLite's page threshold (a checkpoint syncs the disk).
CHECKPOINT_EVERY: Final = 100
# Expired threads are deleted a batch at a time, at most once a second, in the worker thread
# (SQLite runs without the GIL there): 18,000 rows in one statement held the event loop for
# about 0.5 s here. A batch a second keeps up with SWEEP_BATCH new threads a second.
SWEEP_INTERVAL_S: Final = 1.0
SWEEP_BATCH: Final = 1000

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model TEXT,
    dropped INTEGER NOT NULL DEFAULT 0,
    findings TEXT NOT NULL DEFAULT '[]',
    files TEXT NOT NULL DEFAULT '[]',
    turns TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS threads_updated ON threads (updated);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    tool TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    ttl_s REAL NOT NULL,
    expires REAL NOT NULL,
    runner TEXT NOT NULL,
    lease_until REAL NOT NULL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS tasks_owner_created ON tasks (owner, created, id);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, runner);
CREATE INDEX IF NOT EXISTS tasks_expires ON tasks (expires);
"""
# Columns the first schema (id, tool, updated, turns) lacks, added in place by the migration.
ADDED_COLUMNS: Final = {
    "created": "REAL NOT NULL DEFAULT 0",
    "model": "TEXT",
    "dropped": "INTEGER NOT NULL DEFAULT 0",
    "findings": "TEXT NOT NULL DEFAULT '[]'",
    "files": "TEXT NOT NULL DEFAULT '[]'",
}

T = TypeVar("T")


# -- the synchronous core: one connection, used from one thread at a time ---------------


class ThreadRows:
    """Thread rows on one SQLite connection. Blocking; the async store runs it in a thread."""

    def __init__(
        self, db: sqlite3.Connection, *, ttl_s: float, max_turns: int, clock: Callable[[], float]
    ):
        self.db = db
        self.ttl_s = ttl_s
        self.max_turns = max_turns
        self.clock = clock

    def migrate(self) -> None:
        """Create the schema, or bring a database of the first schema up to date in place."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(threads)")}
            if columns:
                for name, kind in ADDED_COLUMNS.items():
                    if name not in columns:
                        self.db.execute(f"ALTER TABLE threads ADD COLUMN {name} {kind}")
                if "created" not in columns:
                    self.db.execute("UPDATE threads SET created = updated")
                    logger.info(
                        "conversation store: migrated the threads table to schema {}",
                        SCHEMA_VERSION,
                    )
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def get(self, thread_id: str, *, touch: bool) -> Thread:
        """The live thread; `touch` restarts its lifetime. ThreadNotFound if there is none."""
        now = self.clock()
        with self.db:
            if touch:
                self.db.execute("BEGIN IMMEDIATE")
            thread = self._live(thread_id, now)
            if touch:
                self.db.execute("UPDATE threads SET updated = ? WHERE id = ?", (now, thread.id))
                thread.updated, thread.expires = now, now + self.ttl_s
        return thread

    def append(
        self,
        thread_id: str | None,
        tool: str,
        turns: list[Turn],
        findings: Sequence[str],
        files: Sequence[str],
        model: str | None,
    ) -> Appended:
        now = self.clock()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if thread_id is None:
                thread = Thread(str(uuid.uuid4()), tool, now, now, now, [], [], [], None, 0)
            else:
                thread = self._live(thread_id, now)
            every = thread.turns + list(turns)
            dropped_now = max(0, len(every) - self.max_turns)
            thread.turns = every[dropped_now:]
            thread.dropped += dropped_now
            thread.findings.extend(findings)
            thread.files.extend(dict.fromkeys(f for f in files if f not in thread.files))
            thread.model = model or thread.model
            self.db.execute(
                "INSERT OR REPLACE INTO threads (id, tool, created, updated, model, dropped, findings, files, turns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    thread.id,
                    thread.tool,
                    thread.created,
                    now,
                    thread.model,
                    thread.dropped,
                    _dumps(thread.findings),
                    _dumps(thread.files),
                    _dumps(thread.turns),
                ),
            )
        return Appended(thread.id, dropped_now)

    def list(self) -> list[Thread]:
        """Live threads, the most recently used first."""
        rows = self.db.execute(
            "SELECT * FROM threads WHERE updated >= ? ORDER BY updated DESC",
            (self.clock() - self.ttl_s,),
        ).fetchall()
        return [self._thread(row) for row in rows]

    def count(self) -> int:
        """How many live threads there are."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM threads WHERE updated >= ?", (self.clock() - self.ttl_s,)
        ).fetchone()
        return int(row[0])

    def sweep(self) -> int:
        """Delete at most SWEEP_BATCH expired threads, oldest first; return how many."""
        cur = self.db.execute(
            "DELETE FROM threads WHERE rowid IN"
            " (SELECT rowid FROM threads WHERE updated < ? ORDER BY updated LIMIT ?)",
            (self.clock() - self.ttl_s, SWEEP_BATCH),
        )
        return cur.rowcount

    def expire(self) -> int:
        with self.db:
            cur = self.db.execute(
                "DELETE FROM threads WHERE updated < ?", (self.clock() - self.ttl_s,)
            )
        return cur.rowcount

    def _live(self, thread_id: str, now: float) -> Thread:
        ids = lookup_ids(thread_id)
        if ids is None:
            raise ThreadNotFound(thread_id)
        row = self.db.execute(
            "SELECT * FROM threads WHERE id IN (?, ?) AND updated >= ?", (*ids, now - self.ttl_s)
        ).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        return self._thread(row)

    def _thread(self, row: sqlite3.Row) -> Thread:
        """A thread from its row, of either schema (the CLI reads unmigrated files too)."""
        keys = row.keys()
        tool = row["tool"]
        updated = float(row["updated"])
        created = float(row["created"]) if "created" in keys and row["created"] else updated
        turns = [Turn.from_json(t, tool=tool, created=created) for t in json.loads(row["turns"])]
        return Thread(
            id=row["id"],
            tool=tool,
            created=created,
            updated=updated,
            expires=updated + self.ttl_s,
            turns=turns,
            findings=json.loads(row["findings"]) if "findings" in keys else [],
            files=json.loads(row["files"]) if "files" in keys else [],
            model=row["model"] if "model" in keys else None,
            dropped=int(row["dropped"]) if "dropped" in keys else 0,
        )


class TaskRows:
    """Task rows on one SQLite connection. Blocking, like ThreadRows, and used the same way."""

    def __init__(self, db: sqlite3.Connection, *, clock: Callable[[], float]):
        self.db = db
        self.clock = clock

    def create(self, task: NewTask, max_unfinished: int) -> TaskRecord:
        now = self.clock()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # the count and the insert: one step
            row = self.db.execute(
                "SELECT COUNT(*) FROM tasks WHERE status = ? AND lease_until >= ? AND expires >= ?",
                (TaskStatus.WORKING.value, now, now),
            ).fetchone()
            if int(row[0]) >= max_unfinished:
                raise TooManyTasks(max_unfinished)
            record = TaskRecord(
                task.id, task.owner, task.tool, TaskStatus.WORKING, task.message,
                now, now, task.ttl_s, task.runner, now + task.lease_s, None,
            )
            self.db.execute(
                "INSERT INTO tasks (id, owner, tool, status, message, created, updated, ttl_s, expires,"
                " runner, lease_until, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    record.id, record.owner, record.tool, record.status.value, record.message,
                    now, now, record.ttl_s, record.expires, record.runner, record.lease_until,
                ),
            )
        return record

    def get(self, task_id: str, owner: str | None) -> TaskRecord:
        now = self.clock()
        row = self.db.execute("SELECT * FROM tasks WHERE id = ? AND expires >= ?", (task_id, now)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise TaskNotFound(task_id)
        return _task(row).as_read(now)

    def list(self, owner: str | None, after: TaskCursor | None, limit: int, newest_first: bool = False) -> list[TaskRecord]:
        now = self.clock()
        where: list[str] = ["expires >= ?"]
        args: list[float | str] = [now]
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if after is not None:
            where.append("(created, id) > (?, ?)")
            args.extend(after)
        order = "DESC" if newest_first else "ASC"
        rows = self.db.execute(
            f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY created {order}, id {order} LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_task(row).as_read(now) for row in rows]

    def update(self, task_id: str, message: str) -> None:
        with self.db:
            self.db.execute(
                "UPDATE tasks SET message = ?, updated = ? WHERE id = ? AND status = ?",
                (message, self.clock(), task_id, TaskStatus.WORKING.value),
            )

    def finish(self, task_id: str, status: TaskStatus, message: str, outcome: dict[str, Any] | None) -> TaskRecord:
        now = self.clock()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "UPDATE tasks SET status = ?, message = ?, outcome = ?, updated = ?"
                " WHERE id = ? AND status = ? AND expires >= ?",
                (status.value, message, _dumps(outcome), now, task_id, TaskStatus.WORKING.value, now),
            )
            return self.get(task_id, None)

    def renew(self, runner: str, lease_s: float) -> int:
        with self.db:
            cur = self.db.execute(
                "UPDATE tasks SET lease_until = ? WHERE runner = ? AND status = ?",
                (self.clock() + lease_s, runner, TaskStatus.WORKING.value),
            )
        return cur.rowcount

    def fail(self, runner: str, message: str) -> int:
        with self.db:
            cur = self.db.execute(
                "UPDATE tasks SET status = ?, message = ?, outcome = ?, updated = ? WHERE runner = ? AND status = ?",
                (
                    TaskStatus.FAILED.value, message, _dumps(lost_outcome(message)), self.clock(),
                    runner, TaskStatus.WORKING.value,
                ),
            )
        return cur.rowcount

    def count(self) -> dict[TaskStatus, int]:
        counts = dict.fromkeys(TaskStatus, 0)
        now = self.clock()
        for row in self.db.execute(
            "SELECT status, lease_until < ? AS lost, COUNT(*) FROM tasks WHERE expires >= ? GROUP BY 1, 2",
            (now, now),
        ):
            status = TaskStatus(row[0])
            if status is TaskStatus.WORKING and row[1]:
                status = TaskStatus.FAILED
            counts[status] += int(row[2])
        return counts

    def expire(self) -> int:
        with self.db:
            cur = self.db.execute("DELETE FROM tasks WHERE expires < ?", (self.clock(),))
        return cur.rowcount


def _task(row: sqlite3.Row) -> TaskRecord:
    outcome = row["outcome"]
    return TaskRecord(
        id=row["id"],
        owner=row["owner"],
        tool=row["tool"],
        status=TaskStatus(row["status"]),
        message=row["message"],
        created=float(row["created"]),
        updated=float(row["updated"]),
        ttl_s=float(row["ttl_s"]),
        runner=row["runner"],
        lease_until=float(row["lease_until"]),
        outcome=None if outcome is None or outcome == "null" else orjson.loads(outcome),
    )


def _dumps(value: Any) -> str:
    """JSON text of a column (turns are dataclasses): orjson, json's text for what it refuses."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, default=asdict)


def _connect(path: Path, *, read_only: bool = False, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    if read_only:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
    else:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    return db


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLite refused at once because another connection holds the lock (busy_timeout 0)."""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


# -- the async store the daemon uses ------------------------------------------------------


_HOLD_NOTHING: Final = nullcontext()


@dataclass
class _Hold:
    lock: trio.Lock = field(default_factory=trio.Lock)
    users: int = 0


class SqliteStore:
    """The `Store` on one SQLite file.

    `get` and `append` run on the event loop on their own connection, which never waits for
    a lock (busy_timeout 0); when it would have to, the work goes to the worker thread. The
    worker thread's connection runs one statement at a time; a cancelled caller still waits
    for its statement to finish, so a write is never left half done. Built by `open_sqlite`.
    """

    def __init__(
        self,
        rows: ThreadRows,
        worker_rows: ThreadRows | None = None,
        *,
        checkpointer: _Checkpointer | None = None,
        connections: Sequence[sqlite3.Connection] = (),
    ):
        self._rows = rows  # used on the event loop
        self._worker_rows = worker_rows or rows  # used in the worker thread
        self._tasks = TaskRows(self._rows.db, clock=rows.clock)
        self._worker_tasks = TaskRows(self._worker_rows.db, clock=rows.clock)
        self._sqlite = trio.CapacityLimiter(1)  # one connection: one statement at a time
        self._holds: dict[str, _Hold] = {}
        self.checkpointer = checkpointer
        self._connections = list(connections)  # closed by aclose, the worker's last
        self._swept_at = -math.inf

    @property
    def max_turns(self) -> int:
        return self._rows.max_turns

    async def get(self, thread_id: str) -> Thread:
        """The live thread, its TTL refreshed; ThreadNotFound if unknown, expired or no UUID."""
        return await self._write(lambda rows: rows.get(thread_id, touch=True))

    async def append(
        self,
        thread_id: str | None,
        tool: str,
        turns: list[Turn],
        *,
        findings: Sequence[str] = (),
        files: Sequence[str] = (),
        model: str | None = None,
    ) -> Appended:
        """Add turns (and findings, files, the model) to a thread; None starts a new one.

        Keeps the newest `max_turns` turns; ThreadNotFound for an unknown or expired id.
        """
        appended = await self._write(
            lambda rows: rows.append(thread_id, tool, list(turns), findings, files, model)
        )
        now = self._rows.clock()
        if thread_id is None and now - self._swept_at >= SWEEP_INTERVAL_S:
            # A long-running daemon sweeps expired threads as it starts new ones: expired rows
            # are invisible anyway, this only frees space.
            self._swept_at = now
            await self._run(self._worker_rows.sweep)
        return appended

    def hold(self, thread_id: str | None) -> AbstractAsyncContextManager[None]:
        """Serialise calls on one thread, first come first served; None holds nothing.

        The wait happens in the caller's cancel scope, so it counts against its deadline.
        One daemon's calls only: a second process on the same file does not wait for it.
        """
        if thread_id is None:
            return _HOLD_NOTHING
        return self._hold(thread_id)

    @asynccontextmanager
    async def _hold(self, thread_id: str) -> AsyncIterator[None]:
        ids = lookup_ids(thread_id)
        key = ids[1] if ids else thread_id
        entry = self._holds.setdefault(key, _Hold())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._holds[key]

    def provider_slot(self, provider: str, ceiling: int) -> AbstractAsyncContextManager[None]:
        """One daemon per file: its own limiter is the ceiling, nothing to hold here."""
        return _HOLD_NOTHING

    def rate_limiter(self, provider: str, rpm: int | None, *, env_var: str) -> RequestRateLimiter:
        """One daemon per file: the daemon's own schedule is the deployment's."""
        return RequestRateLimiter(provider, rpm, env_var=env_var)

    async def announce(
        self, replica: Replica, lease_s: float, circuits: Mapping[str, OpenCircuit]
    ) -> Deployment:
        """One daemon per file: the deployment is this replica. A local file opened at
        start-up: its problems show as each call's error."""
        return Deployment([replica], dict(circuits))

    async def list(self) -> list[Thread]:
        """Live threads, newest first."""
        return await self._run(self._worker_rows.list)

    async def count(self) -> int:
        """How many live threads there are (the dashboard shows it)."""
        return await self._run(self._worker_rows.count)

    async def expire(self) -> int:
        """Delete expired threads; return how many."""
        return await self._run(self._worker_rows.expire)

    # -- tasks ---------------------------------------------------------------------------

    async def create_task(self, task: NewTask, *, max_unfinished: int) -> TaskRecord:
        return await self._write_tasks(lambda rows: rows.create(task, max_unfinished))

    async def task(self, task_id: str, owner: str | None) -> TaskRecord:
        return await self._write_tasks(lambda rows: rows.get(task_id, owner))

    async def tasks(
        self, owner: str | None, *, after: TaskCursor | None = None, limit: int = 100
    ) -> builtins.list[TaskRecord]:
        return await self._write_tasks(lambda rows: rows.list(owner, after, limit))

    async def update_task(self, task_id: str, message: str) -> None:
        await self._write_tasks(lambda rows: rows.update(task_id, message))

    async def finish_task(
        self, task_id: str, status: TaskStatus, message: str, outcome: dict[str, Any] | None
    ) -> TaskRecord:
        return await self._write_tasks(lambda rows: rows.finish(task_id, status, message, outcome))

    async def renew_tasks(self, runner: str, lease_s: float) -> int:
        return await self._write_tasks(lambda rows: rows.renew(runner, lease_s))

    async def fail_tasks(self, runner: str, message: str) -> int:
        return await self._write_tasks(lambda rows: rows.fail(runner, message))

    async def count_tasks(self) -> dict[TaskStatus, int]:
        # On the event loop like the rest: the runner asks every second, one indexed query.
        return await self._write_tasks(lambda rows: rows.count())

    async def expire_tasks(self) -> int:
        return await self._write_tasks(lambda rows: rows.expire())

    async def _write_tasks(self, work: Callable[[TaskRows], T]) -> T:
        """Like `_write`, on the task rows: a few small statements, on the event loop unless
        another process holds the write lock."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            result = work(self._tasks)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or self._worker_tasks is self._tasks:
                raise
            result = await self._run(lambda: work(self._worker_tasks))
        if self.checkpointer is not None:
            self.checkpointer.wrote()
        return result

    async def aclose(self) -> None:
        """Close every connection (shielded: a cancelled daemon still closes its file)."""
        with trio.CancelScope(shield=True):
            while self._connections:
                db = self._connections.pop()
                if self.checkpointer is not None and self.checkpointer.owns(db):
                    await trio.to_thread.run_sync(self.checkpointer.close)
                else:
                    await trio.to_thread.run_sync(db.close)

    async def _write(self, work: Callable[[ThreadRows], T]) -> T:
        """`work` on the event loop's connection; in the worker thread if that would wait."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            result = work(self._rows)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or self._worker_rows is self._rows:
                raise
            result = await self._run(lambda: work(self._worker_rows))
        if self.checkpointer is not None:
            self.checkpointer.wrote()
        return result

    async def _run(self, work: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(work, limiter=self._sqlite)


class _Checkpointer:
    """Copies the WAL into the database every CHECKPOINT_EVERY writes, in a worker thread, on
    its own connection; PASSIVE, so it neither waits for nor holds up a writer. Nothing
    waits for it: it only bounds the WAL's size (a commit is durable once in the WAL)."""

    def __init__(self, db: sqlite3.Connection):
        self._db: sqlite3.Connection | None = db
        self._lock = threading.Lock()  # the connection: one checkpoint at a time, then close
        self._running = False
        self._writes = 0
        self.done = 0  # checkpoints run so far

    def wrote(self) -> None:
        """Count a write (on the event loop); start a checkpoint when one is due."""
        self._writes += 1
        if self._writes < CHECKPOINT_EVERY or self._running:
            return
        self._writes = 0
        self._running = True
        trio.lowlevel.start_thread_soon(self._checkpoint, lambda result: None)

    def _checkpoint(self) -> None:
        try:
            with self._lock:
                if self._db is not None:
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.done += 1
        except sqlite3.Error as exc:  # another process's checkpoint, say: the next one catches up
            logger.debug("conversation store: WAL checkpoint skipped: {}", exc)
        finally:
            self._running = False

    def owns(self, db: sqlite3.Connection) -> bool:
        return db is self._db

    def close(self) -> None:
        """Blocking: waits for a running checkpoint, then closes the connection."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


async def open_sqlite(
    path: Path, *, ttl_s: float, max_turns: int, clock: Callable[[], float], variable: str
) -> SqliteStore:
    """The store on the file at `path` (its directory created if missing), migrated, expired
    threads removed. StoreUnavailable names `path` and `variable` (the setting that chose it)
    when the file cannot be opened or is no usable SQLite database; nothing stays open then."""

    def connect(busy_timeout_ms: int) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(path, busy_timeout_ms=busy_timeout_ms)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA wal_autocheckpoint = 0")  # the worker thread checkpoints
        except BaseException:
            db.close()
            raise
        return db

    def unavailable(exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"cannot open the conversation store {path} ({variable}): {exc}")

    opened: list[sqlite3.Connection] = []
    store: SqliteStore | None = None
    try:
        try:
            # The worker thread's connection, the checkpoints', the event loop's (never waits);
            # closed in reverse: closing the worker's, the last, checkpoints the WAL.
            for busy_timeout_ms in (BUSY_TIMEOUT_MS, BUSY_TIMEOUT_MS, 0):
                opened.append(await trio.to_thread.run_sync(connect, busy_timeout_ms))
        except (OSError, sqlite3.Error) as exc:
            raise unavailable(exc) from None
        worker_db, checkpoint_db, loop_db = opened

        def rows_of(db: sqlite3.Connection) -> ThreadRows:
            return ThreadRows(db, ttl_s=ttl_s, max_turns=max_turns, clock=clock)

        store = SqliteStore(
            rows_of(loop_db),
            rows_of(worker_db),
            checkpointer=_Checkpointer(checkpoint_db),
            connections=opened,
        )
        try:
            await store._run(store._worker_rows.migrate)
            expired = await store.expire()
            await store.expire_tasks()
        except sqlite3.Error as exc:
            raise unavailable(exc) from None
    except BaseException:
        if store is not None:
            await store.aclose()
        else:
            with trio.CancelScope(shield=True):
                for db in reversed(opened):
                    await trio.to_thread.run_sync(db.close)
        raise
    if expired:
        logger.info("conversation store: removed {} expired thread(s)", expired)
    return store


# -- read-only access for the `exai threads` commands -------------------------------------


class SqliteReader:
    """The `ThreadReader` of one SQLite file: a read-only connection, opened on first use,
    so a file that does not exist is never created (it has no threads)."""

    def __init__(self, path: Path, *, ttl_s: float, max_turns: int):
        self.path = path
        self._ttl_s = ttl_s
        self._max_turns = max_turns

    @property
    def where(self) -> str:
        return str(self.path)

    def threads(self) -> list[Thread]:
        return self._read(lambda rows: rows.list(), missing=list)

    def thread(self, thread_id: str) -> Thread:
        def missing() -> Thread:
            raise ThreadNotFound(thread_id)

        return self._read(lambda rows: rows.get(thread_id, touch=False), missing=missing)

    def tasks(self) -> list[TaskRecord]:
        return self._read_tasks(lambda rows: rows.list(None, None, -1, newest_first=True), missing=list)

    def task(self, task_id: str) -> TaskRecord:
        def missing() -> TaskRecord:
            raise TaskNotFound(task_id)

        return self._read_tasks(lambda rows: rows.get(task_id, None), missing=missing)

    def _read_tasks(self, work: Callable[[TaskRows], T], *, missing: Callable[[], T]) -> T:
        """`work` on the task rows; `missing()` when the file has none yet (an older schema)."""

        def read(rows: ThreadRows) -> T:
            has_tasks = rows.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").fetchone()
            return work(TaskRows(rows.db, clock=rows.clock)) if has_tasks else missing()

        return self._read(read, missing=missing)

    def _read(self, work: Callable[[ThreadRows], T], *, missing: Callable[[], T]) -> T:
        if not self.path.is_file():
            return missing()
        try:
            db = _connect(self.path, read_only=True)
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from None
        try:
            return work(ThreadRows(db, ttl_s=self._ttl_s, max_turns=self._max_turns, clock=time.time))
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from None
        finally:
            db.close()

    def _unreadable(self, exc: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(f"cannot read the conversation store {self.path}: {exc}")
