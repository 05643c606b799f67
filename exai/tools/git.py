"""The change precommit reviews, read with the real `git`, bounded, and gone with the call.

git runs with none of the user's own configuration (no system or global config, no pager,
no colour, no terminal prompt, no optional locks, no external diff or textconv drivers, no
fsmonitor hook), so what the expert sees does not depend on the user's ~/.gitconfig and a
cancelled call never leaves an index.lock behind. What a client sends (`compare_to`) is
never read as an option: refs starting with '-' are refused, and every ref follows
`--end-of-options`. Only the change under the named directory is read (pathspec `.`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from exai.tools.base import ToolArgumentError
from exai.tools.files import FileContent, check_path
from exai.tools.processes import Finished, run_bounded

GIT: Final = (
    "git",
    "--no-pager",
    "-c", "core.quotepath=off",
    "-c", "color.ui=never",
    "-c", "core.fsmonitor=false",
    "-c", "diff.noprefix=false",
)  # fmt: skip
DIFF: Final = ("diff", "--no-ext-diff", "--no-textconv", "--no-color")
NAMES_MAX_BYTES: Final = 64 * 1024  # untracked file names, listed for the expert
STDERR_SHOWN: Final = 500  # characters of git's stderr in an error


def git_env() -> dict[str, str]:
    """The environment git runs in: PATH and HOME of the daemon's, and nothing of the user's git setup."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/"),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_PAGER": "cat",
        "PAGER": "cat",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_NO_LAZY_FETCH": "1",  # a partial clone never reaches the network for a diff
    }


@dataclass(frozen=True)
class Change:
    """Which change to read: against a ref, or the staged and/or unstaged edits."""

    compare_to: str | None
    staged: bool
    unstaged: bool


async def _git(directory: Path, *args: str, max_bytes: int) -> Finished:
    try:
        return await run_bounded([*GIT, *args], cwd=directory, env=git_env(), max_stdout=max_bytes)
    except OSError as exc:
        raise ToolArgumentError(f"Cannot run git for {str(directory)!r}: {exc.strerror or exc}") from None


def _stderr(finished: Finished) -> str:
    text = " ".join(finished.stderr_tail.decode("utf-8", errors="replace").split())
    return text[-STDERR_SHOWN:] or f"exit status {finished.returncode}"


def _directory(path: str, allowed_roots: list[Path]) -> Path:
    resolved = check_path(path, allowed_roots)
    if not resolved.is_dir():
        raise ToolArgumentError(f"path {path!r} is not a directory (name a git repository, or a directory in one)")
    return resolved


async def repository(path: str, allowed_roots: list[Path], compare_to: str | None) -> Path:
    """The resolved directory, once it is in a git work tree (and `compare_to` names a commit
    there); else ToolArgumentError naming the path (or the ref) and why."""
    directory = await trio.to_thread.run_sync(_directory, path, allowed_roots)
    top = await _git(directory, "rev-parse", "--show-toplevel", max_bytes=4096)
    if top.returncode != 0:
        raise ToolArgumentError(f"path {path!r} is not in a git repository: {_stderr(top)}")
    if compare_to is not None:
        ref = await _git(directory, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{compare_to}^{{commit}}", max_bytes=4096)
        if ref.returncode != 0:
            raise ToolArgumentError(f"compare_to {compare_to!r} is not a commit in the repository at {str(directory)!r}")
    return directory


def _as_file(directory: Path, name: str, finished: Finished, max_bytes: int) -> FileContent:
    text = finished.stdout.decode("utf-8", errors="replace") or "(no changes)\n"
    if not finished.complete:  # git was stopped: its size is only known to exceed this
        name = f"{name}, over {finished.stdout_size} bytes,"
    return FileContent(
        path=f"{name} in {directory}",
        resolved=f"{directory}#{name}",
        size=finished.stdout_size,
        text=text,
        trimmed=finished.stdout_size > max_bytes,
        shown=len(finished.stdout),
    )


async def read_change(directory: Path, change: Change, max_bytes: int) -> list[FileContent]:
    """The diffs (each at most `max_bytes`, trimmed ones say so) and the untracked files' names,
    as files for the expert's request."""
    reads: list[tuple[str, tuple[str, ...]]] = []
    if change.compare_to is not None:
        reads.append((f"git diff {change.compare_to} (the change since {change.compare_to})", ("--end-of-options", change.compare_to)))
    else:
        if change.staged:
            reads.append(("git diff --cached (staged changes)", ("--cached",)))
        if change.unstaged:
            reads.append(("git diff (unstaged changes)", ()))
    files = []
    for name, args in reads:
        finished = await _git(directory, *DIFF, *args, "--", ".", max_bytes=max_bytes)
        if finished.complete and finished.returncode != 0:
            raise ToolArgumentError(f"git diff failed in {str(directory)!r}: {_stderr(finished)}")
        files.append(_as_file(directory, name, finished, max_bytes))
    if change.unstaged or change.compare_to is not None:
        others = await _git(directory, "ls-files", "--others", "--exclude-standard", "--", ".", max_bytes=NAMES_MAX_BYTES)
        if others.returncode == 0 and others.stdout.strip():
            files.append(_as_file(directory, "untracked files (not in any diff; git add them to review them)", others, NAMES_MAX_BYTES))
    return files
