"""The monitor over real HTTP: health, readiness, metrics, status, dashboard."""

from __future__ import annotations

import re
import time
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from conftest import test_settings
from prometheus_client.parser import text_string_to_metric_families
from support import eventually

from exai.client import RpcError, connect
from exai.history import History, bucket_of, quantile

HANG = '#sim {"hang": true}'


async def status_when(http: httpx.AsyncClient, condition: Any, timeout: float = 2.0) -> dict[str, Any]:
    """/api/status once it shows `condition` (it is at most one heartbeat old); fail after timeout."""
    with trio.fail_after(timeout):
        while True:
            status: dict[str, Any] = (await http.get("/api/status")).json()
            if condition(status):
                return status
            await trio.sleep(0.01)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_health_metrics_and_dashboard(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.text == "ok"
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        before = sample((await http.get("/metrics")).text, "exai_requests_total", tool="chat", outcome="ok")
        async with connect(daemon.url) as client:
            await client.call_tool("chat", {"prompt": "count me"})
        metrics = (await http.get("/metrics")).text
        assert sample(metrics, "exai_requests_total", tool="chat", outcome="ok") == before + 1
        for name in (
            "exai_request_duration_seconds_bucket",
            "exai_inflight_requests",
            "exai_connections",
            'exai_limiter_borrowed{limiter="global"} 0.0',
            "exai_provider_requests_total",
            "exai_provider_latency_seconds",
        ):
            assert name in metrics, name
        page = await http.get("/")
        assert page.status_code == 200 and "/api/status" in page.text
        assert "innerHTML" not in page.text  # client-chosen request ids are shown as text only
        assert (await http.get("/nope")).status_code == 404
        assert (await http.post("/healthz")).status_code == 405


async def test_api_status_shows_calls_limiters_and_providers(daemons: Any, simulator: Any) -> None:
    before = time.time()
    daemon = await daemons.start()
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http, connect(daemon.url) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.call_tool, "chat", {"prompt": f"x\n{HANG}"})
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 1)
            status = await status_when(http, lambda s: s["inflight"] == 1)
            nursery.cancel_scope.cancel()
        await trio.sleep(0.2)
        later = (await http.get("/api/status")).json()
    elapsed = time.time() - before
    assert status["connections"] == 1
    assert status["inflight"] == 1
    assert status["queued"] == 0
    assert 0 < status["uptime_s"] < later["uptime_s"] <= elapsed  # seconds since this daemon started
    assert later["uptime_s"] - status["uptime_s"] >= 0.19
    limiters = status["limiters"]
    assert limiters["global"] == {"borrowed": 1, "total": 24, "waiting": 0}
    assert limiters["kimi"]["borrowed"] == 1 and limiters["glm"]["total"] == 4
    sessions = [name for name in limiters if name.startswith("session:")]
    assert len(sessions) == 1 and limiters[sessions[0]]["borrowed"] == 1
    (request,) = status["requests"]
    assert request["tool"] == "chat" and 0 <= request["age_s"] < 2 and 178 < request["deadline_s"] <= 180
    for provider in ("kimi", "glm"):
        assert {"circuit", "inflight", "calls_total", "errors_total"} <= set(status["providers"][provider])
    assert "test-kimi-key" not in str(status)


async def test_api_status_is_of_this_moment_not_of_the_last_heartbeat(daemon: Any, simulator: Any) -> None:
    """The daemon's loop builds the snapshot when /api/status asks: a call is shown the moment
    it runs and gone the moment it ended, with no wait for the next beat."""
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http, connect(daemon.url) as client:
        for _ in range(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call_tool, "chat", {"prompt": f"x\n{HANG}"})
                with trio.fail_after(2):
                    await simulator.wait_until(lambda s: s.inflight == 1)
                running = (await http.get("/api/status")).json()
                nursery.cancel_scope.cancel()
            assert running["inflight"] == 1 and len(running["requests"]) == 1
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 0)
            await client.call_tool("version", {})  # the cancelled call has been seen out by now
            ended = (await http.get("/api/status")).json()
            assert ended["inflight"] == 0 and ended["requests"] == []


