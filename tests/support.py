"""Small helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def eventually(condition: Callable[[], bool], timeout: float = 2.0, what: str = "condition") -> None:
    """Wait until `condition()` holds, polling; fail after `timeout` seconds."""
    with trio.move_on_after(timeout):
        while not condition():  # noqa: ASYNC110 - state owned by another task, no event to wait on
            await trio.sleep(0.002)
    assert condition(), f"{what} did not hold within {timeout} s"
