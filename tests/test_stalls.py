"""The stall watcher on a real event loop (real time, short bounds): each kind of stall gets
one line saying where its time went, and nothing is left attached when it stops."""

from __future__ import annotations

import gc
import time
from functools import partial

import trio

from exai.stalls import LOG_EVERY_S, STALL_S, watch_stalls

BLOCK_S = 0.03  # well over STALL_S, short enough for a test


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _ticks(n: int = 4) -> None:
    for _ in range(n):
        await trio.sleep(STALL_S)


async def test_a_stall_is_logged_with_where_its_time_went(log_lines: list[str]) -> None:
    callbacks = list(gc.callbacks)
    async with trio.open_nursery() as nursery:
        # Every stall logged (the machine may add its own), so the test can look for each kind.
        collections = await nursery.start(partial(watch_stalls, log_every_s=0))
        assert len(gc.callbacks) == len(callbacks) + 1
        await _ticks()
        time.sleep(BLOCK_S)  # noqa: ASYNC251 - off the CPU, as if another thread held the GIL
        await _ticks()
        stalls = [line for line in log_lines if line.startswith("event loop stalled")]
        assert any("off the CPU" in line for line in stalls), log_lines
        del log_lines[:]

        gc.collect()  # a full collection while nothing else can run
        _spin(BLOCK_S)  # and the loop's own work: the step timer is attached after this
        await _ticks()
        stalls = [line for line in log_lines if line.startswith("event loop stalled")]
        assert any("collecting garbage" in line and "generation 2" in line for line in stalls), stalls
        assert collections.count[2] >= 1 and collections.pause_s > 0

        async def slow_worker() -> None:
            _spin(BLOCK_S)

        nursery.start_soon(slow_worker, name="slow-worker")
        await _ticks()
        steps = [line for line in log_lines if line.startswith("slow task step")]
        assert any("slow-worker" in line for line in steps), log_lines
        nursery.cancel_scope.cancel()
    assert gc.callbacks == callbacks  # and the step timer is gone: removing it again fails


async def test_the_lines_are_limited_to_one_a_second_and_count_the_rest(log_lines: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_stalls)
        for _ in range(5):
            time.sleep(BLOCK_S)  # noqa: ASYNC251 - a stall on purpose
            await _ticks(2)
        nursery.cancel_scope.cancel()
    stalls = [line for line in log_lines if line.startswith("event loop stalled")]
    assert len(stalls) == 1, stalls  # 5 stalls within well under a second: the first one logged
    assert LOG_EVERY_S == 1.0
