"""The file sandbox: which paths a tool may read, how much of them, and that no read outlives its call.

Unit tests run `read_file` on the real file system under `tmp_path` (FIFOs, sockets,
symlinks, /dev, /proc are real); the last ones go through the daemon over real loopback
WebSockets. Real time with short, generous bounds.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from exai.client import connect
from exai.config import DEFAULT_MAX_FILE_BYTES
from exai.tools import files
from exai.tools.base import ToolArgumentError
from exai.tools.files import FileContent, read_file, read_files, render_files, trimmed_note

MAX = DEFAULT_MAX_FILE_BYTES
ROOT = Path("/")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The allowed root, resolved (tmp_path may sit behind a symlink)."""
    path = tmp_path / "root"
    path.mkdir()
    return path.resolve()


async def refused(path: str, roots: list[Path], max_bytes: int = MAX) -> str:
    """The refusal's message; fails if it takes more than a second (nothing may block)."""
    with trio.fail_after(1), pytest.raises(ToolArgumentError) as caught:
        await read_file(path, roots, max_bytes)
    message = str(caught.value)
    assert repr(path) in message, message
    return message


def bytes_read_by_this_process() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


# -- what is read ------------------------------------------------------------------------


async def test_a_small_file_is_read_whole(root: Path) -> None:
    note = root / "note.txt"
    note.write_text("héllo\n")
    got = await read_file(str(note), [root], MAX)
    assert got == FileContent(
        path=str(note), resolved=str(note), size=7, text="héllo\n", trimmed=False, shown=7
    )