async def test_readyz_is_503_while_draining(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(shutdown_grace_secs=1.0)
    async with httpx.AsyncClient(base_url=bound.monitor_url) as http, connect(bound.url) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, client)
            with trio.fail_after(2):
                await simulator.wait_until(lambda s: s.inflight == 1)
            bound.daemon.request_shutdown()
            await trio.sleep(0.05)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert "draining" in ready.json()["reason"]
            with trio.fail_after(5):
                await bound.daemon.stopped.wait()


async def _hold(client: Any) -> None:
    try:
        await client.call_tool("chat", {"prompt": f"hold\n{HANG}"})
    except Exception:
        pass  # the shutdown ends this call; what it answers is tested elsewhere


async def test_status_tool_returns_the_same_data(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("status", {})
        assert not result.is_error
        assert result.structured["connections"] == 1
        assert "global" in result.structured["limiters"]


def test_healthz_fails_when_the_event_loop_stalls(tmp_path: Any) -> None:
    import time

    from exai.monitor import HEALTH_STALL_S, route
    from exai.server import Daemon, Snapshot

    daemon = Daemon(test_settings(tmp_path, None))
    daemon.snapshot = Snapshot(time.monotonic() - HEALTH_STALL_S - 1, True, False, {}, {})
    status, _, body, _ = route(daemon, "GET", "/healthz")
    assert status == 503 and b"unresponsive" in body
    daemon.snapshot = Snapshot(time.monotonic(), True, False, {}, {})
    assert route(daemon, "GET", "/healthz")[0] == 200


async def test_monitor_answers_while_the_loop_is_blocked(daemon: Any) -> None:
    """The monitor has its own thread and loop: a stuck daemon loop does not silence it."""
    import threading
    import time

    answered: list[tuple[float, int]] = []

    def ask() -> None:
        time.sleep(0.1)  # the daemon's loop is blocked by now
        with httpx.Client(base_url=daemon.monitor_url) as http:
            code = http.get("/api/status", timeout=2).status_code
        answered.append((time.monotonic(), code))

    asker = threading.Thread(target=ask)
    asker.start()
    blocked_until = time.monotonic() + 0.8
    time.sleep(0.8)  # noqa: ASYNC251 - blocks the daemon's loop on purpose
    asker.join()
    assert answered and answered[0][1] == 200
    assert answered[0][0] < blocked_until


# -- history ---------------------------------------------------------------------------


async def test_api_history_counts_a_known_sequence_of_calls(daemon: Any, simulator: Any) -> None:
    """3 ok chats, 1 tool error (provider 400), 1 deadline: each is counted once, by outcome,
    the failures keep what the client saw, and the provider requests are counted too."""
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http, connect(daemon.url) as client:
        for i in range(3):
            assert not (await client.call_tool("chat", {"prompt": f"ok {i}"})).is_error
        failed = await client.call_tool("chat", {"prompt": '#sim {"status": 400}'})
        assert failed.is_error
        with pytest.raises(RpcError) as timed_out:
            await client.call_tool("chat", {"prompt": '#sim {"latency_s": 5}'}, timeout=0.3)

        async def history() -> dict[str, Any]:
            return dict((await http.get("/api/history")).json())

        with trio.fail_after(3):  # provider counts arrive with the next heartbeat sample
            doc = await history()
            while sum(_total(row, "provider_requests") for row in doc["series"]) < 5:
                await trio.sleep(0.05)
                doc = await history()
    rows = doc["series"]
    assert doc["seconds"] == 900 and 1 <= len(rows) <= 900
    assert [row["t"] for row in rows] == list(range(rows[0]["t"], rows[0]["t"] + len(rows)))
    assert rows[-1]["t"] == int(doc["now"])
    assert set(rows[0]) == {
        "t", "started", "finished", "cancelled", "latency_p50_s", "latency_p95_s",
        "provider_requests", "provider_errors", "provider_error_kinds", "inflight", "queued",
    }
    assert sum(row["started"] for row in rows) == 5
    finished: dict[str, int] = {}
    for row in rows:
        for outcome, n in row["finished"].items():
            finished[outcome] = finished.get(outcome, 0) + n
    assert finished == {"ok": 3, "tool_error": 1, "cancelled_deadline": 1}
    assert sum(row["cancelled"].get("deadline", 0) for row in rows) == 1
    assert sum(_total(row, "provider_requests") for row in rows) == 5
    assert sum(row["provider_error_kinds"].get("bad_request", 0) for row in rows) == 1
    assert sum(_total(row, "provider_errors") for row in rows) == 1
    assert any(row["latency_p95_s"] is not None for row in rows)
    assert doc["last_minute"]["finished"] == finished
    assert doc["last_minute"]["latency_p95_s"] >= 0.3  # the deadline call took 0.3 s
    assert doc["limits"] == {"inflight": 24, "queued": 256}
    deadline, tool_error = doc["failures"]  # newest first
    assert tool_error["outcome"] == "tool_error" and tool_error["message"] == failed.text
    assert tool_error["tool"] == "chat" and tool_error["connection"].startswith("c")
    assert deadline["outcome"] == "cancelled_deadline" and deadline["code"] == -32001
    assert deadline["message"] == timed_out.value.message == "Request timed out after 0.3 s"


def _total(row: dict[str, Any], key: str) -> int:
    return sum(row[key].values())


async def test_api_history_since_and_its_errors(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http:
        now = int((await http.get("/api/history")).json()["now"])
        recent = (await http.get(f"/api/history?since={now}")).json()["series"]
        assert 1 <= len(recent) <= 2 and recent[0]["t"] == now
        for bad in ("soon", "-1", "1.5", "", "9" * 5000, "%C2%B2"):
            answer = await http.get(f"/api/history?since={bad}")
            assert answer.status_code == 400 and "since must be" in answer.text


def test_history_ring_is_bounded_and_forgets_old_seconds() -> None:
    """Drive the ring with a fake clock through 2,000 seconds of calls: 900 rows, 900 slots."""
    now = [1_000_000.0]
    history = History(clock=lambda: now[0])
    for _ in range(2000):
        history.call_started()
        history.call_finished(connection="c1", request_id=1, tool="chat", outcome="ok", took_s=0.1, response={})
        history.sample(inflight=3, queued=1, providers={"kimi": {"calls_total": int(now[0]) - 999_999}})
        now[0] += 1
    history.call_started()
    doc = history.snapshot()
    rows = doc["series"]
    assert len(rows) == 900 and history.slots_in_use() == 900
    assert rows[-1]["t"] == 1_002_000 and rows[0]["t"] == 1_002_000 - 899
    assert all(row["finished"] == {"ok": 1} and row["started"] == 1 for row in rows[:-1])
    assert rows[-1]["started"] == 1 and rows[-1]["finished"] == {}  # the slot was reset, not added to
    assert all(row["provider_requests"] == {"kimi": 1} for row in rows[:-1])
    assert rows[0]["inflight"] == 3 and rows[-1]["inflight"] is None  # not sampled yet this second
    assert doc["last_minute"]["started"] == 60 and doc["last_minute"]["finished"] == {"ok": 59}
    assert len(history.snapshot(since=1_002_000 - 5)["series"]) == 6
    now[0] += 5000  # a long quiet spell: only empty rows
    assert all(row["started"] == 0 for row in history.snapshot()["series"])


def test_history_keeps_the_last_50_failures_as_the_client_saw_them() -> None:
    history = History()
    for i in range(60):
        history.call_finished(
            connection="c2", request_id=i, tool="chat", outcome="error", took_s=0.01,
            response={"jsonrpc": "2.0", "id": i, "error": {"code": -32603, "message": "Internal error", "data": {"error_id": f"e{i}"}}},
        )
    history.call_finished(connection="c2", request_id="x", tool="chat", outcome="ok", took_s=0.01, response={})
    history.call_finished(connection="c2", request_id="y", tool="chat", outcome="cancelled_client", took_s=0.01, response=None)
    history.call_finished(
        connection="c3", request_id="z", tool="chat", outcome="tool_error", took_s=0.01,
        response={"result": {"content": [{"type": "text", "text": "x" * 5000}], "isError": True}},
    )
    failures = history.snapshot()["failures"]
    assert len(failures) == 50
    assert failures[0]["id"] == "z" and len(failures[0]["message"]) == 2000 and failures[0]["message"].endswith("…")
    assert failures[1]["error_id"] == "e59" and failures[1]["code"] == -32603
    assert failures[-1]["error_id"] == "e11"  # the oldest ones are gone


def test_latency_quantiles_from_the_buckets() -> None:
    buckets: dict[int, int] = {}
    for took in [0.1] * 18 + [5.0] * 2:
        index = bucket_of(took)
        buckets[index] = buckets.get(index, 0) + 1
    p50, p95 = quantile(buckets, 0.5), quantile(buckets, 0.95)
    assert p50 is not None and 0.1 <= p50 < 0.1 * 1.2
    assert p95 is not None and 5.0 <= p95 < 5.0 * 1.2
    assert quantile({}, 0.5) is None
    assert bucket_of(0) == 0 and bucket_of(1e9) == bucket_of(1e12)  # bounded both ways


# -- what /api/status shows of calls and providers --------------------------------------


async def test_inflight_calls_show_connection_model_and_progress(daemon: Any, simulator: Any) -> None:
    prompt = 'x\n#sim {"chunks": 5, "stall_after": 2}'
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http, connect(daemon.url) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.call_tool, "chat", {"prompt": prompt}, timeout=20, on_progress=lambda _: None))
            await eventually(lambda: any(c.activity.message for c in daemon.daemon.calls.active.values()))
            status = await status_when(http, lambda s: s["requests"] and s["requests"][0]["message"])
            (request,) = status["requests"]
            nursery.cancel_scope.cancel()
    assert request["connection"] in daemon.daemon.connections.active or request["connection"].startswith("c")
    assert request["model"] == "kimi-k2-0905-preview"
    assert request["state"] == "running" and request["timeout_s"] == 20
    assert "tokens" in request["message"]
    assert request["step"] is None


