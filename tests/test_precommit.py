"""precommit through the daemon over real WebSockets, on real repositories made with the real git.

Loopback only, port 0; the simulator over real HTTP. The repository is built in the test
(a commit, then a staged edit, an unstaged edit and an untracked file); what the expert
request carries is read from the simulator's record of it. Real time, short generous bounds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from processes_support import gone, wait_for_pids, wait_gone

from exai.client import ConnectionLost, RpcError, connect
from exai.store import read_threads

GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit, then a staged edit, an unstaged edit and an untracked file."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text("def main():\n    return 1\n")
    (root / "util.py").write_text("def helper():\n    return 2\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    (root / "app.py").write_text("def main():\n    return 1  # INDEX-MARK\n")
    git(root, "add", "app.py")
    (root / "util.py").write_text("def helper():\n    return 2  # WORKTREE-MARK\n")
    (root / "new_module.py").write_text("UNTRACKED = True\n")
    return root


def step(number: int, path: Path | str, *, more: bool = True, **fields: Any) -> dict[str, Any]:
    return {
        "step": f"step {number}: review the change",
        "step_number": number,
        "total_steps": 2,
        "next_step_required": more,
        "findings": f"finding {number}",
        "path": str(path),
        **fields,
    }


def expert_request(simulator: Any) -> str:
    return json.dumps(simulator.recent[-1]["messages"])


async def test_precommit_steps_then_the_expert_gets_staged_unstaged_and_untracked(daemon: Any, simulator: Any, repo: Path) -> None:
    async with connect(daemon.url) as client:
        first = await client.call_tool("precommit", step(1, repo))
        s = first.structured
        assert s is not None and not first.is_error, first.text
        assert s["status"] == "pause_for_precommit_validation" and s["required_actions"] and s["provider_calls"] == 0
        assert simulator.stats.requests_total == 0
        final = await client.call_tool("precommit", step(2, repo, more=False, continuation_id=s["continuation_id"]))
    done = final.structured
    assert done is not None and not final.is_error, final.text
    assert done["status"] == "calling_expert_analysis" and done["provider_calls"] == 1
    sent = expert_request(simulator)
    assert "INDEX-MARK" in sent and "WORKTREE-MARK" in sent and "new_module.py" in sent
    assert "git diff --cached (staged changes)" in sent and "git diff (unstaged changes)" in sent
    assert "senior engineer reviewing a change before it is committed" in sent


@pytest.mark.parametrize(
    ("fields", "present", "absent"),
    [
        ({"include_staged": False}, ["WORKTREE-MARK", "new_module.py"], ["INDEX-MARK"]),
        ({"include_unstaged": False}, ["INDEX-MARK"], ["WORKTREE-MARK", "new_module.py"]),
    ],
)
async def test_staged_or_unstaged_only(daemon: Any, simulator: Any, repo: Path, fields: dict[str, Any], present: list[str], absent: list[str]) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("precommit", step(1, repo, more=False, **fields))
    assert not result.is_error, result.text
    sent = expert_request(simulator)
    assert all(mark in sent for mark in present) and not any(mark in sent for mark in absent)


async def test_compare_to_reviews_the_change_since_that_ref(daemon: Any, simulator: Any, repo: Path) -> None:
    git(repo, "commit", "-q", "-m", "second")  # the staged edit, committed
    git(repo, "tag", "v1", "HEAD~1")
    async with connect(daemon.url) as client:
        since_first = await client.call_tool("precommit", step(1, repo, more=False, compare_to="v1"))
        first_sent = expert_request(simulator)
        since_head = await client.call_tool("precommit", step(1, repo, more=False, compare_to="HEAD"))
        head_sent = expert_request(simulator)
    assert not since_first.is_error and not since_head.is_error, (since_first.text, since_head.text)
    assert "INDEX-MARK" in first_sent and "WORKTREE-MARK" in first_sent and "git diff v1" in first_sent
    assert "INDEX-MARK" not in head_sent and "WORKTREE-MARK" in head_sent


async def test_a_subdirectory_reviews_only_the_change_under_it(daemon: Any, simulator: Any, repo: Path) -> None:
    (repo / "sub").mkdir()
    (repo / "sub" / "inner.py").write_text("x = 1\n")
    git(repo, "add", "sub")
    git(repo, "commit", "-q", "-m", "sub")
    (repo / "sub" / "inner.py").write_text("x = 2  # INNER-MARK\n")
    async with connect(daemon.url) as client:
        result = await client.call_tool("precommit", step(1, repo / "sub", more=False))
    assert not result.is_error, result.text
    sent = expert_request(simulator)
    assert "INNER-MARK" in sent and "INDEX-MARK" not in sent and "WORKTREE-MARK" not in sent


async def test_a_diff_too_large_is_trimmed_and_named(daemons: Any, simulator: Any, repo: Path) -> None:
    bound = await daemons.start(max_file_bytes=4096)
    (repo / "util.py").write_text("".join(f"line {n} of a long edit\n" for n in range(2000)) + "TAIL-MARK\n")
    async with connect(bound.url) as client:
        result = await client.call_tool("precommit", step(1, repo, more=False, include_staged=False))
    assert not result.is_error, result.text
    assert "git diff (unstaged changes)" in result.text and "first 4096 of" in result.text
    sent = expert_request(simulator)
    assert "line 10 of a long edit" in sent and "TAIL-MARK" not in sent


async def test_bad_paths_and_refs_are_errors_naming_them_and_save_nothing(daemon: Any, simulator: Any, repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    outside = Path("/usr")
    pwned = tmp_path / "pwned"
    cases = {
        "outside": (step(1, outside), ["'/usr'", "outside the allowed roots"]),
        "not a repository": (step(1, plain), [repr(str(plain)), "not in a git repository"]),
        "relative": (step(1, "repo"), ["'repo'", "absolute"]),
        "a file": (step(1, repo / "app.py"), ["app.py", "not a directory"]),
        "missing": (step(1, tmp_path / "nope"), ["nope", "not a directory"]),
        "an option as ref": (step(1, repo, compare_to=f"--output={pwned}"), ["compare_to", "never starts with '-'"]),
        "a short option": (step(1, repo, compare_to="-p"), ["compare_to", "never starts with '-'"]),
        "a control character": (step(1, repo, compare_to="HEAD\nx"), ["compare_to", "control characters"]),
        "an unknown ref": (step(1, repo, compare_to="no-such-branch"), ["'no-such-branch'", "is not a commit"]),
    }
    async with connect(daemon.url) as client:
        for name, (args, named) in cases.items():
            for more in (True, False):
                result = await client.call_tool("precommit", {**args, "next_step_required": more})
                assert result.is_error, (name, result.text)
                assert all(part in result.text for part in named), (name, result.text)
    assert not pwned.exists()
    assert read_threads(daemon.daemon.settings) == [] and simulator.stats.requests_total == 0


async def test_git_does_not_read_the_users_config(daemon: Any, simulator: Any, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A global config asking for colour, a pager that would hang and an external diff changes nothing."""
    config = tmp_path / "gitconfig"
    config.write_text("[color]\n\tui = always\n[core]\n\tpager = sleep 100\n[diff]\n\texternal = /bin/false\n\tnoprefix = true\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    async with connect(daemon.url) as client:
        with trio.fail_after(10):
            result = await client.call_tool("precommit", step(1, repo, more=False))
    assert not result.is_error, result.text
    sent = expert_request(simulator)
    assert "\\u001b[" not in sent and "a/app.py" in sent and "INDEX-MARK" in sent


@pytest.fixture
def slow_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`git` on PATH that runs the real one, except `git diff`: that one writes its pid and hangs."""
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True, check=True).stdout.strip()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pidfile = tmp_path / "git.pid"
    script = bin_dir / "git"
    script.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" diff "*) echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; trap "" TERM; exec sleep 300;; esac\n'
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return pidfile


@pytest.mark.parametrize("ending", ["cancel", "timeout", "disconnect"])
async def test_a_call_that_ends_leaves_no_git_behind(daemon: Any, repo: Path, slow_git: Path, ending: str) -> None:
    args = step(1, repo, more=False)
    async with connect(daemon.url) as client:
        if ending == "timeout":
            with pytest.raises(RpcError) as timed_out:
                with trio.fail_after(10):
                    await client.call_tool("precommit", args, timeout=1.0)
            assert timed_out.value.code == -32001
        else:

            async def call() -> None:
                with pytest.raises(ConnectionLost) if ending == "disconnect" else contextlib.nullcontext():
                    await client.call_tool("precommit", args)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                pid = (await wait_for_pids(slow_git, 1))[0]
                assert not gone(pid)
                if ending == "disconnect":
                    await client.close_abruptly()
                else:
                    nursery.cancel_scope.cancel()
    await wait_gone(await wait_for_pids(slow_git, 1))


async def test_a_diff_far_too_large_stops_git_and_says_so(daemons: Any, simulator: Any, repo: Path) -> None:
    bound = await daemons.start(max_file_bytes=4096)
    (repo / "util.py").write_text("".join(f"line {n} of a huge edit\n" for n in range(20_000)))
    async with connect(bound.url) as client:
        with trio.fail_after(10):
            result = await client.call_tool("precommit", step(1, repo, more=False, include_staged=False))
    assert not result.is_error, result.text
    assert "git diff (unstaged changes), over" in result.text and "line 10 of a huge edit" in expert_request(simulator)
