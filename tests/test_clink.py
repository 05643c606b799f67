"""clink through the daemon over real WebSockets, running a small fake CLI (tests/fake_cli.py).

Loopback only, port 0. The fake CLI is a real subprocess; the sleeping one starts a child of
its own and both ignore SIGTERM, so only the group's SIGKILL ends them. Whether a process
still exists is checked by pid, within a short generous real-time bound.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from processes_support import gone, wait_for_pids, wait_gone

from exai.client import ConnectionLost, RpcError, connect
from exai.store import read_thread, read_threads

FAKE_CLI = str(Path(__file__).with_name("fake_cli.py"))
NEW_TOOLS = ("precommit", "secaudit", "refactor", "testgen", "docgen", "tracer", "challenge", "clink")


def clis(tmp_path: Path) -> dict[str, tuple[str, ...]]:
    fake = (sys.executable, FAKE_CLI)
    return {
        "fake": (*fake, "echo"),
        "failing": (*fake, "fail"),
        "flood": (*fake, "flood"),
        "env": (*fake, "env"),
        "sleepy": (*fake, "sleep", str(tmp_path / "sleepy.pids")),
        "missing": (str(tmp_path / "no-such-cli"),),
    }


@pytest.fixture
async def clinked(daemons: Any, tmp_path: Path) -> Any:
    return await daemons.start(clink_clis=clis(tmp_path))


async def test_clink_runs_the_cli_with_the_prompt_and_files_and_records_the_thread(clinked: Any, simulator: Any, tmp_path: Path) -> None:
    source = tmp_path / "cache.py"
    source.write_text("CACHE = {}  # FILE-MARK-5521\n")
    async with connect(clinked.url) as client:
        first = await client.call_tool("clink", {"prompt": "what does cache.py hold?", "cli_name": "fake", "files": [str(source)]})
        assert not first.is_error, first.text
        assert first.meta is not None
        cid = first.meta["continuation_id"]
        second = await client.call_tool("clink", {"prompt": "and then?", "cli_name": "fake", "role": "planner", "continuation_id": cid})
        chatted = await client.call_tool("chat", {"prompt": "summarise", "continuation_id": cid})
    assert "FAKE-CLI read" in first.text and "what does cache.py hold?" in first.text
    assert "FILE-MARK-5521" in first.text and "sub-agent" in first.text  # the files' text and the role's instructions
    assert f"continuation_id: {cid}" in first.text
    assert not second.is_error and "planning sub-agent" in second.text
    assert "The conversation so far:" in second.text and "what does cache.py hold?" in second.text
    assert not chatted.is_error and "FAKE-CLI read" in json.dumps(simulator.recent[-1]["messages"])
    turns = read_thread(clinked.daemon.settings, cid).turns
    assert [(t.tool, t.role) for t in turns][:4] == [("clink", "user"), ("clink", "assistant")] * 2
    assert turns[1].model == "clink:fake" and turns[1].content.startswith("FAKE-CLI read")


async def test_clink_errors_name_the_cause_and_save_nothing(clinked: Any, tmp_path: Path) -> None:
    async with connect(clinked.url) as client:
        failing = await client.call_tool("clink", {"prompt": "go", "cli_name": "failing"})
        unknown = await client.call_tool("clink", {"prompt": "go", "cli_name": "gemini"})
        missing = await client.call_tool("clink", {"prompt": "go", "cli_name": "missing"})
        bad_file = await client.call_tool("clink", {"prompt": "go", "cli_name": "fake", "files": ["relative.py"]})
        bad_thread = await client.call_tool("clink", {"prompt": "go", "cli_name": "fake", "continuation_id": "0" * 32})
        bad_role = await client.call_tool("clink", {"prompt": "go", "cli_name": "fake", "role": "boss"})
        empty_thread = await client.call_tool("clink", {"prompt": "go", "cli_name": "fake", "continuation_id": ""})
        chat_empty_thread = await client.call_tool("chat", {"prompt": "go", "continuation_id": ""})  # found by the fuzz
    assert failing.is_error and "failing exited with status 3" in failing.text and "FAKE-CLI-STDERR-TAIL" in failing.text
    assert unknown.is_error and "'gemini'" in unknown.text
    assert "env, failing, fake, flood, missing, sleepy" in unknown.text  # the configured ones
    assert missing.is_error and "cannot start missing" in missing.text
    assert bad_file.is_error and "relative.py" in bad_file.text
    assert bad_thread.is_error and "unknown or expired" in bad_thread.text
    assert bad_role.is_error and "role" in bad_role.text
    assert empty_thread.is_error and chat_empty_thread.is_error and "continuation_id ''" in empty_thread.text
    assert read_threads(clinked.daemon.settings) == []


async def test_clink_output_is_bounded(clinked: Any) -> None:
    async with connect(clinked.url) as client:
        result = await client.call_tool("clink", {"prompt": "go", "cli_name": "flood"})
    assert not result.is_error, result.text[:300]
    assert "flood wrote 3145728 bytes; the first 1048576 are kept" in result.text
    assert len(result.text) <= clinked.daemon.settings.max_result_tokens * 4


async def test_the_cli_does_not_see_exais_settings_or_provider_keys(daemons: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMI_API_KEY", "sk-secret")
    monkeypatch.setenv("EXAI_LOG_FORMAT", "text")
    monkeypatch.setenv("FAKE_CLI_OWN_KEY", "kept")
    bound = await daemons.start(clink_clis=clis(tmp_path))
    async with connect(bound.url) as client:
        result = await client.call_tool("clink", {"prompt": "go", "cli_name": "env"})
    names = result.text.split("\n\n[exai]")[0].split()
    assert "FAKE_CLI_OWN_KEY" in names and "KIMI_API_KEY" not in names and "EXAI_LOG_FORMAT" not in names


@pytest.mark.parametrize("ending", ["cancel", "timeout", "disconnect"])
async def test_a_clink_call_that_ends_leaves_neither_the_cli_nor_its_child(clinked: Any, tmp_path: Path, ending: str) -> None:
    pidfile = tmp_path / "sleepy.pids"
    args = {"prompt": "sleep on it", "cli_name": "sleepy"}
    async with connect(clinked.url) as client:
        if ending == "timeout":
            with pytest.raises(RpcError) as timed_out:
                with trio.fail_after(10):
                    await client.call_tool("clink", args, timeout=1.0)
            assert timed_out.value.code == -32001
        else:

            async def call() -> None:
                with pytest.raises(ConnectionLost) if ending == "disconnect" else contextlib.nullcontext():
                    await client.call_tool("clink", args)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                pids = await wait_for_pids(pidfile, 2)
                assert not any(gone(pid) for pid in pids)
                if ending == "disconnect":
                    await client.close_abruptly()
                else:
                    nursery.cancel_scope.cancel()
    await wait_gone(await wait_for_pids(pidfile, 2))


async def test_clink_is_off_without_clis(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        names = {t["name"] for t in await client.list_tools()}
        with pytest.raises(RpcError) as refused:
            await client.call_tool("clink", {"prompt": "go", "cli_name": "fake"})
    assert "clink" not in names and "challenge" in names
    assert refused.value.code == -32602 and "clink" in refused.value.message


@pytest.mark.parametrize("tool", NEW_TOOLS)
async def test_every_new_tool_can_be_disabled(daemons: Any, tmp_path: Path, tool: str) -> None:
    bound = await daemons.start(clink_clis=clis(tmp_path), disabled_tools=[tool])
    async with connect(bound.url) as client:
        names = {t["name"] for t in await client.list_tools()}
        with pytest.raises(RpcError) as refused:
            await client.call_tool(tool, {})
    assert tool not in names and set(NEW_TOOLS) - {tool} <= names
    assert refused.value.code == -32602 and tool in refused.value.message