async def test_provider_statistics_show_an_open_circuit_and_when_it_probes_again(daemons: Any) -> None:
    bound = await daemons.start(circuit_failures=1, circuit_cooldown_secs=30, provider_max_retries=0)
    async with httpx.AsyncClient(base_url=bound.monitor_url) as http, connect(bound.url) as client:
        result = await client.call_tool("chat", {"prompt": '#sim {"status": 503}'})
        assert result.is_error
        kimi = (await status_when(http, lambda s: s["providers"]["kimi"]["circuit"] == "open"))["providers"]["kimi"]
    assert kimi["circuit"] == "open"  # built on the daemon's loop, read on the monitor's thread
    assert 25 < kimi["probe_in_s"] <= 30
    assert kimi["errors_by_kind"] == {"unavailable": 1}
    assert kimi["latency_p50_s"] is not None and kimi["latency_p95_s"] >= kimi["latency_p50_s"]
    assert kimi["rpm"] is None and kimi["rpm_waiting"] == 0


async def test_provider_statistics_show_the_rpm_ceiling(daemons: Any) -> None:
    bound = await daemons.start(kimi_rpm=120)
    async with httpx.AsyncClient(base_url=bound.monitor_url) as http:
        providers = (await http.get("/api/status")).json()["providers"]
    assert providers["kimi"]["rpm"] == 120 and providers["glm"]["rpm"] is None


