"""The chaos soak (scripts/soak.py) for 60 s, as CI runs it: its own processes on loopback,
exit 0 only when every invariant held. The 10-minute run is `python scripts/soak.py --duration 600`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

SOAK = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


@pytest.mark.slow
async def test_a_60_second_chaos_soak_holds_every_invariant() -> None:
    with trio.fail_after(180):
        run = await trio.run_process(
            [sys.executable, str(SOAK), "--duration", "60", "--clients", "16"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    report = run.stdout.decode(errors="replace")
    assert run.returncode == 0, f"soak failed:\n{report}\n{run.stderr.decode(errors='replace')[-3000:]}"
    assert "RESULT: pass" in report
