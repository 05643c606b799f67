"""Holds on threads within one daemon: calls on one thread run one at a time, in arrival order.
Every backend's `Store.hold` is this; what a hold does across replicas is the backend's own
guard against lost updates (Redis: a version checked by the write)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Final

import trio

from exai.store.threads import lookup_ids

_HOLD_NOTHING: Final = nullcontext()


@dataclass
class _Hold:
    lock: trio.Lock = field(default_factory=trio.Lock)
    users: int = 0


class ThreadHolds:
    """One trio.Lock (FIFO) per thread in use, freed when its last user leaves."""

    def __init__(self) -> None:
        self._holds: dict[str, _Hold] = {}

    def __len__(self) -> int:
        return len(self._holds)

    def hold(self, thread_id: str | None) -> AbstractAsyncContextManager[None]:
        """Serialise calls on one thread (either id spelling); None holds nothing. The wait
        happens in the caller's cancel scope, so it counts against its deadline."""
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