async def test_the_dashboard_assets_are_served_with_a_strict_policy(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http:
        page = await http.get("/")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/dashboard.js"' in page.text and "/dashboard.css" in page.text
        script = await http.get("/dashboard.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert "/api/history" in script.text
        for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert unsafe not in script.text and unsafe not in page.text, unsafe
        assert (await http.get("/dashboard.css")).headers["content-type"].startswith("text/css")
        head = await http.head("/")
        assert head.status_code == 200 and head.content == b""


# -- auth (CONTRACT section 5) -----------------------------------------------------------

TOKEN = "monitor-token-7f3a"
PROTECTED = ("/", "/api/status", "/api/history", "/metrics", "/dashboard.js")


async def test_monitor_auth_requires_the_token_except_for_health(daemons: Any) -> None:
    bound = await daemons.start(auth_token=TOKEN)
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=bound.monitor_url) as http:
        for path in ("/healthz", "/readyz"):
            assert (await http.get(path)).status_code == 200
        wrong = {
            "none": {},
            "wrong": {"Authorization": "Bearer nope"},
            "last character": {"Authorization": f"Bearer {TOKEN[:-1]}b"},
            "prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
            "basic": {"Authorization": f"Basic {TOKEN}"},
            "non-ascii": {"Authorization": b"Bearer \xff\xfe" + TOKEN.encode() + b"\xc3\xa9"},
            "cookie": {"Cookie": f"exai_dashboard={TOKEN}"},
        }
        for path in PROTECTED:
            for what, headers in wrong.items():
                answer = await http.get(path, headers=headers)
                assert answer.status_code == 401, (path, what)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                seen.append(answer.text + str(answer.headers))
            good = await http.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert good.status_code == 200, path
        assert (await http.get("/healthz")).status_code == 200  # still up after the odd headers
    assert not any(TOKEN in text for text in seen)


async def test_dashboard_takes_the_token_once_and_keeps_it_in_a_cookie(daemons: Any) -> None:
    bound = await daemons.start(auth_token=TOKEN)
    async with httpx.AsyncClient(base_url=bound.monitor_url) as http:
        signed_in = await http.get(f"/?token={TOKEN}")
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie  # the cookie holds a value derived from the token
        assert signed_in.headers["referrer-policy"] == "no-referrer"
        for path in ("/", "/api/status", "/api/history", "/dashboard.js"):
            assert (await http.get(path)).status_code == 200, path  # the client sends the cookie
        http.cookies.clear()
        assert (await http.get("/api/status")).status_code == 401
        refused = await http.get("/?token=wrong")
        assert refused.status_code == 401 and "set-cookie" not in refused.headers and "wrong token" in refused.text
        assert (await http.get(f"/?token={TOKEN[:-1]}%C3%A9")).status_code == 401
        # Only the page takes the token from its URL, and only once: it is not echoed anywhere.
        assert (await http.get(f"/api/status?token={TOKEN}")).status_code == 401
        assert (await http.get(f"/metrics?token={TOKEN}")).status_code == 401


def test_monitor_auth_compares_bytes_and_never_raises(tmp_path: Any) -> None:
    from exai.monitor import route
    from exai.server import Daemon, Snapshot

    daemon = Daemon(test_settings(tmp_path, None, auth_token=TOKEN))
    daemon.snapshot = Snapshot(0.0, True, False, {}, {})
    for header in (b"\xff", b"Bearer", b"Bearer ", b"bearer \x00\x01", b"\xe2\x82\xac" * 1000, b""):
        assert route(daemon, "GET", "/api/status", b"", [(b"authorization", header)])[0] == 401
    for query in (b"token=%ff%fe", b"token", b"token=&token=x", b"%zz=1", b"\xff=\xff"):
        assert route(daemon, "GET", "/", query, [])[0] == 401
    assert route(daemon, "GET", "/", b"a=1&token=" + TOKEN.encode(), [])[0] == 303


# -- exai status / exai top --------------------------------------------------------------


async def test_exai_status_shows_rates_calls_and_failures_with_the_token(
    daemons: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from exai import clientcli

    monkeypatch.setattr(clientcli, "quiet_logs", lambda *args: None)
    monkeypatch.setenv("COLUMNS", "160")
    bound = await daemons.start(auth_token=TOKEN)
    async with connect(bound.url, token=TOKEN) as client:
        failed = await client.call_tool("chat", {"prompt": 'no\n#sim {"status": 400}'})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.call_tool, "chat", {"prompt": f"held\n{HANG}"})
            await eventually(lambda: len(bound.daemon.calls) == 1)
            await eventually(lambda: bool(bound.daemon.snapshot.status["requests"]))  # the next beat
            status = partial(clientcli.run_status, monitor_url=bound.monitor_url, as_json=False)
            assert await trio.to_thread.run_sync(partial(status, token=TOKEN)) == 0
            shown = capsys.readouterr().out
            assert await trio.to_thread.run_sync(status) == 4
            refused = capsys.readouterr().err
            nursery.cancel_scope.cancel()
    for expected in ("last minute", "calls/s", "tool error 1", "in flight (1: 1 running, 0 queued)",
                     "kimi-k2-0905-preview", "recent failures (1)", failed.text[:40], "░"):
        assert expected in shown, expected
    assert re.search(r"░ 1[78]\d\.\ds", shown), "a deadline bar with about 180 s left"
    assert "HTTP 401" in refused and "--token" in refused


async def test_the_thread_count_comes_from_the_store(tmp_path: Any) -> None:
    from exai.config import Settings
    from exai.monitor import _count_threads
    from exai.store import Turn, open_store

    async with open_store(Settings(state_dir=tmp_path / "state")) as store:
        assert await _count_threads(store) == 0
        await store.append(None, "chat", [Turn("user", "a", "chat")])
        assert await _count_threads(store) == 1

        class Broken:
            """The real store, but its count fails (another process has the file locked)."""

            def __getattr__(self, name: str) -> Any:
                return getattr(store, name)

            async def count(self) -> int:
                raise OSError("database is locked")

        assert await _count_threads(Broken()) is None  # shown as unknown; the heartbeat goes on


def test_exai_top_lists_the_most_urgent_calls_and_counts_the_rest() -> None:
    import io

    from rich.console import Console

    from exai.clientcli import render_status

    requests = [
        {"id": i, "connection": f"c{i % 7}", "tool": "chat", "age_s": 1.0, "deadline_s": 100.0 - i, "timeout_s": 180,
         "state": "running", "model": "glm-4.6", "step": None, "message": "<b>not markup</b>"}
        for i in range(100)
    ]
    console = Console(file=io.StringIO(), width=160)
    console.print(render_status({"requests": requests}, {"series": [], "failures": []}, max_rows=10))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "in flight (100: 100 running, 0 queued)" in shown and "and 90 more" in shown
    assert shown.index(" 99 ") < shown.index(" 90 ") and " 89 " not in shown  # nearest deadline first
    assert "<b>not markup</b>" in shown


async def test_a_failing_monitor_request_ends_only_that_request(
    daemon: Any, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    def broken() -> dict[str, Any]:
        return {"unserialisable": object()}  # a bug the snapshot carries to the monitor's thread

    monkeypatch.setattr(daemon.daemon, "status", broken)
    await eventually(lambda: "unserialisable" in daemon.daemon.snapshot.status)
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http:
        answer = await http.get("/api/status")
        assert answer.status_code == 500
        error_id = re.fullmatch(r"internal error, error id ([0-9a-f]{12})\n", answer.text)
        assert error_id is not None
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/api/history")).status_code == 200
    assert any(error_id.group(1) in line and "/api/status" in line for line in log_lines)
    monkeypatch.undo()  # the leak check after the test reads the daemon's status too
