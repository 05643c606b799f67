"""Subprocesses a tool starts (git for precommit, the CLIs of clink): bounded, and gone with the call.

Each runs as the leader of a session (so a process group) of its own. Whatever ends the call,
its exit, an error, cancellation (the client's, the deadline's, a disconnect's, shutdown's),
the whole group is ended before `run_bounded` returns: SIGTERM, `KILL_GRACE_S` for the leader
to go, then SIGKILL to what is left. trio's `run_process` would kill only the leader, and a
CLI's own children (a model server, a shell it ran) would outlive the call.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

KILL_GRACE_S: Final = 0.5  # between SIGTERM and SIGKILL
STDERR_TAIL_BYTES: Final = 16 * 1024
READ_CHUNK: Final = 64 * 1024
# Output beyond what is kept is counted (for the note saying how much was cut) up to this
# many times the kept size; then the process is ended rather than drained for ever.
COUNT_FACTOR: Final = 16


@dataclass(frozen=True)
class Finished:
    returncode: int  # negative: ended by that signal (also by us, when `complete` is false)
    stdout: bytes  # the first `max_stdout` bytes
    stdout_size: int  # bytes written to stdout in all (a lower bound when not `complete`)
    stderr_tail: bytes  # the last STDERR_TAIL_BYTES of stderr
    complete: bool  # false: it wrote so much that it was ended early


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):  # the group is gone already
        pass


async def _end_group(process: trio.Process) -> None:
    """End the process's whole group, reap the leader, close the pipes. Bounded; run it shielded."""
    if process.returncode is None:
        _signal_group(process.pid, signal.SIGTERM)
        with trio.move_on_after(KILL_GRACE_S):
            await process.wait()
    _signal_group(process.pid, signal.SIGKILL)  # the leader if it lingers, and whatever it started
    with trio.move_on_after(KILL_GRACE_S):
        await process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            await pipe.aclose()


async def run_bounded(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: bytes = b"",
    max_stdout: int,
) -> Finished:
    """Run `argv` to its end with `stdin` as its input; its output is kept bounded.

    Raises OSError when it cannot be started. Cancellation propagates; whichever way this
    returns or raises, no process of the group is left (see the module docstring).
    """
    process = await trio.lowlevel.open_process(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    kept = bytearray()
    tail = bytearray()
    size = 0
    complete = True
    try:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        send, out, err = process.stdin, process.stdout, process.stderr

        async def feed() -> None:
            try:
                async with send:
                    await send.send_all(stdin)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # it does not read its input, or exited first

        async def read_stdout() -> None:
            nonlocal size, complete
            while chunk := await out.receive_some(READ_CHUNK):
                size += len(chunk)
                kept.extend(chunk[: max(max_stdout - len(kept), 0)])
                if size > max_stdout * COUNT_FACTOR:
                    complete = False
                    _signal_group(process.pid, signal.SIGKILL)
                    return

        async def read_stderr() -> None:
            while chunk := await err.receive_some(READ_CHUNK):
                tail.extend(chunk)
                del tail[:-STDERR_TAIL_BYTES]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            nursery.start_soon(read_stdout)
            nursery.start_soon(read_stderr)
            await process.wait()
            # The leader is gone; whatever still holds its pipes open is its group's.
            _signal_group(process.pid, signal.SIGKILL)
    finally:
        with trio.CancelScope(shield=True):
            await _end_group(process)
    assert process.returncode is not None
    return Finished(process.returncode, bytes(kept), size, bytes(tail), complete)
