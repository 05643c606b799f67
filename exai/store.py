"""Conversation threads in SQLite: what `continuation_id` refers to.

One database file under EXAI_STATE_DIR, in WAL mode, shared by every tool and every client
of the daemon; it survives restarts. A call's own read and write of its thread (`get`,
`append`: a few small statements, committed to the WAL before the call answers) run on the
event loop, where they cost a fraction of a thread hand-off; they never wait there: one that
would wait for the write lock (another process holds it) goes to the worker thread instead,
which also runs everything else (listing, expiry), one statement at a time, on its own
connection. WAL checkpoints (which sync the disk) run in a worker thread too, every
CHECKPOINT_EVERY writes, never in a commit on the event loop. The `exai threads` commands
read the same file directly, read-only (`read_threads`, `read_thread`).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    closing,
    contextmanager,
    nullcontext,
)
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
import trio
from loguru import logger

from exai.errors import ExaiError

DB_NAME: Final = "conversations.sqlite3"
SCHEMA_VERSION: Final = 2
# Another process (a second daemon, `exai threads`) may hold the write lock briefly; the
# worker thread waits up to this long for it (the event loop never waits).
BUSY_TIMEOUT_MS: Final = 5000
# The WAL is copied into the database after this many writes, by a worker thread, instead of
# by whichever commit crosses SQLite's page threshold (a checkpoint syncs the disk).
CHECKPOINT_EVERY: Final = 100
SWEEP_INTERVAL_S: Final = 60.0

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
"""
# Columns the first schema (id, tool, updated, turns) lacks, added in place by the migration.
ADDED_COLUMNS: Final = {
    "created": "REAL NOT NULL DEFAULT 0",
    "model": "TEXT",
    "dropped": "INTEGER NOT NULL DEFAULT 0",
    "findings": "TEXT NOT NULL DEFAULT '[]'",
    "files": "TEXT NOT NULL DEFAULT '[]'",
}

# A thread id is a UUID, hyphenated (new threads) or 32 hex digits (threads of the first schema).
_THREAD_ID = re.compile(
    r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I
)
_SHOWN_ID_CHARS: Final = 80

T = TypeVar("T")


class ThreadNotFound(ExaiError):
    """No live thread has this id: never created, expired, or not a thread id at all."""

    def __init__(self, thread_id: str):
        shown = (
            thread_id if len(thread_id) <= _SHOWN_ID_CHARS else thread_id[:_SHOWN_ID_CHARS] + "…"
        )
        super().__init__(f"continuation_id '{shown}' is unknown or expired; start a new thread")
        self.thread_id = thread_id


class StoreUnavailable(ExaiError):
    """The store file cannot be opened or is not a usable SQLite database."""

    def __init__(self, path: Path, cause: BaseException):
        super().__init__(f"cannot open the conversation store {path} (EXAI_STATE_DIR): {cause}")
        self.path = path


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    tool: str
    created: float = field(default_factory=time.time)
    step_number: int | None = None
    model: str | None = None
    files: list[str] = field(default_factory=list)  # files embedded in this turn
    versions: dict[str, str] = field(default_factory=dict)  # file -> digest of the text embedded

    @classmethod
    def from_json(cls, data: dict[str, Any], *, tool: str, created: float) -> Turn:
        """A stored turn; turns of the first schema have only role and content."""
        return cls(
            role=str(data.get("role", "user")),
            content=str(data.get("content", "")),
            tool=str(data.get("tool") or tool),
            created=float(data.get("created") or created),
            step_number=data.get("step_number"),
            model=data.get("model"),
            files=list(data.get("files") or []),
            versions=dict(data.get("versions") or {}),
        )


@dataclass
class Thread:
    id: str
    tool: str  # the tool that started it
    created: float
    updated: float  # last use
    expires: float
    turns: list[Turn]
    findings: list[str]  # consolidated findings, in order
    files: list[str]  # every file embedded in the thread so far (resolved paths)
    model: str | None  # last model used
    dropped: int  # turns dropped by the turn cap so far

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tool": self.tool,
            "turns": len(self.turns),
            "created": self.created,
            "updated": self.updated,
            "expires": self.expires,
            "model": self.model,
            "dropped": self.dropped,
        }


@dataclass
class Appended:
    thread_id: str
    dropped_now: int  # turns dropped by this append (cap EXAI_MAX_CONVERSATION_TURNS)


def lookup_ids(thread_id: str) -> tuple[str, str] | None:
    """Both stored spellings of a thread id (hyphenated, hex), or None if it is no thread id."""
    if not isinstance(thread_id, str) or not _THREAD_ID.fullmatch(thread_id):
        return None
    value = uuid.UUID(thread_id)
    return str(value), value.hex


def db_path(settings: Any) -> Path:
    return Path(settings.state_dir).expanduser() / DB_NAME


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
        self._swept_at = -math.inf

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
                # A long-running daemon sweeps expired threads as it starts new ones (at most
                # every SWEEP_INTERVAL_S: expired rows are invisible anyway, this only frees space).
                if now - self._swept_at >= SWEEP_INTERVAL_S:
                    self.db.execute("DELETE FROM threads WHERE updated < ?", (now - self.ttl_s,))
                    self._swept_at = now
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


