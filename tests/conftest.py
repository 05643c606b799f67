"""Test rules: loopback only, port 0 everywhere, the real daemon over real WebSockets, the
real simulator over real HTTP. `autojump_clock` for logic about time; real time only with
short, generous bounds.

After every test that started a daemon, the invariant check runs (`harness.status_leaks`, the
one the soak uses too): no limiter token borrowed and no task waiting on a limiter, nothing
queued, no call alive, no connection open (tests close their clients before they end), no
provider request open or socket busy, no caller waiting for a request-rate turn, no circuit
probe in flight. A leak fails the test that caused it. Daemons run as subprocesses get the
same check from their /api/status (`support.assert_quiet_status`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import pytest
import trio
from harness import status_leaks
from loguru import logger
from redis_support import RedisServer

from exai.config import Settings
from exai.providers.simulator import Simulator, serve_simulator
from exai.server import Bound, serve

INVARIANT_GRACE_S = 2.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No variable of the user's shell or a .env file leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("EXAI_", "KIMI_", "GLM_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def log_lines() -> Any:
    """Every log line emitted during the test, as text."""
    lines: list[str] = []
    sink_id = logger.add(lambda m: lines.append(str(m).rstrip("\n")), level="DEBUG", format="{message}")
    yield lines
    logger.remove(sink_id)


@pytest.fixture
async def simulator(nursery: trio.Nursery) -> AsyncIterator[Simulator]:
    sim: Simulator = await nursery.start(serve_simulator, "127.0.0.1", 0)
    yield sim


def test_settings(tmp_path: Any, sim_url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "monitor_port": 0,
        "http_port": 0,
        "state_dir": tmp_path / "state",
        "allowed_roots": [tmp_path],
        "shutdown_grace_secs": 1.0,
        "log_level": "DEBUG",
    }
    if sim_url is not None:
        values.update(
            kimi_api_key="test-kimi-key",
            kimi_base_url=sim_url,
            glm_api_key="test-glm-key",
            glm_base_url=sim_url,
            default_model="kimi-k2-0905-preview",
        )
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]


class Daemons:
    """Starts daemons for a test and checks the invariants when it ends."""

    def __init__(self, nursery: trio.Nursery, tmp_path: Any, simulator: Simulator):
        self.nursery = nursery
        self.tmp_path = tmp_path
        self.simulator = simulator
        self.started: list[Bound] = []

    async def start(self, *, demo: bool = False, **overrides: Any) -> Bound:
        sim_url = None if demo else self.simulator.url
        settings = test_settings(self.tmp_path, sim_url, **overrides)
        bound: Bound = await self.nursery.start(partial(serve, settings, demo=demo))
        self.started.append(bound)
        return bound

    def leaks(self, bound: Bound) -> list[str]:
        """The leak invariant (harness.status_leaks) over the daemon's own status snapshot."""
        return status_leaks(bound.daemon.status())

    async def check_invariants(self) -> None:
        for bound in self.started:
            with trio.move_on_after(INVARIANT_GRACE_S):
                while self.leaks(bound):  # noqa: ASYNC110 - several owners, no single event
                    await trio.sleep(0.01)
            problems = self.leaks(bound)
            assert not problems, "; ".join(problems)
        if self.simulator.stats.inflight:
            with trio.move_on_after(INVARIANT_GRACE_S):
                await self.simulator.wait_until(lambda s: s.inflight == 0)
            assert self.simulator.stats.inflight == 0, "the simulator still has requests in flight"

    async def stop_all(self) -> None:
        for bound in self.started:
            bound.daemon.request_shutdown()
            with trio.fail_after(10):
                await bound.daemon.stopped.wait()


@pytest.fixture
async def daemons(nursery: trio.Nursery, tmp_path: Any, simulator: Simulator) -> AsyncIterator[Daemons]:
    harness = Daemons(nursery, tmp_path, simulator)
    yield harness
    try:
        await harness.check_invariants()
    finally:
        await harness.stop_all()


@pytest.fixture
async def daemon(daemons: Daemons) -> Bound:
    """A daemon on the simulator with the default limits."""
    return await daemons.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test session's own (skips when the binary is absent)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis database for one test."""
    if redis_server.process is None:  # a test stopped it and failed before starting it again
        redis_server.start()
    assert redis_server.command("FLUSHALL") == b"+OK"
    return redis_server.url()
