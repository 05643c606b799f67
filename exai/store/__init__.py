"""The store: conversation threads and tasks (provider budgets, circuits and leases to come),
behind one interface (`Store`, `ThreadReader` in exai.store.base) and chosen once from
EXAI_STORE_URL by `open_store` / `open_reader`. Backends: exai.store.sqlite (`sqlite:///PATH`),
exai.store.redis (`redis://[:password@]host:port/db`, shared by replicas).

Callers import from here only; nothing outside this package knows which backend runs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from exai.config import STORE_FILE, RedisLocation, Settings, SqliteLocation
from exai.store.base import Store, ThreadReader
from exai.store.deployment import Deployment, OpenCircuit, Replica
from exai.store.redis import RedisReader, open_redis
from exai.store.sqlite import SqliteReader, open_sqlite
from exai.store.tasks import (
    NewTask,
    TaskCursor,
    TaskNotFound,
    TaskRecord,
    TaskStatus,
    TooManyTasks,
)
from exai.store.threads import (
    Appended,
    StoreUnavailable,
    Thread,
    ThreadNotFound,
    Turn,
    lookup_ids,
)

__all__ = [
    "Appended",
    "Deployment",
    "NewTask",
    "OpenCircuit",
    "Replica",
    "Store",
    "StoreUnavailable",
    "TaskCursor",
    "TaskNotFound",
    "TaskRecord",
    "TaskStatus",
    "Thread",
    "ThreadNotFound",
    "ThreadReader",
    "TooManyTasks",
    "Turn",
    "lookup_ids",
    "open_reader",
    "open_store",
    "read_thread",
    "read_threads",
]


def _ttl_s(settings: Settings) -> float:
    return settings.conversation_ttl_hours * 3600


def _chosen_by(settings: Settings) -> str:
    """The setting a user changes to move the store: the state directory, for the default."""
    default = SqliteLocation(settings.state_dir / STORE_FILE)
    return "EXAI_STATE_DIR" if settings.store_location == default else "EXAI_STORE_URL"


@asynccontextmanager
async def _open(settings: Settings, clock: Callable[[], float]) -> AsyncIterator[Store]:
    # One branch per backend, here only; exai.config parses the URL into the location type.
    location = settings.store_location
    if isinstance(location, RedisLocation):
        async with open_redis(
            location,
            ttl_s=_ttl_s(settings),
            max_turns=settings.max_conversation_turns,
            clock=clock,
            lease_s=settings.replica_lease_secs,
        ) as redis_store:
            yield redis_store
        return
    store = await open_sqlite(
        location.path,
        ttl_s=_ttl_s(settings),
        max_turns=settings.max_conversation_turns,
        clock=clock,
        variable=_chosen_by(settings),
    )
    try:
        yield store
    finally:
        await store.aclose()


def open_store(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> AbstractAsyncContextManager[Store]:
    """The daemon's store at EXAI_STORE_URL, ready (created or migrated, expired threads
    removed), closed on exit even when cancelled. StoreUnavailable (one line) when it cannot
    be opened; `clock` is the wall clock of thread lifetimes (tests pass a fake one). A Redis
    store opens without waiting for its server: its calls raise StoreUnavailable until it
    answers."""
    return _open(settings, clock)


def open_reader(settings: Settings) -> ThreadReader:
    """Read-only access to the threads at EXAI_STORE_URL for the CLI; opens nothing yet."""
    location = settings.store_location
    if isinstance(location, RedisLocation):
        return RedisReader(
            location, ttl_s=_ttl_s(settings), max_turns=settings.max_conversation_turns
        )
    return SqliteReader(
        location.path, ttl_s=_ttl_s(settings), max_turns=settings.max_conversation_turns
    )


def read_threads(settings: Settings) -> list[Thread]:
    """Live threads in the store, newest first, without touching them."""
    return open_reader(settings).threads()


def read_thread(settings: Settings, thread_id: str) -> Thread:
    """One live thread, without refreshing its lifetime; ThreadNotFound if there is none."""
    return open_reader(settings).thread(thread_id)
