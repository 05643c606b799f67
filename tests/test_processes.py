"""run_bounded (exai/tools/processes.py) on real subprocesses: output bounds, the group's end.

Real time with short generous bounds: these are real processes, not logic about time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio
from processes_support import gone, wait_for_pids, wait_gone

from exai.tools.processes import COUNT_FACTOR, KILL_GRACE_S, STDERR_TAIL_BYTES, run_bounded

PY = sys.executable


def python(code: str) -> list[str]:
    return [PY, "-c", code]


async def test_output_is_kept_up_to_its_bound_and_counted_beyond() -> None:
    code = "import sys; sys.stdout.write('a' * 5000); sys.stderr.write('e' * 100000 + 'END'); sys.exit(4)"
    finished = await run_bounded(python(code), cwd=Path.cwd(), env=dict(os.environ), max_stdout=1000)
    assert finished.returncode == 4 and finished.complete
    assert finished.stdout == b"a" * 1000 and finished.stdout_size == 5000
    assert len(finished.stderr_tail) == STDERR_TAIL_BYTES and finished.stderr_tail.endswith(b"END")


async def test_stdin_reaches_it_and_a_process_that_never_reads_it_does_not_hang() -> None:
    echoed = await run_bounded(python("import sys; sys.stdout.write(sys.stdin.read()[::-1])"), cwd=Path.cwd(), env=dict(os.environ), stdin=b"abc", max_stdout=10)
    assert echoed.stdout == b"cba"
    with trio.fail_after(10):
        ignored = await run_bounded(python("print('done')"), cwd=Path.cwd(), env=dict(os.environ), stdin=b"x" * (4 * 1024 * 1024), max_stdout=10)
    assert ignored.returncode == 0 and ignored.stdout == b"done\n"


async def test_a_flood_beyond_what_is_counted_is_ended() -> None:
    code = "import sys\nwhile True: sys.stdout.write('y' * 65536)"
    with trio.fail_after(10):
        finished = await run_bounded(python(code), cwd=Path.cwd(), env=dict(os.environ), max_stdout=1024)
    assert not finished.complete and finished.returncode < 0
    assert len(finished.stdout) == 1024 and finished.stdout_size > 1024 * COUNT_FACTOR


async def test_what_the_leader_leaves_behind_is_ended_when_it_exits(tmp_path: Path) -> None:
    """A CLI that exits while a child of its still holds stdout: no wait for the child, no child left."""
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('answer')"
    )
    with trio.fail_after(5):
        finished = await run_bounded(python(code), cwd=Path.cwd(), env=dict(os.environ), max_stdout=100)
    assert finished.returncode == 0 and finished.stdout == b"answer\n"
    await wait_gone(await wait_for_pids(pidfile, 1))


async def test_cancelled_the_whole_group_goes_even_when_it_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    cli = [PY, str(Path(__file__).with_name("fake_cli.py")), "sleep", str(pidfile)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_bounded(cli, cwd=tmp_path, env=dict(os.environ), max_stdout=100))
        pids = await wait_for_pids(pidfile, 2)
        assert not any(gone(pid) for pid in pids)
        started = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - started < KILL_GRACE_S + 2  # SIGTERM, the grace, SIGKILL
    await wait_gone(pids, timeout=1.0)


async def test_a_program_that_cannot_start_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run_bounded([str(tmp_path / "nope")], cwd=tmp_path, env={}, max_stdout=10)
