"""The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by
.ci/run) loads `/` from a live daemon and we read what its scripts put on the page.

Loopback only; real time with generous bounds. Screenshots are saved under the test's tmp dir.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import trio
from chromium import CHROMIUM, Page, open_page

from exai.client import connect

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"
)

VIEW = """(() => {
  const cells = tr => Array.from(tr.children).map(td => td.textContent);
  const banner = document.getElementById('banner');
  return {
    live: document.getElementById('live').textContent,
    banner: banner.hidden ? null : banner.textContent,
    inflight: Array.from(document.querySelectorAll('#inflight tr')).map(tr => ({
      cells: cells(tr), bar: tr.querySelector('.bar .fill').style.width,
    })),
    more: document.getElementById('inflight-more').hidden ? null : document.getElementById('inflight-more').textContent,
    failures: Array.from(document.querySelectorAll('#failures tr')).map(cells),
    tasks: Array.from(document.querySelectorAll('#tasks tr')).map(cells),
    tasksCount: document.getElementById('tasks-count').textContent,
    providers: Array.from(document.querySelectorAll('#providers .provider .name')).map(n => n.textContent),
    limiters: Array.from(document.querySelectorAll('#limiters .limiter .name')).map(n => n.textContent),
    images: document.querySelectorAll('img').length,
    legend: document.querySelector('#chart-latency .legend').firstChild?.textContent,
    errors: window.__errors,
  };
})()"""


HOVER = """(() => {
  const canvas = document.querySelector('#chart-latency canvas');
  const box = canvas.getBoundingClientRect();
  canvas.dispatchEvent(new MouseEvent('mousemove', {clientX: box.right - 20, clientY: box.top + 30}));
})()"""

# A provider error whose message is markup: the page must show it as text.
MARKUP_ERROR = {"status": 400, "error_body": {"error": {"message": '<img src="x" onerror="document.title=1">', "type": "x"}}}


async def seen(page: Page, condition: Callable[[dict[str, Any]], bool], what: str, timeout: float = 15) -> dict[str, Any]:
    """The page's view once `condition` holds on it; fails after `timeout` seconds."""
    view: dict[str, Any] = {}
    with trio.move_on_after(timeout):
        while True:
            view = await page.evaluate(VIEW)
            if condition(view):
                return view
            await trio.sleep(0.2)
    raise AssertionError(f"the dashboard never showed {what}; last view: {json.dumps(view)[:2000]}")


async def test_dashboard_shows_a_slow_call_and_a_failure_live(daemon: Any, tmp_path: Any) -> None:
    async with open_page(tmp_path / "profile") as page:
        await page.goto(f"{daemon.monitor_url}/")
        await seen(page, lambda v: v["live"] == "live", "itself live")
        async with connect(daemon.url) as slow_client, connect(daemon.url) as failing_client:
            answers: list[Any] = []

            async def slow() -> None:
                answers.append(await slow_client.call_tool("chat", {"prompt": 'slow\n#sim {"latency_s": 6}'}, timeout=30))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                failed = await failing_client.call_tool("chat", {"prompt": f"refused\n#sim {json.dumps(MARKUP_ERROR)}"})
                assert failed.is_error and "<img" in failed.text
                with trio.fail_after(2):
                    while not len(daemon.daemon.calls):  # noqa: ASYNC110 - the daemon's state
                        await trio.sleep(0.01)
                (call,) = daemon.daemon.calls.active.values()
                key = [call.connection_id, str(call.id)]
                view = await seen(
                    page,
                    lambda v: any(r["cells"][:2] == key for r in v["inflight"])
                    and any(f[4] == failed.text for f in v["failures"]),
                    "the slow call in flight and the failure",
                )
                used = float(view["inflight"][0]["bar"].rstrip("%"))
                later = await seen(  # the deadline bar fills as the call ages
                    page,
                    lambda v: bool(v["inflight"]) and float(v["inflight"][0]["bar"].rstrip("%")) > used + 2,
                    "the deadline bar grow",
                )
                (row,) = later["inflight"]
                connection, request, tool, model, _step, _progress, _age, deadline = row["cells"]
                assert [connection, request] == key
                assert tool == "chat" and model == "kimi-k2-0905-preview"
                assert re.fullmatch(r"\d+\.\d s left", deadline), deadline
                assert float(row["bar"].rstrip("%")) < 50  # a few seconds of 30 used
                (failure,) = view["failures"]
                assert failure[2] == "chat" and failure[3] == "tool error"
                assert failure[1].startswith("c") and failure[1] != f"{connection} / {request}"
                assert view["images"] == 0  # the markup in the message stayed text
                assert view["providers"] == ["glm", "kimi"]
                assert view["limiters"][:3] == ["global", "kimi", "glm"]
                # Hovering a chart shows that second's values in every legend.
                await page.evaluate(HOVER)
                hovered = await page.evaluate(VIEW)
                assert re.fullmatch(r"\d\d:\d\d:\d\d:", hovered["legend"]), hovered["legend"]
                assert hovered["errors"] == []
                await page.screenshot(tmp_path / "dashboard.png")
                assert (tmp_path / "dashboard.png").stat().st_size > 10_000
            assert not answers[0].is_error
            await seen(page, lambda v: not v["inflight"], "the slow call leave the in-flight list")
        daemon.daemon.request_shutdown()
        view = await seen(page, lambda v: v["banner"] is not None, "a banner once the daemon stopped")
        assert "not answering" in view["banner"] and view["live"] == "not answering"
        assert view["errors"] == []  # no script error, not even once the daemon was gone