async def test_a_5_mb_file_is_trimmed_without_being_read_whole(root: Path) -> None:
    big = root / "big.log"
    big.write_bytes(b"0123456789abcdef" * (5 * 1024 * 1024 // 16))
    before = bytes_read_by_this_process()
    got = await read_file(str(big), [root], MAX)
    read = bytes_read_by_this_process() - before
    assert (got.size, got.trimmed, got.shown, len(got.text)) == (5 * 1024 * 1024, True, MAX, MAX)
    assert read < 2 * MAX, f"{read} bytes were read for a {MAX}-byte limit"
    assert f"--- {big} (trimmed: first {MAX} of {5 * 1024 * 1024} bytes) ---\n" in render_files([got])


@pytest.mark.parametrize("size, trimmed", [(99, False), (100, False), (101, True)])
async def test_trimming_starts_one_byte_past_the_limit(root: Path, size: int, trimmed: bool) -> None:
    path = root / "f"
    path.write_bytes(b"a" * size)
    got = await read_file(str(path), [root], 100)
    assert (got.size, got.trimmed, got.shown) == (size, trimmed, min(size, 100))


async def test_invalid_utf8_is_replaced_not_refused(root: Path) -> None:
    path = root / "bin"
    path.write_bytes(b"ok \xff\xfe end")
    assert (await read_file(str(path), [root], MAX)).text == "ok \ufffd\ufffd end"


async def test_read_files_keeps_order_and_render_names_each_file(root: Path) -> None:
    a, b = root / "a.py", root / "b.py"
    a.write_text("A")
    b.write_text("B" * 20)
    got = await read_files([str(b), str(a)], [root], 10)
    assert [f.path for f in got] == [str(b), str(a)]
    assert render_files(got) == (
        f"--- {b} (trimmed: first 10 of 20 bytes) ---\n{'B' * 10}\n\n--- {a} ---\nA"
    )
    assert trimmed_note(got) == (
        "Files larger than EXAI_MAX_FILE_BYTES were trimmed before the model saw them: "
        f"{b} (first 10 of 20 bytes)."
    )
    assert trimmed_note(got[1:]) == ""


async def test_read_files_stops_at_the_first_refused_path(root: Path) -> None:
    (root / "ok").write_text("fine")
    with pytest.raises(ToolArgumentError, match="does not exist"):
        await read_files([str(root / "ok"), str(root / "missing")], [root], MAX)


# -- where a path may lead ---------------------------------------------------------------


async def test_a_relative_path_is_refused(root: Path) -> None:
    assert "must be absolute" in await refused("note.txt", [root])


async def test_a_missing_file_is_refused(root: Path) -> None:
    assert "does not exist" in await refused(str(root / "missing.txt"), [root])


async def test_dot_dot_cannot_leave_the_root(root: Path) -> None:
    (root / "sub").mkdir()
    message = await refused(f"{root}/sub/{'../' * 40}etc/passwd", [root])
    assert "resolved to '/etc/passwd'" in message and "outside the allowed roots" in message


async def test_dot_dot_that_stays_inside_the_root_is_fine(root: Path) -> None:
    (root / "sub").mkdir()
    (root / "note").write_text("x")
    got = await read_file(f"{root}/sub/../note", [root], MAX)
    assert (got.resolved, got.text) == (str(root / "note"), "x")


async def test_a_symlink_chain_inside_the_root_is_followed(root: Path) -> None:
    (root / "real.txt").write_text("real")
    (root / "c").symlink_to(root / "real.txt")
    (root / "b").symlink_to("c")  # relative
    (root / "a").symlink_to(root / "b")
    got = await read_file(str(root / "a"), [root], MAX)
    assert (got.path, got.resolved, got.text) == (str(root / "a"), str(root / "real.txt"), "real")


async def test_a_symlink_chain_leading_out_of_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (root / "b").symlink_to(secret)
    (root / "a").symlink_to(root / "b")
    message = await refused(str(root / "a"), [root])
    assert "outside the allowed roots" in message and str(secret.resolve()) in message


async def test_a_symlink_loop_is_refused(root: Path) -> None:
    (root / "a").symlink_to(root / "b")
    (root / "b").symlink_to(root / "a")
    message = await refused(str(root / "a"), [root])
    assert "cannot be resolved" in message


async def test_a_symlink_to_dev_zero_is_refused(root: Path) -> None:
    (root / "zero").symlink_to("/dev/zero")
    message = await refused(str(root / "zero"), [root])
    assert "resolved to '/dev/zero'" in message and "outside the allowed roots" in message


async def test_a_device_is_refused_even_inside_a_root(root: Path) -> None:
    (root / "zero").symlink_to("/dev/zero")
    message = await refused(str(root / "zero"), [ROOT])
    assert "is a character device, not a regular file" in message


async def test_proc_self_environ_is_refused_even_inside_a_root(root: Path) -> None:
    message = await refused("/proc/self/environ", [ROOT])
    assert "is under /proc, a system file system" in message
    (root / "env").symlink_to("/proc/self/environ")
    message = await refused(str(root / "env"), [ROOT])
    assert "is under /proc" in message


async def test_proc_self_environ_outside_the_roots_is_refused(root: Path) -> None:
    assert "is under /proc" in await refused("/proc/self/environ", [root])


async def test_sys_is_refused_even_inside_a_root() -> None:
    assert "is under /sys, a system file system" in await refused("/sys/kernel/notes", [ROOT])


async def test_a_fifo_is_refused_without_waiting_for_a_writer(root: Path) -> None:
    fifo = root / "pipe"
    os.mkfifo(fifo)
    assert "is a FIFO (named pipe), not a regular file" in await refused(str(fifo), [root])


async def test_a_directory_is_refused(root: Path) -> None:
    (root / "src").mkdir()
    assert "is a directory, not a file" in await refused(str(root / "src"), [root])
    assert "is a directory" in await refused(str(root), [root])


async def test_a_socket_is_refused(root: Path) -> None:
    path = root / "s"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        assert "is a socket, not a regular file" in await refused(str(path), [root])


async def test_a_nul_byte_in_the_path_is_refused(root: Path) -> None:
    assert "cannot be resolved" in await refused(f"{root}/a\x00b", [root])


async def test_an_unreadable_file_is_refused(root: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = root / "locked"
    path.write_text("x")
    path.chmod(0)
    assert "cannot be opened: Permission denied" in await refused(str(path), [root])


def test_the_open_flags_never_block_nor_follow() -> None:
    flags = files.OPEN_FLAGS
    assert flags & os.O_NONBLOCK and flags & os.O_NOFOLLOW and flags & os.O_CLOEXEC
    assert flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC) == 0


# -- no read outlives its call -----------------------------------------------------------


class BlockingReads:
    """The os module as files.py sees it, except that read() blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reading = threading.Event()
        self.opened: list[int] = []
        self.closed: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int) -> int:
        fd = os.open(path, flags)
        self.opened.append(fd)
        return fd

    def read(self, fd: int, n: int) -> bytes:
        self.reading.set()
        self.release.wait(10)
        return os.read(fd, n)

    def close(self, fd: int) -> None:
        self.closed.append(fd)
        os.close(fd)


async def test_a_blocked_read_returns_at_the_deadline_and_closes_its_file_later(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = root / "on-a-hung-mount"
    path.write_text("x")
    fake = BlockingReads()
    monkeypatch.setattr(files, "os", fake)
    started = trio.current_time()
    with trio.move_on_after(0.2) as scope:
        await read_file(str(path), [root], MAX)
    assert scope.cancelled_caught
    assert trio.current_time() - started < 0.5, "the cancelled read did not return at once"
    assert fake.reading.is_set() and fake.opened and not fake.closed
    fake.release.set()
    with trio.fail_after(2):
        while not fake.closed:  # noqa: ASYNC110 - the abandoned thread owns the state
            await trio.sleep(0.01)
    assert fake.closed == fake.opened
    assert stat.S_ISREG(os.stat(path).st_mode)


async def test_hung_reads_use_their_own_threads_and_later_reads_still_end_at_their_deadline(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = root / "on-a-hung-mount"
    path.write_text("x")
    fake = BlockingReads()
    monkeypatch.setattr(files, "os", fake)
    try:
        with trio.move_on_after(0.3):
            async with trio.open_nursery() as nursery:
                for _ in range(files.READER_THREADS + 2):
                    nursery.start_soon(read_file, str(path), [root], MAX)
        readers = files._readers.get()
        assert readers.borrowed_tokens == files.READER_THREADS  # the abandoned ones hold theirs
        started = trio.current_time()
        with trio.move_on_after(0.2) as scope:
            await read_file(str(path), [root], MAX)  # waits for a reader thread: cancellable
        assert scope.cancelled_caught and trio.current_time() - started < 0.5
        with trio.fail_after(1):  # the rest of the daemon's threads are untouched
            assert await trio.to_thread.run_sync(lambda: 42) == 42
    finally:
        fake.release.set()
    with trio.fail_after(2):
        while readers.borrowed_tokens:  # noqa: ASYNC110 - the abandoned threads own the state
            await trio.sleep(0.01)
    assert sorted(fake.closed) == sorted(fake.opened) and len(fake.opened) == files.READER_THREADS


# -- through the daemon ------------------------------------------------------------------


async def test_chat_refuses_bad_files_by_name_and_the_connection_goes_on(
    daemon: Any, simulator: Any, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "dir").mkdir()
    cases = {
        str(fifo): "FIFO",
        str(tmp_path / "dir"): "directory",
        "/etc/hostname": "outside the allowed roots",
        "/proc/self/environ": "under /proc",
    }
    async with connect(daemon.url) as client:
        for path, why in cases.items():
            with trio.fail_after(2):
                result = await client.call_tool("chat", {"prompt": "look", "files": [path]})
            assert result.is_error
            assert repr(path) in result.text and why in result.text, result.text
        assert simulator.stats.requests_total == 0, "a refused call reached the model"
        ok = await client.call_tool("chat", {"prompt": "still there?"})
        assert not ok.is_error, ok.text


async def test_chat_says_which_file_was_trimmed_and_by_how_much(
    daemons: Any, tmp_path: Path
) -> None:
    bound = await daemons.start(max_file_bytes=1000)
    big = tmp_path / "big.txt"
    big.write_bytes(b"word " * 1000)
    async with connect(bound.url) as client:
        result = await client.call_tool("chat", {"prompt": "summarise", "files": [str(big)]})
    assert not result.is_error, result.text
    # The simulator echoes the prompt's first words: the model was told of the trimming too.
    assert "(trimmed: first 1000 of 5000 bytes)" in result.text
    assert result.text.endswith(
        "[exai] Files larger than EXAI_MAX_FILE_BYTES were trimmed before the model saw them: "
        f"{big} (first 1000 of 5000 bytes)."
    )
    assert result.meta is not None
    assert result.meta["files_trimmed"] == [{"path": str(big), "size": 5000, "sent_bytes": 1000}]


async def test_chat_with_a_file_under_the_limit_has_no_trimming_note(daemon: Any, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("small")
    async with connect(daemon.url) as client:
        result = await client.call_tool("chat", {"prompt": "read", "files": [str(note)]})
    assert not result.is_error, result.text
    assert "trimmed" not in result.text
    assert result.meta is not None and "files_trimmed" not in result.meta
