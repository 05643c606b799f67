"""Event-loop stalls: a ticker that notices when the loop ran late, and the collector's pauses.

A task sleeps TICK_S at a time; waking more than STALL_S late means no task could run either:
a long task step, a garbage collection, the GIL held by another thread, or the process not
scheduled at all. Each stall is one log line saying which it was: how much of the gap the
loop's thread spent on the CPU, and the collections inside it. Nothing is added to a call's
path: the cost is one wake-up per tick and a clock read per collection.

When a stall's time went to the loop's own work (its thread on the CPU), a step timer
is attached for TRACE_S to name the task whose step ran long; it is detached afterwards, so
task steps carry no instrument while the loop keeps up.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from loguru import logger

TICK_S: Final = 0.005
STALL_S: Final = 0.005  # a tick later than this is a stall, and so is a step or a collection this long
LOG_EVERY_S: Final = 1.0  # at most one line per second of each kind; the rest are counted in the next
TRACE_S: Final = 10.0  # how long the step timer stays attached after a stall of the loop's own work


@dataclass
class Collections:
    """The collector's pauses, from `gc.callbacks` (any thread's collections: all hold the GIL)."""

    count: list[int] = field(default_factory=lambda: [0, 0, 0])  # by generation
    pause_s: float = 0.0  # in all, since the daemon started
    max_s: float = 0.0  # the longest one since the daemon started
    longest_s: float = 0.0  # the longest one since the stall watcher's last tick
    longest_generation: int = -1
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector: plain arithmetic only (no logging, no locks). CPU time of
        # the collecting thread, so a busy machine's preemption is not counted as collecting.
        now = time.thread_time()
        if phase == "start":
            self._started = now
            return
        took = now - self._started
        generation = int(info["generation"])
        self.count[generation] += 1
        self.pause_s += took
        self.max_s = max(self.max_s, took)
        if took > self.longest_s:
            self.longest_s, self.longest_generation = took, generation


class _Limited:
    """One log line per LOG_EVERY_S at most; the events in between are counted into it."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._next = 0.0
        self._held = 0

    def allow(self, now: float) -> int | None:
        """None: hold this one back. Else how many were held back since the last line."""
        if now < self._next:
            self._held += 1
            return None
        held, self._held, self._next = self._held, 0, now + self._every_s
        return held


class StepTimer(trio.abc.Instrument):
    """Logs a task step longer than STALL_S with the task's name."""

    def __init__(self, log_every_s: float) -> None:
        self._began = time.perf_counter()  # attached mid-step: that step's end is timed from here
        self._limit = _Limited(log_every_s)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._began = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        now = time.perf_counter()
        took = now - self._began
        if took > STALL_S:
            held = self._limit.allow(now)
            if held is not None:
                logger.warning("slow task step {:.1f} ms: {}{}", took * 1000, task.name, _more(held))


async def watch_stalls(
    *, log_every_s: float = LOG_EVERY_S, task_status: trio.TaskStatus[Collections] = trio.TASK_STATUS_IGNORED
) -> None:
    """Log the event loop's stalls until cancelled; task_status gets the collector's timings.
    The gc callback is removed and any step timer detached when this returns."""
    collections = Collections()
    gc.callbacks.append(collections)
    timer: StepTimer | None = None
    trace_until = 0.0
    limit = _Limited(log_every_s)
    try:
        task_status.started(collections)
        last, cpu, paused = time.perf_counter(), time.thread_time(), collections.pause_s
        while True:
            await trio.sleep(TICK_S)
            now, now_cpu = time.perf_counter(), time.thread_time()
            late = now - last - TICK_S
            if late > STALL_S:
                gap, on_cpu, collecting = now - last, now_cpu - cpu, collections.pause_s - paused
                held = limit.allow(now)
                if held is not None:
                    logger.warning("event loop stalled {}{}", _why(gap, on_cpu, collecting, collections), _more(held))
                if on_cpu > STALL_S:
                    trace_until = now + TRACE_S
                    if timer is None:
                        timer = StepTimer(log_every_s)
                        trio.lowlevel.add_instrument(timer)
            if timer is not None and now > trace_until:
                trio.lowlevel.remove_instrument(timer)
                timer = None
            last, cpu, paused = time.perf_counter(), time.thread_time(), collections.pause_s
            collections.longest_s, collections.longest_generation = 0.0, -1
    finally:
        gc.callbacks.remove(collections)
        logger.info(
            "garbage collector: {} collections by generation, {:.1f} ms of CPU in all, the longest {:.1f} ms",
            "/".join(map(str, collections.count)),
            collections.pause_s * 1000,
            collections.max_s * 1000,
        )
        if timer is not None:
            trio.lowlevel.remove_instrument(timer)


def _why(gap: float, on_cpu: float, collecting: float, collections: Collections) -> str:
    text = f"{gap * 1000:.1f} ms: the loop's thread on the CPU {on_cpu * 1000:.1f} ms"
    if collecting > 0:
        text += f", collecting garbage {collecting * 1000:.1f} ms"
        if collections.longest_generation >= 0:
            text += f" (longest {collections.longest_s * 1000:.1f} ms, generation {collections.longest_generation})"
    off = gap - on_cpu
    if off > STALL_S:
        text += f", off the CPU {off * 1000:.1f} ms (another thread held the GIL, or the process waited for a core)"
    return text


def _more(held: int) -> str:
    return f" (+{held} more since the last line)" if held else ""
