"""Files named in tool arguments: absolute, inside EXAI_ALLOWED_ROOTS after resolving symlinks,
regular files only, at most EXAI_MAX_FILE_BYTES of each read.

Nothing that is not a regular file is ever read: the path is checked with `lstat` before it
is opened, and the opened descriptor with `fstat` before the first byte is read. The work
runs in a worker thread the call abandons when cancelled, so a file system that blocks
(a hung network mount, say) cannot hold a call past its deadline, a disconnect or shutdown.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio
from trio.lowlevel import RunVar

from exai.tools.base import ToolArgumentError

# Virtual file systems: their "files" are the daemon's own memory, environment and devices.
SYSTEM_ROOTS: Final = (Path("/proc"), Path("/sys"))
OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
READ_CHUNK: Final = 64 * 1024
# Reads on a hung file system may never return: they get threads of their own, so they
# cannot use up the ones the rest of the daemon needs.
READER_THREADS: Final = 8
_readers: RunVar[trio.CapacityLimiter] = RunVar("file_readers")

_KINDS: Final = (
    (stat.S_ISDIR, "is a directory, not a file; name the files inside it"),
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
)


@dataclass(frozen=True)
class FileContent:
    path: str  # as the caller gave it
    resolved: str  # resolved absolute path
    size: int  # bytes on disk (fstat)
    text: str  # decoded utf-8 (errors="replace") of at most max_bytes
    trimmed: bool  # size > max_bytes
    shown: int  # bytes read into `text` (at most max_bytes)


def _refuse(path: str, resolved: Path | None, why: str) -> ToolArgumentError:
    where = f" (resolved to {str(resolved)!r})" if resolved is not None and str(resolved) != path else ""
    return ToolArgumentError(f"File path {path!r}{where} {why}")


def check_path(path: str, allowed_roots: list[Path]) -> Path:
    """The resolved path, or ToolArgumentError naming it and saying why not. Blocking (file system)."""
    if not os.path.isabs(path):
        raise ToolArgumentError(f"File path {path!r} must be absolute")
    try:
        resolved = Path(path).resolve()
    except RuntimeError:  # Python 3.11 reports a symlink loop so
        raise _refuse(path, None, "cannot be resolved: a symlink loop") from None
    except (OSError, ValueError) as exc:  # a NUL byte, an unencodable name, a name too long
        raise _refuse(path, None, f"cannot be resolved: {getattr(exc, 'strerror', None) or exc}") from None
    for system in SYSTEM_ROOTS:
        if resolved.is_relative_to(system):
            raise _refuse(path, resolved, f"is under {system}, a system file system; only regular files can be read")
    roots = [Path(root).resolve() for root in allowed_roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        shown = os.pathsep.join(str(r) for r in roots)
        raise _refuse(path, resolved, f"is outside the allowed roots ({shown}; EXAI_ALLOWED_ROOTS)")
    return resolved


def _refuse_unless_regular(path: str, resolved: Path, mode: int) -> None:
    for is_kind, why in _KINDS:
        if is_kind(mode):
            raise _refuse(path, resolved, why)
    if not stat.S_ISREG(mode):
        raise _refuse(path, resolved, "is not a regular file")


def _read_blocking(path: str, allowed_roots: list[Path], max_bytes: int) -> FileContent:
    resolved = check_path(path, allowed_roots)
    try:
        # Before opening: opening a device or a FIFO can have effects of its own.
        _refuse_unless_regular(path, resolved, os.lstat(resolved).st_mode)
        fd = os.open(resolved, OPEN_FLAGS)
    except FileNotFoundError:
        raise _refuse(path, resolved, "does not exist") from None
    except OSError as exc:  # ELOOP: replaced by a symlink since it was resolved
        raise _refuse(path, resolved, f"cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        # The path may have been swapped for something else between lstat and open.
        _refuse_unless_regular(path, resolved, info.st_mode)
        chunks: list[bytes] = []
        left = max_bytes
        while left > 0:
            chunk = os.read(fd, min(left, READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise _refuse(path, resolved, f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return FileContent(
        path=path,
        resolved=str(resolved),
        size=info.st_size,
        text=data.decode("utf-8", errors="replace"),
        trimmed=info.st_size > max_bytes,
        shown=len(data),
    )


async def read_file(path: str, allowed_roots: list[Path], max_bytes: int) -> FileContent:
    """One file, at most `max_bytes` of it; ToolArgumentError naming the path and why not.

    Returns at once when cancelled, even while the file system blocks; the abandoned worker
    closes its descriptor when the file system lets it go.
    """
    try:
        readers = _readers.get()
    except LookupError:
        readers = trio.CapacityLimiter(READER_THREADS)
        _readers.set(readers)
    return await trio.to_thread.run_sync(
        _read_blocking, path, allowed_roots, max_bytes, abandon_on_cancel=True, limiter=readers
    )


async def read_files(paths: list[str], allowed_roots: list[Path], max_bytes: int) -> list[FileContent]:
    """Each file in order (see read_file); the first refused one raises."""
    return [await read_file(path, allowed_roots, max_bytes) for path in paths]


def render_files(files: list[FileContent]) -> str:
    """The files as one prompt section, each under a header naming it (and its trimming)."""
    parts = []
    for file in files:
        note = f" (trimmed: first {file.shown} of {file.size} bytes)" if file.trimmed else ""
        parts.append(f"--- {file.path}{note} ---\n{file.text}")
    return "\n\n".join(parts)


def trimmed_note(files: list[FileContent]) -> str:
    """One sentence naming every trimmed file, for the tool's result; "" when none was."""
    trimmed = [f"{f.path} (first {f.shown} of {f.size} bytes)" for f in files if f.trimmed]
    if not trimmed:
        return ""
    return f"Files larger than EXAI_MAX_FILE_BYTES were trimmed before the model saw them: {', '.join(trimmed)}."
