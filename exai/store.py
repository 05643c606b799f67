"""Conversation threads in SQLite: what `continuation_id` refers to.

Operations are single small statements on a local WAL database (well under a millisecond),
so they run on the event loop rather than paying a thread hop per call.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    updated REAL NOT NULL,
    turns TEXT NOT NULL
);
"""


class ThreadNotFound(Exception):
    pass


class ConversationStore:
    def __init__(self, db: sqlite3.Connection, *, ttl_s: float, max_turns: int):
        self.db = db
        self.ttl_s = ttl_s
        self.max_turns = max_turns

    def load(self, thread_id: str) -> list[dict[str, Any]]:
        """The turns of a live thread; raises ThreadNotFound for an unknown or expired one."""
        row = self.db.execute(
            "SELECT turns FROM threads WHERE id = ? AND updated >= ?",
            (thread_id, time.time() - self.ttl_s),
        ).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        turns: list[dict[str, Any]] = json.loads(row[0])
        return turns

    def append(self, thread_id: str | None, tool: str, turns: list[dict[str, Any]]) -> str:
        """Add turns to a thread (a new one when thread_id is None); keep the newest max_turns."""
        history = self.load(thread_id) if thread_id else []
        thread_id = thread_id or uuid.uuid4().hex
        kept = (history + turns)[-self.max_turns :]
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO threads (id, tool, updated, turns) VALUES (?, ?, ?, ?)",
                (thread_id, tool, time.time(), json.dumps(kept)),
            )
        return thread_id

    def expire(self) -> int:
        with self.db:
            cur = self.db.execute("DELETE FROM threads WHERE updated < ?", (time.time() - self.ttl_s,))
        return cur.rowcount


@contextmanager
def open_store(settings: Any) -> Iterator[ConversationStore]:
    state_dir = Path(settings.state_dir).expanduser()
    state_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(state_dir / "conversations.sqlite3", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        store = ConversationStore(
            db,
            ttl_s=float(settings.conversation_ttl_hours) * 3600,
            max_turns=int(settings.max_conversation_turns),
        )
        store.expire()
        yield store
    finally:
        db.close()
