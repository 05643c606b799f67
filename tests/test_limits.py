"""The admission queue and limiters, in-process, on the autojump clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from exai.limits import Limits, Overloaded


def limits(**overrides: int) -> Limits:
    values = {"global_max": 2, "session_max": 2, "max_queued": 1}
    values.update(overrides)
    return Limits(
        global_max=values["global_max"],
        session_max=values["session_max"],
        max_queued=values["max_queued"],
        provider_max={"kimi": 1, "glm": 1},
    )


async def hold(lim: Limits, session: trio.CapacityLimiter, release: trio.Event, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with lim.admit(session):
        task_status.started()
        await release.wait()


async def test_queue_fills_then_refuses_at_once(autojump_clock: trio.abc.Clock) -> None:
    lim = limits()
    release = trio.Event()
    async with lim.session("c1") as session, trio.open_nursery() as nursery:
        await nursery.start(hold, lim, session, release)
        await nursery.start(hold, lim, session, release)
        assert lim.statistics()["global"]["borrowed"] == 2 and lim.queued == 0
        nursery.start_soon(hold, lim, session, release)  # waits: the only queue place
        await trio.testing.wait_all_tasks_blocked()
        assert lim.queued == 1
        assert lim.statistics()["global"]["borrowed"] == 2  # the queued one holds nothing
        started = trio.current_time()
        with pytest.raises(Overloaded) as refused:
            async with lim.admit(session):
                raise AssertionError("admitted past a full queue")
        assert trio.current_time() == started
        assert refused.value.data["retry_after_s"] >= 1
        release.set()
    assert lim.queued == 0
    assert lim.borrowed_total() == 0


async def test_cancelled_while_queued_leaves_no_trace(autojump_clock: trio.abc.Clock) -> None:
    lim = limits(global_max=1, session_max=1, max_queued=5)
    release = trio.Event()
    async with lim.session("c1") as session, trio.open_nursery() as nursery:
        await nursery.start(hold, lim, session, release)
        with trio.move_on_after(5) as waited:
            async with lim.admit(session):
                raise AssertionError("there was no free slot")
        assert waited.cancelled_caught  # it was queued until cancelled, not refused
        assert lim.queued == 0
        assert lim.statistics()["global"] == {"borrowed": 1, "total": 1, "waiting": 0}
        release.set()
    assert lim.borrowed_total() == 0
    assert "session:c1" not in lim.statistics()


async def test_statistics_name_every_limiter() -> None:
    lim = limits()
    async with lim.session("c7") as session, lim.admit(session):
        stats = lim.statistics()
        assert stats["global"] == {"borrowed": 1, "total": 2, "waiting": 0}
        assert stats["session:c7"]["borrowed"] == 1
        assert set(stats) == {"global", "kimi", "glm", "session:c7"}