async def test_dashboard_stays_readable_at_1000_calls_in_flight(daemons: Any, simulator: Any, tmp_path: Any) -> None:
    bound = await daemons.start(max_queued=2000)
    async with open_page(tmp_path / "profile") as page, connect(bound.url) as client:
        await page.goto(f"{bound.monitor_url}/")
        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(client.call_tool, "chat", {"prompt": f'hold {i}\n#sim {{"hang": true}}'})
            with trio.fail_after(10):
                while len(bound.daemon.calls) < 1000:  # noqa: ASYNC110 - the daemon's state
                    await trio.sleep(0.05)
            view = await seen(page, lambda v: v["more"] is not None and "970 more" in v["more"], "the top 30 and a count")
            assert len(view["inflight"]) == 30
            await page.screenshot(tmp_path / "dashboard-1000.png")
            nursery.cancel_scope.cancel()


async def test_dashboard_signs_in_once_with_the_token_in_a_real_browser(daemons: Any, tmp_path: Any) -> None:
    token = "browser-token-42"
    bound = await daemons.start(auth_token=token)
    async with open_page(tmp_path / "profile") as page:
        await page.goto(f"{bound.monitor_url}/")
        assert "EXAI_AUTH_TOKEN" in await page.evaluate("document.body.textContent")  # the 401 answer
        await page.goto(f"{bound.monitor_url}/?token={token}")
        view = await seen(page, lambda v: v["live"] == "live", "itself live after signing in")
        assert await page.evaluate("location.href") == f"{bound.monitor_url}/"  # the token left the URL
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        assert view["limiters"][:3] == ["global", "kimi", "glm"] and view["errors"] == []
        await page.goto(f"{bound.monitor_url}/")  # later visits need no token
        await seen(page, lambda v: v["live"] == "live", "itself live on a plain visit")


async def test_dashboard_shows_the_working_tasks_and_the_counts(daemon: Any, tmp_path: Any) -> None:
    async with open_page(tmp_path / "profile") as page:
        await page.goto(f"{daemon.monitor_url}/")
        await seen(page, lambda v: v["live"] == "live", "itself live")
        async with connect(daemon.url, era="legacy") as client:  # a legacy task: made at once
            params = {"name": "chat", "arguments": {"prompt": '#sim {"hang": true}'}, "task": {}}
            task_id = (await client.request("tools/call", params))["task"]["taskId"]
            view = await seen(page, lambda v: len(v["tasks"]) == 1, "the working task")
            ((shown_id, tool, message, age),) = view["tasks"]
            assert task_id.startswith(shown_id.rstrip("…")) and task_id not in json.dumps(view)
            assert tool == "chat" and message.startswith(("queued", "running")) and age
            assert view["tasksCount"].startswith("(1 working")
            await client.request("tasks/cancel", {"taskId": task_id})
            view = await seen(page, lambda v: not v["tasks"] and "1 cancelled" in v["tasksCount"], "the task cancelled")
            assert view["errors"] == []