class ConversationStore:
    """Threads shared by every tool and client of the daemon.

    `get` and `append` run on the event loop on their own connection, which never waits for
    a lock (busy_timeout 0); when it would have to, the work goes to the worker thread. The
    worker thread's connection runs one statement at a time; a cancelled caller still waits
    for its statement to finish, so a write is never left half done.
    """

    def __init__(self, rows: ThreadRows, worker_rows: ThreadRows | None = None):
        self._rows = rows  # used on the event loop
        self._worker_rows = worker_rows or rows  # used in the worker thread
        self._sqlite = trio.CapacityLimiter(1)  # one connection: one statement at a time
        self._holds: dict[str, _Hold] = {}
        self.checkpointer: _Checkpointer | None = None  # set by open_store

    @property
    def max_turns(self) -> int:
        return self._rows.max_turns

    @property
    def ttl_s(self) -> float:
        return self._rows.ttl_s

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
        return await self._write(
            lambda rows: rows.append(thread_id, tool, list(turns), findings, files, model)
        )

    def hold(self, thread_id: str | None) -> AbstractAsyncContextManager[None]:
        """Serialise calls on one thread, first come first served; None holds nothing.

        The wait happens in the caller's cancel scope, so it counts against its deadline.
        """
        if thread_id is None:
            return _HOLD_NOTHING
        return self._hold(thread_id)

    @asynccontextmanager
    async def _hold(self, thread_id: str | None) -> AsyncIterator[None]:
        if thread_id is None:
            yield
            return
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

    async def list(self) -> list[dict[str, Any]]:
        """Live threads (id, tool, turns, created, updated, expires, model, dropped), newest first."""
        threads = await self._run(self._worker_rows.list)
        return [thread.summary() for thread in threads]

    async def count(self) -> int:
        """How many live threads there are (the dashboard shows it)."""
        return await self._run(self._worker_rows.count)

    async def expire(self) -> int:
        """Delete expired threads; return how many."""
        return await self._run(self._worker_rows.expire)

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

    def close(self) -> None:
        """Blocking: waits for a running checkpoint, then closes the connection."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


@asynccontextmanager
async def open_store(
    settings: Any, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[ConversationStore]:
    """The daemon's store under `settings.state_dir` (created if missing), migrated, expired
    threads removed; the connection is closed on exit."""
    path = db_path(settings)

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

    opened: list[sqlite3.Connection] = []
    checkpointer: _Checkpointer | None = None
    try:
        try:
            # The worker thread's connection, the checkpoints', the event loop's (never waits).
            for busy_timeout_ms in (BUSY_TIMEOUT_MS, BUSY_TIMEOUT_MS, 0):
                opened.append(await trio.to_thread.run_sync(connect, busy_timeout_ms))
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(path, exc) from None
        worker_db, checkpoint_db, loop_db = opened
        checkpointer = _Checkpointer(checkpoint_db)

        def rows_of(db: sqlite3.Connection) -> ThreadRows:
            return ThreadRows(
                db,
                ttl_s=float(settings.conversation_ttl_hours) * 3600,
                max_turns=int(settings.max_conversation_turns),
                clock=clock,
            )

        store = ConversationStore(rows_of(loop_db), rows_of(worker_db))
        store.checkpointer = checkpointer
        try:
            await store._run(store._worker_rows.migrate)
            expired = await store.expire()
        except sqlite3.Error as exc:
            raise StoreUnavailable(path, exc) from None
        if expired:
            logger.info("conversation store: removed {} expired thread(s)", expired)
        yield store
    finally:
        # The worker's connection closes last: closing the last one checkpoints the WAL.
        with trio.CancelScope(shield=True):
            for db in reversed(opened):
                if checkpointer is not None and db is checkpoint_db:
                    await trio.to_thread.run_sync(checkpointer.close)
                else:
                    await trio.to_thread.run_sync(db.close)


# -- read-only access for the `exai threads` commands -------------------------------------


@contextmanager
def _reading(settings: Any) -> Iterator[ThreadRows | None]:
    """Rows of the store file, read-only; None when there is no store yet."""
    path = db_path(settings)
    if not path.is_file():
        yield None
        return
    with closing(_connect(path, read_only=True)) as db:
        yield ThreadRows(
            db,
            ttl_s=float(settings.conversation_ttl_hours) * 3600,
            max_turns=int(settings.max_conversation_turns),
            clock=time.time,
        )


def read_threads(settings: Any) -> list[Thread]:
    """Live threads in the store, newest first, without touching them."""
    with _reading(settings) as rows:
        return [] if rows is None else rows.list()


def read_thread(settings: Any, thread_id: str) -> Thread:
    """One live thread, without refreshing its TTL; ThreadNotFound if there is none."""
    with _reading(settings) as rows:
        if rows is None:
            raise ThreadNotFound(thread_id)
        return rows.get(thread_id, touch=False)
