"""The chaos soak (scripts/soak.py) for 60 s, as CI runs it: its own processes on loopback,
exit 0 only when every invariant held. The 10-minute run is `python scripts/soak.py --duration 600`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import trio

SOAK = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


def count(report: str, pattern: str) -> int:
    """The number the report prints where `pattern`'s group is; fails if it prints none."""
    match = re.search(pattern, report)
    assert match, f"no {pattern!r} in the report:\n{report}"
    return int(match.group(1))


@pytest.mark.slow
async def test_a_60_second_chaos_soak_holds_every_invariant() -> None:
    with trio.fail_after(180):
        run = await trio.run_process(
            [sys.executable, str(SOAK), "--duration", "60", "--clients", "16", "--http-clients", "6"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    report = run.stdout.decode(errors="replace")
    assert run.returncode == 0, f"soak failed:\n{report}\n{run.stderr.decode(errors='replace')[-3000:]}"
    assert "RESULT: pass" in report
    # The HTTP part happened, each of its kinds, so its invariants held of something.
    assert count(report, r"http calls by outcome \((\d+)\)") > 0
    assert count(report, r"http calls by outcome .*\bok (\d+)") > 0
    assert count(report, r"dropped streams that got their result (\d+)") > 0
    assert count(report, r"of calls dropped while running that finished (\d+)") > 0
    assert count(report, r"ended by DELETE \((\d+) with calls running\)") > 0
    assert count(report, r"walked away from (\d+)") > 0
    assert count(report, r"of which ended by idle (\d+)") == count(report, r"walked away from (\d+)")
    assert count(report, r"modern http requests: (\d+)") > 0
    assert count(report, r"streams closed mid-call (\d+)") > 0
    assert count(report, r"http fuzz requests \((\d+),") > 0
    assert count(report, r"http fuzz requests .*answers .*\b400 (\d+)") > 0
