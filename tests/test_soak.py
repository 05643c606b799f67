"""The chaos soak (scripts/soak.py) for 60 s, as CI runs it: its own processes on loopback,
exit 0 only when every invariant held. The 10-minute run is `python scripts/soak.py --duration 600`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

SOAK = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


@pytest.mark.slow
async def test_a_60_second_chaos_soak_holds_every_invariant(tmp_path: Path) -> None:
    numbers = tmp_path / "soak.json"
    with trio.fail_after(180):
        run = await trio.run_process(
            [sys.executable, str(SOAK), "--duration", "60", "--clients", "16", "--http-clients", "6", "--json", str(numbers)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    report = run.stdout.decode(errors="replace")
    assert run.returncode == 0, f"soak failed:\n{report}\n{run.stderr.decode(errors='replace')[-3000:]}"
    soak = json.loads(numbers.read_text())
    assert soak["result"] == "pass", report
    failed = {name: check["detail"] for name, check in soak["checks"].items() if not check["ok"]}
    assert not failed and len(soak["checks"]) >= 15, soak["checks"]
    assert soak["samples"] >= 40  # the every-second invariants were sampled all along (60 s)
    ws, http = soak["ws"], soak["http"]
    # Each kind of traffic happened, so its invariants held of something.
    assert ws["outcomes"].get("ok", 0) > 0 and ws["fuzz_frames"] > 0
    assert http["outcomes"].get("ok", 0) > 0
    sessions = http["sessions"]
    assert sessions["reconnect_result"] > 0 and sessions["reconnect_ran"] > 0
    assert sessions["log_deleted_busy"] > 0
    assert sessions["abandoned"] > 0 and sessions["idle_ended"] == sessions["abandoned"]
    assert http["fuzz_requests"] > 0 and http["fuzz_answers"].get("400", 0) > 0
    modern = {action: counts for action, counts in http["by_action"].items() if action.startswith("modern_")}
    assert sum(sum(counts.values()) for counts in modern.values()) > 0  # modern clients beside the legacy ones
    assert sessions.get("modern_closed", 0) > 0 and modern["modern_bad_headers"]
    # clink's CLI that never answers ran, was cancelled or abandoned, and left no process.
    assert soak["clink"]["runs"] > 0 and soak["clink"]["left"] == 0 and ws["by_action"]["clink"]
    # Legacy tasks were created and completed, cancelled, abandoned, and polled from a new
    # connection after the one that created them died; none was left working.
    tasks = soak["tasks"]
    for count in ("created", "completed", "result_fetched", "cancelled", "abandoned", "polled_after_disconnect"):
        assert tasks.get(count, 0) > 0, tasks
    assert soak["checks"]["every working task has a live call"]["ok"] and soak["checks"]["no task working at rest"]["ok"]
