"""Watching the processes a tool starts, by pid, from the test (real time, short generous bounds)."""

from __future__ import annotations

import os
from pathlib import Path

import trio

GONE_WITHIN_S = 5.0


def gone(pid: int) -> bool:
    """No such process, or only its zombie (dead, waiting for its new parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


async def wait_for_pids(pidfile: Path, count: int, timeout: float = 10.0) -> list[int]:
    """The pids a fake process wrote to `pidfile` (atomically), once it has."""
    with trio.fail_after(timeout):
        while not os.path.exists(pidfile):  # noqa: ASYNC110, ASYNC240 - another process writes it
            await trio.sleep(0.01)
    with open(pidfile) as written:  # noqa: ASYNC230 - a few bytes on a local disk
        pids = [int(word) for word in written.read().split()]
    assert len(pids) == count, pids
    return pids


async def wait_gone(pids: list[int], timeout: float = GONE_WITHIN_S) -> None:
    with trio.move_on_after(timeout):
        while not all(gone(pid) for pid in pids):  # noqa: ASYNC110 - other processes' state
            await trio.sleep(0.01)
    alive = [pid for pid in pids if not gone(pid)]
    assert not alive, f"still running {timeout} s later: {alive}"
