"""scripts/bench.py: the report's rows and sections from results, and one short real run that
measures both transports and the floor side by side (a subprocess: simulator, daemon, floor
relay and load generator, all on loopback ports it picks)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("exai_bench_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path  # the script puts scripts/ first, for its h11sim: not for the other tests
    return module


bench = load_bench()


def sequential(added: float, cpu: float, **extra: float) -> dict[str, Any]:
    return {"calls": 10, "added_p50_ms": added, "added_p99_ms": added * 2, "daemon_cpu_ms_per_call": cpu,
            "driver_cpu_ms_per_call": 0.5, "cpu_share": {"daemon": 0.3, "simulator": 0.1, "driver": 0.2}, **extra}


def points(p50: float) -> dict[str, Any]:
    return {"points": [{"concurrency": c, "p50_ms": p50 * c, "p99_ms": 2 * p50 * c, "calls_per_s": 500 / p50, "errors": 0}
                       for c in (1, 8, 64)]}


RUN: dict[str, Any] = {
    "sequential": sequential(1.5, 1.6),
    "sequential_http": sequential(2.2, 2.3, over_ws_p50_ms=0.7, over_ws_p99_ms=0.9),
    "sequential_floor": sequential(0.7, 0.9),
    "throughput": {"calls_per_s": 600.0, "daemon_cpu_ms_per_call": 1.6},
    "throughput_http": {"calls_per_s": 350.0, "daemon_cpu_ms_per_call": 2.6},
    "throughput_floor": {"calls_per_s": 1200.0, "daemon_cpu_ms_per_call": 0.5},
    "disconnect_to_abort": {"p50_ms": 1.0, "p99_ms": 2.0, "samples_ms": [1.0, 2.0]},
    "disconnect_to_abort_http": {"p50_ms": 1.5, "p99_ms": 2.5, "samples_ms": [1.5, 2.5]},
    "concurrency": points(2.0),
    "concurrency_http": points(3.0),
}


def test_rows_put_http_and_the_floor_beside_websocket() -> None:
    rows = bench.table_rows([RUN])
    labels = [label for _, _, label, _, _ in rows]
    first = labels.index("one call at a time, added latency p50 (ms)")
    assert labels[first + 1] == "Streamable HTTP: one call at a time, added latency p50 (ms)"
    assert labels[first + 2] == "floor, the same libraries with no exai logic: one call at a time, added latency p50 (ms)"
    over = next(row for row in rows if row[1] == "over_ws_p50_ms")
    assert over[2] == "HTTP added p50 over WebSocket, one call at a time (ms)" and over[3] == "<= 1"
    assert over[4] is not None and over[4](0.7) and not over[4](1.2)
    floor_rows = [row for row in rows if row[0].endswith("_floor")]
    assert floor_rows and all(target == "-" and test is None for _, _, _, target, test in floor_rows)
    assert "Streamable HTTP: DELETE /mcp -> provider request aborted, p99 (ms)" in labels
    # A figure the runs do not have gets no row (the floor has no monitor to poll).
    assert not any(label.startswith("floor") and "healthz" in label for label in labels)


def test_report_shows_both_transports_and_the_floor(tmp_path: Path) -> None:
    out = {"runs": [RUN, RUN], "transports": ["ws", "http"], "floor": True}
    text = bench.write_report(out, "python scripts/bench.py --report", tmp_path).read_text()
    assert "not measured here yet" not in text
    assert "| HTTP added p50 over WebSocket, one call at a time (ms) | <= 1 | 0.7 [0.7-0.7] | yes |" in text
    assert "## Floor: the same libraries with no exai logic" in text
    assert "| 64 in flight, zero-latency provider (calls/s) | 600 | 350 | 1200 |" in text
    assert "| 1 | 2 | 4 | 250 | 3 | 6 | 166.667 |" in text  # the concurrency table, both transports
    assert "- Streamable HTTP: DELETE /mcp: 4 samples" in text
    assert "the floor (the same libraries with no exai logic) measured 1200" in text.lower()  # a missed target's bound
    for plot in ("latency_vs_concurrency.png", "abort_latency.png"):
        assert (tmp_path / "perf" / plot).stat().st_size > 0


def test_report_renders_results_from_before_http(tmp_path: Path) -> None:
    old = {key: value for key, value in RUN.items() if not key.endswith(("_http", "_floor"))}
    text = bench.write_report({"runs": [old]}, "python scripts/bench.py --report", tmp_path).read_text()
    assert "The loads reach the daemon over WebSocket." in text
    assert "## Floor" not in text
    assert "| in flight | WebSocket p50 ms | WebSocket p99 ms | WebSocket calls/s |" in text


@pytest.mark.slow
def test_one_call_at_a_time_over_both_transports_and_the_floor(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
    env["TMPDIR"] = str(tmp_path)  # the daemon's state directory
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--only", "sequential", "--transport", "both"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["transports"] == ["ws", "http", "modern"] and result["floor"] is True
    for key in ("sequential", "sequential_http", "sequential_modern", "sequential_floor"):
        figures = result[key]
        assert figures["calls"] == 60
        assert figures["daemon_p50_ms"] > 0 and figures["direct_p50_ms"] > 0
        assert figures["daemon_cpu_ms_per_call"] > 0 and figures["driver_cpu_ms_per_call"] > 0
    assert isinstance(result["sequential_http"]["over_ws_p50_ms"], float)
    assert isinstance(result["sequential_modern"]["over_http_p50_ms"], float)
    assert "over_ws_p50_ms" not in result["sequential_floor"]


def test_profile_tells_the_daemons_own_http_parsing_from_the_providers() -> None:
    root = "run (trio/_core/_run.py:2532);unrolled_run (trio/_core/_run.py:2866)"
    raw = "\n".join([
        f"{root};H11Protocol.handle (hypercorn/protocol/h11.py:120);Connection.next_event (h11/_connection.py:450) 3",
        f"{root};TrioH11Transport._next_event (exai/providers/transport.py:400);Connection.next_event (h11/_connection.py:450) 1",
        f"{root};HttpSession.send (exai/transports/http/httpsession.py:260);dumps (json/__init__.py:231) 1",
        f"{root};wait (trio/_core/_run.py:100) 5",
    ])
    shares = bench.categorise(raw)
    assert shares[bench.HTTP_SERVER] == 0.3
    assert shares[bench.PROVIDER_TRANSPORT] == 0.1
    assert shares["JSON encode/decode"] == 0.1  # the innermost match wins, inside the HTTP transport too
    assert shares[bench.SCHEDULER] == 0.5  # only trio frames after the run loop


def test_modern_http_rows_sit_beside_legacy_http_and_judge_it() -> None:
    run = {
        **RUN,
        "sequential_modern": sequential(2.3, 2.4, over_http_p50_ms=0.1, over_http_p99_ms=0.2),
        "throughput_modern": {"calls_per_s": 360.0, "daemon_cpu_ms_per_call": 2.5},
        "disconnect_to_abort_modern": {"p50_ms": 0.9, "p99_ms": 1.9, "samples_ms": [0.9, 1.9]},
    }
    bench.compare_eras(run)
    assert run["throughput_modern"]["over_http_calls_per_s"] == 10.0
    rows = bench.table_rows([run])
    labels = [label for _, _, label, _, _ in rows]
    first = labels.index("Streamable HTTP: one call at a time, added latency p50 (ms)")
    assert labels[first + 1] == "Streamable HTTP, modern 2026-07-28: one call at a time, added latency p50 (ms)"
    assert "Streamable HTTP, modern 2026-07-28: its stream closed -> provider request aborted, p99 (ms)" in labels
    over = next(row for row in rows if row[1] == "over_http_p50_ms")
    assert over[3] == "<= 0" and over[4] is not None and over[4](0.0) and not over[4](0.1)
    calls = next(row for row in rows if row[1] == "over_http_calls_per_s")
    assert calls[4] is not None and calls[4](10.0) and not calls[4](-1.0)
