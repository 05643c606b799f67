"""The workflow tools through the daemon: real loopback WebSockets, the simulator over real HTTP.

Real time with short, generous bounds. The simulator answers auto-steps and the expert with
`#sim {"reply": ...}` directives placed in the step text (`{n}` is the request's number).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from exai.client import RpcError, connect
from exai.store import read_thread, read_threads
from exai.tools import TOOL_NAMES


def sim(**behaviour: Any) -> str:
    return f"#sim {json.dumps(behaviour)}"


def answers(findings: str = "clue {n}", confidence: str = "low") -> str:
    """A step text line making the simulator answer every request with this auto-step JSON."""
    reply = {"findings": findings, "confidence": confidence, "next_step": "read the lock code"}
    return sim(reply=json.dumps(reply))


def step(number: int, *, total: int = 4, more: bool = True, **fields: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "step": f"step {number}: look at the cache",
        "step_number": number,
        "total_steps": total,
        "next_step_required": more,
        "findings": f"finding {number}",
    }
    args.update(fields)
    return args


def source_file(tmp_path: Path, name: str = "cache.py", text: str = "def get(key):\n    return CACHE[key]  # MARKER-7731\n") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def resolved(path: str) -> str:
    return str(Path(path).resolve())


# -- one whole investigation ------------------------------------------------------------


async def test_debug_investigation_manual_steps_then_expert(daemon: Any, simulator: Any, tmp_path: Path) -> None:
    cache = source_file(tmp_path)
    cid = None
    async with connect(daemon.url) as client:
        for number in (1, 2, 3):
            args = step(number, relevant_files=[cache], confidence="medium" if number == 3 else "low")
            if cid:
                args["continuation_id"] = cid
            result = await client.call_tool("debug", args)
            s = result.structured
            assert not result.is_error and s is not None, result.text
            assert s["status"] == "pause_for_investigation"
            assert s["next_step_required"] is True
            assert s["provider_calls"] == 0
            assert s["required_actions"]
            assert cid in (None, s["continuation_id"])
            cid = s["continuation_id"]
        assert simulator.stats.requests_total == 0  # manual steps never call a model
        expert = {"summary": "KeyError on a cold cache", "conclusion": "missing default", "issues": []}
        final = step(
            4,
            more=False,
            step=f"the cache lookup has no default\n{sim(reply=json.dumps(expert))}",
            hypothesis="get() raises KeyError when the key was never stored",
            confidence="high",
            relevant_files=[cache],
            continuation_id=cid,
        )
        result = await client.call_tool("debug", final)
    s = result.structured
    assert not result.is_error and s is not None, result.text
    assert s["status"] == "calling_expert_analysis"
    assert s["next_step_required"] is False
    assert s["expert_analysis"] == expert
    assert s["provider_calls"] == 1 and simulator.stats.requests_total == 1
    assert s["findings"] == ["finding 1", "finding 2", "finding 3", "finding 4"]
    assert "KeyError on a cold cache" in result.text
    sent = json.dumps(simulator.recent[-1]["messages"])
    assert "MARKER-7731" in sent  # the expert sees the file
    assert all(f"finding {n}" in sent for n in (1, 2, 3, 4))
    thread = read_thread(daemon.daemon.settings, cid)
    assert [t.step_number for t in thread.turns if t.role == "user"] == [1, 2, 3, 4]
    assert thread.turns[-1].role == "assistant" and "cold cache" in thread.turns[-1].content
    assert thread.findings == ["finding 1", "finding 2", "finding 3", "finding 4"]


async def test_a_debug_thread_survives_a_restart_and_chat_continues_it(daemons: Any, simulator: Any) -> None:
    first = await daemons.start()
    async with connect(first.url) as client:
        cid = (await client.call_tool("debug", step(1, findings="the walrus clue"))).structured["continuation_id"]  # type: ignore[index]
    first.daemon.request_shutdown()
    with trio.fail_after(10):
        await first.daemon.stopped.wait()
    second = await daemons.start()  # the same EXAI_STATE_DIR
    async with connect(second.url) as one, connect(second.url) as two:
        continued = await one.call_tool("debug", step(2, continuation_id=cid))
        chatted = await two.call_tool("chat", {"prompt": "what was the clue?", "continuation_id": cid})
    assert continued.structured and continued.structured["findings"] == ["the walrus clue", "finding 2"]
    assert not chatted.is_error, chatted.text
    assert "the walrus clue" in json.dumps(simulator.recent[-1]["messages"])  # chat saw the debug steps
    assert [t.tool for t in read_thread(second.daemon.settings, cid).turns] == ["debug", "debug", "chat", "chat"]


async def test_a_non_json_expert_answer_is_kept_as_text(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        args = step(1, more=False, hypothesis="h", step=f"conclude\n{sim(reply='plain words, no JSON')}")
        result = await client.call_tool("thinkdeep", args)
    assert result.structured is not None, result.text
    assert result.structured["expert_analysis"] == "plain words, no JSON"


@pytest.mark.parametrize("fields", [{"confidence": "certain"}, {"use_assistant_model": False}])
async def test_no_expert_when_certain_or_not_wanted(daemon: Any, simulator: Any, fields: dict[str, Any]) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("analyze", step(1, more=False, **fields))
    s = result.structured
    assert s is not None and not result.is_error, result.text
    assert s["status"] == "complete" and s["expert_analysis"] is None
    assert s["provider_calls"] == 0 and simulator.stats.requests_total == 0
    assert any("no expert analysis" in note for note in s["notes"])


async def test_auto_steps_on_the_final_step_are_ignored_and_said_so(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("debug", step(1, more=False, hypothesis="h", auto_steps=3))
    s = result.structured
    assert s is not None and s["status"] == "calling_expert_analysis" and s["provider_calls"] == 1
    assert any("auto_steps was ignored" in note for note in s["notes"]) and "auto_steps was ignored" in result.text


async def test_final_step_requirements_are_named_and_change_nothing(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        first = await client.call_tool("codereview", step(1))
        cid = first.structured["continuation_id"] if first.structured else None
        no_files = await client.call_tool("codereview", step(2, more=False, continuation_id=cid))
        no_hypothesis = await client.call_tool("debug", step(1, more=False))
    assert no_files.is_error and "relevant_files" in no_files.text
    assert no_hypothesis.is_error and "hypothesis" in no_hypothesis.text
    assert len(read_thread(daemon.daemon.settings, cid).turns) == 1
    assert simulator.stats.requests_total == 0


async def test_an_unknown_model_is_refused_before_anything_is_saved(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("debug", step(1, model="no-such-model", auto_steps=1))
    assert result.is_error and "Unknown model 'no-such-model'" in result.text
    assert read_threads(daemon.daemon.settings) == [] and simulator.stats.requests_total == 0


async def test_bad_arguments_name_each_field(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        bad = {"step": "", "step_number": 0, "total_steps": 1, "next_step_required": "maybe", "confidence": "sure"}
        result = await client.call_tool("debug", bad)
        unknown = await client.call_tool("debug", step(1, continuation_id="0" * 32))
        bad_path = await client.call_tool("debug", step(1, relevant_files=["relative/path.py"]))
    assert result.is_error
    for field in ("step", "step_number", "next_step_required", "findings", "confidence"):
        assert field in result.text
    assert unknown.is_error and "unknown or expired" in unknown.text
    assert bad_path.is_error and "relative/path.py" in bad_path.text


# -- bounded auto-execution: the seed, replayed -------------------------------------------


async def test_the_seed_fifty_auto_steps_are_clamped(daemon: Any, simulator: Any) -> None:
    progress: list[dict[str, Any]] = []
    async with connect(daemon.url) as client:
        args = step(1, total=50, step=f"investigate the crash\n{answers()}", auto_steps=50)
        result = await client.call_tool("debug", args, on_progress=progress.append)
    s = result.structured
    settings = daemon.daemon.settings
    assert s is not None and not result.is_error, result.text
    assert s["provider_calls"] <= settings.max_auto_steps
    assert s["provider_calls"] <= settings.max_provider_calls
    assert simulator.stats.requests_total == s["provider_calls"] == 3
    assert s["status"] == "budget_exhausted"
    assert any("clamped to 3" in note for note in s["notes"])
    assert "clamped to 3" in result.text
    assert s["continuation_id"] and s["step_number"] == 4 and s["next_step_required"] is True
    assert s["findings"][-3:] == ["clue 1", "clue 2", "clue 3"]
    assert s["required_actions"][0] == "Suggested by the last auto-step: read the lock code"
    assert progress, "auto-steps report progress"
    thread = read_thread(settings, s["continuation_id"])
    assert [t.step_number for t in thread.turns if t.role == "assistant"] == [2, 3, 4]


async def test_auto_steps_stop_when_the_budget_ends_first(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(max_provider_calls=2, max_auto_steps=5)
    async with connect(bound.url) as client:
        result = await client.call_tool("debug", step(1, step=f"go\n{answers()}", auto_steps=5))
    s = result.structured
    assert s is not None and not result.is_error, result.text
    assert s["status"] == "budget_exhausted" and s["provider_calls"] == 2
    assert s["findings"] == ["finding 1", "clue 1", "clue 2"]
    assert any("EXAI_MAX_PROVIDER_CALLS" in note for note in s["notes"])
    assert s["continuation_id"]


@pytest.mark.parametrize(
    "reply, calls, why",
    [
        (answers(confidence="very_high"), 1, "confidence reached very_high"),
        (answers(findings="nothing new"), 3, "nothing new"),
    ],
)
async def test_auto_steps_stop_early(daemons: Any, simulator: Any, reply: str, calls: int, why: str) -> None:
    bound = await daemons.start(max_auto_steps=5, max_provider_calls=10)
    async with connect(bound.url) as client:
        result = await client.call_tool("debug", step(1, step=f"go\n{reply}", auto_steps=5))
    s = result.structured
    assert s is not None, result.text
    assert s["provider_calls"] == calls and s["status"] == "pause_for_investigation"
    assert any(why in note for note in s["notes"])


async def test_no_auto_steps_when_the_step_is_already_confident(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("debug", step(1, confidence="very_high", auto_steps=2))
    s = result.structured
    assert s is not None and s["provider_calls"] == 0 and simulator.stats.requests_total == 0
    assert s["status"] == "pause_for_investigation" and any("already very_high" in note for note in s["notes"])


async def test_deadline_during_auto_steps_is_32001_with_finished_steps_saved(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        cid = (await client.call_tool("debug", step(1))).structured["continuation_id"]  # type: ignore[index]
        simulator.configure(reply=json.dumps({"findings": "the first auto step", "confidence": "low"}))

        async def then_429_and_hang() -> None:
            await simulator.wait_until(lambda s: s.completed >= 1)
            simulator.configure(status=429, fail_times=1, retry_after="0", hang=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(then_429_and_hang)
            started = trio.current_time()
            with pytest.raises(RpcError) as timed_out:
                await client.call_tool("debug", step(2, auto_steps=3, continuation_id=cid), timeout=2)
            took = trio.current_time() - started
    assert timed_out.value.code == -32001
    assert timed_out.value.data == {"timeout_s": 2.0, "continuation_id": cid}  # where the saved steps are
    assert 1.9 <= took < 3.0
    assert simulator.stats.statuses.get(429) == 1
    assert simulator.stats.aborted == 1  # the hanging request was really aborted
    thread = read_thread(daemon.daemon.settings, cid)
    saved = [t for t in thread.turns if t.role == "assistant"]
    assert [t.step_number for t in saved] == [3] and "the first auto step" in saved[0].content
    assert thread.findings == ["finding 1", "finding 2", "the first auto step"]


@pytest.mark.parametrize("fields", [{"auto_steps": 2}, {"next_step_required": False, "hypothesis": "h"}])
async def test_a_provider_failure_is_a_tool_error_that_keeps_the_thread(daemon: Any, simulator: Any, fields: dict[str, Any]) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("debug", step(1, step=f"go\n{sim(status=400)}", **fields))
    s = result.structured
    assert result.is_error and s is not None
    assert "kimi" in result.text.lower() and "continuation_id" in result.text
    assert s["error"] and s["provider_calls"] == 1
    assert [t.step_number for t in read_thread(daemon.daemon.settings, s["continuation_id"]).turns] == [1]


# -- files and the context budget ---------------------------------------------------------


async def test_a_file_repeated_across_turns_is_embedded_once(daemon: Any, simulator: Any, tmp_path: Path) -> None:
    cache = source_file(tmp_path)
    async with connect(daemon.url) as client:
        first = await client.call_tool("debug", step(1, step=f"a\n{answers()}", relevant_files=[cache], auto_steps=1))
        cid = first.structured["continuation_id"]  # type: ignore[index]
        assert json.dumps(simulator.recent[-1]["messages"]).count("MARKER-7731") == 1
        await client.call_tool("debug", step(3, step=f"b\n{answers()}", relevant_files=[cache], auto_steps=1, continuation_id=cid))
    messages = simulator.recent[-1]["messages"]
    assert json.dumps(messages).count("MARKER-7731") == 1  # in the history, not again
    assert "MARKER-7731" not in messages[-1]["content"] and cache in messages[-1]["content"]
    assert first.structured["files_used"] == [resolved(cache)]  # type: ignore[index]


async def test_a_file_changed_since_it_was_embedded_is_embedded_again(daemon: Any, simulator: Any, tmp_path: Path) -> None:
    cache = source_file(tmp_path)
    async with connect(daemon.url) as client:
        first = await client.call_tool("debug", step(1, step=f"a\n{answers()}", relevant_files=[cache], auto_steps=1))
        source_file(tmp_path, text="def get(key):\n    return CACHE.get(key)  # MARKER-8842\n")
        args = step(3, step=f"b\n{answers()}", relevant_files=[cache], auto_steps=1, continuation_id=first.structured["continuation_id"])  # type: ignore[index]
        second = await client.call_tool("debug", args)
    assert "MARKER-8842" in simulator.recent[-1]["messages"][-1]["content"]
    assert second.structured["files_used"] == [resolved(cache)]  # type: ignore[index]


async def test_chat_continuing_a_thread_fits_it_to_the_window_and_sends_a_shown_file_once(
    daemons: Any, simulator: Any, tmp_path: Path
) -> None:
    bound = await daemons.start(max_result_tokens=100)
    cache = source_file(tmp_path)
    async with connect(bound.url) as client:
        first = await client.call_tool("chat", {"prompt": "read this", "files": [cache]})
        cid = first.meta["continuation_id"]  # type: ignore[index]
        assert f"continuation_id: {cid}" in first.text
        again = await client.call_tool("chat", {"prompt": "and again", "files": [cache], "continuation_id": cid})
        last = simulator.recent[-1]["messages"][-1]["content"]
        assert "MARKER-7731" not in last and f"shown earlier in this conversation: {resolved(cache)}" in last
        for number in range(3):  # ~6k tokens of history for an 8k-token model
            await client.call_tool("debug", step(number + 1, findings="long " * 4_000, continuation_id=cid))
        small = await client.call_tool("chat", {"prompt": "sum up", "continuation_id": cid, "model": "moonshot-v1-8k"})
        long = await client.call_tool("chat", {"prompt": sim(reply="word " * 1_000)})
    assert not again.is_error and not small.is_error, small.text
    assert len(json.dumps(simulator.recent[-2]["messages"])) < 8_192 * 4
    assert "oldest thread turn(s) were left out" in small.text and small.meta["omitted"]  # type: ignore[index]
    assert "EXAI_MAX_RESULT_TOKENS" in long.text and len(long.text) < 100 * 4 + 300


async def test_a_context_that_does_not_fit_is_trimmed_and_named(daemons: Any, simulator: Any, tmp_path: Path) -> None:
    bound = await daemons.start(max_file_bytes=200_000)
    big = source_file(tmp_path, "big.py", "x = 1  # filler line\n" * 5_000)  # ~100 KB, 8k-token model
    async with connect(bound.url) as client:
        args = step(1, step=f"a\n{answers()}", relevant_files=[big], auto_steps=1, model="moonshot-v1-8k")
        result = await client.call_tool("debug", args)
    s = result.structured
    assert s is not None and not result.is_error, result.text
    assert any(big in note and "cut" in note for note in s["notes"])
    sent = json.dumps(simulator.recent[-1]["messages"])
    assert "filler line" in sent and len(sent) < 8_192 * 4


async def test_result_text_is_kept_under_max_result_tokens(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(max_result_tokens=60)
    async with connect(bound.url) as client:
        result = await client.call_tool("debug", step(1, findings="long " * 400))
    assert len(result.text) <= 60 * 4
    assert "EXAI_MAX_RESULT_TOKENS" in result.text
    assert result.structured and "the result text was trimmed (EXAI_MAX_RESULT_TOKENS)" in result.structured["notes"]


async def test_text_and_structured_content_together_stay_under_max_result_tokens(daemons: Any, simulator: Any) -> None:
    """MCP clients count both parts of a result; the thread keeps every finding."""
    bound = await daemons.start(max_result_tokens=1_000)
    cid = None
    async with connect(bound.url) as client:
        for number in range(1, 8):
            result = await client.call_tool("debug", step(number, total=7, findings=f"{number} " + "detail " * 150, continuation_id=cid))
            s = result.structured
            assert s is not None and not result.is_error, result.text
            cid = s["continuation_id"]
            assert len(result.text) + len(json.dumps(s)) <= 1_000 * 4
    assert s["findings"][-1].startswith("7 ") and len(s["findings"]) < 7
    assert any("oldest finding(s) were left out" in note for note in s["notes"])
    assert len(read_thread(bound.daemon.settings, cid).findings) == 7


# -- consensus -----------------------------------------------------------------------------

THREE = [
    {"model": "kimi-k2-0905-preview", "stance": "for"},
    {"model": "glm-4.6", "stance": "against"},
    {"model": "kimi-k2-turbo-preview", "stance": "neutral"},
]


async def test_consensus_asks_three_models_at_once_with_their_stances(daemon: Any, simulator: Any) -> None:
    simulator.configure(latency_s=1.0)
    async with connect(daemon.url) as client:
        started = trio.current_time()
        result = await client.call_tool("consensus", step(1, more=False, step="Adopt SQLite for threads?", models=THREE))
        took = trio.current_time() - started
    s = result.structured
    assert s is not None and not result.is_error, result.text
    assert simulator.stats.max_inflight >= 3  # all three were asked at once
    assert took < 2.9  # three 1 s answers at once (~1 s) plus a 1 s synthesis, not 4 s in turn
    assert [(r["model"], r["stance"], r["status"]) for r in s["responses"]] == [
        (m["model"], m["stance"], "ok") for m in THREE
    ]
    assert s["provider_calls"] == 4 and s["expert_analysis"]
    asked = list(simulator.recent)[:3]
    stance_of = {r["model"]: r["messages"][0]["content"] for r in asked}
    assert "Your stance: FOR" in stance_of["kimi-k2-0905-preview"]
    assert "Your stance: AGAINST" in stance_of["glm-4.6"]
    assert "Your stance: NEUTRAL" in stance_of["kimi-k2-turbo-preview"]
    for request in asked:  # blinded: none sees another's answer
        assert "Simulated answer" not in json.dumps(request["messages"])
    synthesis = json.dumps(simulator.recent[-1]["messages"])
    assert all(f"[{m['model']} ({m['stance']})]" in synthesis for m in THREE)


async def test_consensus_reports_a_failing_provider_and_counts_the_other(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(glm_api_key="bad-key")  # the simulator answers 401 to this key
    async with connect(bound.url) as client:
        result = await client.call_tool("consensus", step(1, more=False, step="Ship it?"))
    s = result.structured
    assert s is not None and not result.is_error, result.text
    by_model = {r["model"]: r for r in s["responses"]}
    assert by_model["kimi-k2-0905-preview"]["status"] == "ok"
    assert by_model["glm-4.6"]["status"] == "error" and "GLM" in by_model["glm-4.6"]["error"]
    assert s["expert_analysis"]  # the synthesis from the one answer
    assert "glm-4.6 (neutral): error" in json.dumps(simulator.recent[-1]["messages"])


async def test_consensus_without_room_for_a_synthesis_says_so(daemons: Any, simulator: Any) -> None:
    bound = await daemons.start(max_provider_calls=2)
    async with connect(bound.url) as client:
        result = await client.call_tool("consensus", step(1, more=False, step="Ship it?"))
    s = result.structured
    assert s is not None and not result.is_error, result.text
    assert [r["status"] for r in s["responses"]] == ["ok", "ok"]
    assert s["expert_analysis"] is None and s["status"] == "complete"
    assert any("no synthesis" in note and "budget" in note for note in s["notes"])


async def test_consensus_reports_a_model_that_runs_out_of_time(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        args = step(1, more=False, step=f"Ship it?\n{sim(hang=True)}", models=THREE[:1])
        started = trio.current_time()
        result = await client.call_tool("consensus", args, timeout=1.5)
        took = trio.current_time() - started
    s = result.structured
    assert s is not None and not result.is_error, result.text
    assert s["responses"][0]["status"] == "timeout"
    assert s["expert_analysis"] is None and took < 1.5
    assert simulator.stats.aborted == 1


# -- planner, schemas, disabled tools --------------------------------------------------------


async def test_planner_revisions_and_branches_without_a_model(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        first = await client.call_tool("planner", {"step": "design the schema", "step_number": 1, "total_steps": 3, "next_step_required": True})
        cid = first.structured["continuation_id"]  # type: ignore[index]

        async def plan(**fields: Any) -> Any:
            return await client.call_tool("planner", {"total_steps": 3, "next_step_required": True, "continuation_id": cid, **fields})

        await plan(step="write the store", step_number=2)
        await plan(step="write the store with WAL", step_number=3, is_step_revision=True, revises_step_number=2)
        await plan(step="try a JSON file instead", step_number=4, branch_from_step=1, branch_id="json")
        bad = await plan(step="x", step_number=5, is_step_revision=True, revises_step_number=9)
        last = await client.call_tool("planner", {"step": "ship", "step_number": 5, "total_steps": 3, "next_step_required": False, "continuation_id": cid})
    assert bad.is_error and "revises_step_number" in bad.text
    s = last.structured
    assert s is not None and s["status"] == "complete" and s["total_steps"] == 5
    assert [i["step"] for i in s["plan"]["steps"]] == ["design the schema", "write the store with WAL", "ship"]
    assert s["plan"]["branches"] == {"json": {"from_step": 1, "steps": [{"step_number": 4, "step": "try a JSON file instead"}]}}
    assert simulator.stats.requests_total == 0 and s["provider_calls"] == 0


WORKFLOW_TOOLS = ("thinkdeep", "debug", "analyze", "codereview", "planner", "consensus", "precommit", "secaudit", "refactor", "testgen", "docgen", "tracer")


async def test_tools_list_is_compact_and_complete(daemons: Any) -> None:
    bound = await daemons.start(clink_clis={"gemini": ("gemini",), "codex": ("codex", "exec")})
    async with connect(bound.url) as client:
        listed = await client.request("tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    assert set(TOOL_NAMES) == set(tools)  # every tool enabled
    size = len(json.dumps(listed).encode())  # with json's spaces: more than the frame's compact bytes
    assert size <= 32_000, size  # CONTRACT section 4 (issue 18)
    for name in WORKFLOW_TOOLS:
        schema = tools[name]["inputSchema"]
        assert {"step", "step_number", "total_steps", "next_step_required"} <= set(schema["required"])
        assert len(tools[name]["description"]) > 100
    assert tools["codereview"]["inputSchema"]["properties"]["review_type"]["enum"] == ["full", "security", "performance", "quick"]


async def test_disabled_tools_are_not_listed_and_refused(daemons: Any) -> None:
    bound = await daemons.start(disabled_tools=["consensus", "planner"])
    async with connect(bound.url) as client:
        names = {t["name"] for t in (await client.request("tools/list"))["tools"]}
        with pytest.raises(RpcError) as refused:
            await client.call_tool("consensus", step(1, more=False))
    assert "consensus" not in names and "planner" not in names and "debug" in names
    assert refused.value.code == -32602 and "consensus" in refused.value.message


async def test_the_simulator_answers_auto_steps_and_the_expert_with_json(daemon: Any, simulator: Any) -> None:
    """What `exai serve --demo` shows: parsed auto-steps and a structured expert analysis."""
    async with connect(daemon.url) as client:
        first = (await client.call_tool("debug", step(1, auto_steps=2))).structured
        assert first is not None and first["confidence"] == "medium"
        assert [f.split(" #")[0] for f in first["findings"][1:]] == ["simulated findings"] * 2
        final = await client.call_tool("debug", step(4, more=False, hypothesis="h", continuation_id=first["continuation_id"]))
    expert = final.structured["expert_analysis"]  # type: ignore[index]
    assert isinstance(expert, dict) and expert["issues"] and expert["summary"].startswith("simulated summary")


async def test_two_workflow_calls_on_one_thread_are_serialised(daemon: Any, simulator: Any) -> None:
    """A manual step sent while another connection's auto-step runs waits for it, then sees it."""
    async with connect(daemon.url) as one, connect(daemon.url) as two:
        cid = (await one.call_tool("debug", step(1))).structured["continuation_id"]  # type: ignore[index]
        results: dict[str, Any] = {}

        async def auto() -> None:
            args = step(2, step=f"go\n{answers()}\n{sim(latency_s=0.5)}", auto_steps=1, continuation_id=cid)
            results["auto"] = await one.call_tool("debug", args)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(auto)
            with trio.fail_after(5):
                await simulator.wait_until(lambda s: s.inflight == 1)
            results["manual"] = await two.call_tool("analyze", step(4, continuation_id=cid))
    assert not results["auto"].is_error and not results["manual"].is_error
    assert results["manual"].structured["findings"] == ["finding 1", "finding 2", "clue 1", "finding 4"]
    turns = read_thread(daemon.daemon.settings, cid).turns
    assert [(t.tool, t.step_number, t.role) for t in turns] == [
        ("debug", 1, "user"), ("debug", 2, "user"), ("debug", 3, "user"), ("debug", 3, "assistant"), ("analyze", 4, "user"),
    ]  # fmt: skip


CONTRACT_FIELDS = {"status", "step_number", "total_steps", "next_step_required", "continuation_id", "provider_calls", "required_actions"}
RESULT_FIELDS = CONTRACT_FIELDS | {"findings", "files_used", "usage"}


@pytest.mark.parametrize("tool", [t for t in WORKFLOW_TOOLS if t != "precommit"])  # precommit: tests/test_precommit.py
async def test_every_workflow_result_carries_the_contract_fields(daemon: Any, simulator: Any, tmp_path: Path, tool: str) -> None:
    extra: dict[str, Any] = {"relevant_files": [source_file(tmp_path)], "hypothesis": "h"}
    own = DECLARED[tool][0] if tool in DECLARED else {}
    async with connect(daemon.url) as client:
        first = step(1, total=2, **own)
        final = step(2, total=2, more=False, **extra, **own)
        if tool == "planner":
            first, final = ({k: v for k, v in a.items() if k not in ("findings", *extra)} for a in (first, final))
        paused = (await client.call_tool(tool, first)).structured
        assert paused is not None and RESULT_FIELDS <= set(paused), paused
        assert paused["status"].startswith("pause_for_") and paused["required_actions"]
        done = await client.call_tool(tool, {**final, "continuation_id": paused["continuation_id"]})
    s = done.structured
    assert s is not None and not done.is_error, done.text
    assert RESULT_FIELDS | {"expert_analysis"} <= set(s) and s["next_step_required"] is False
    assert s["status"] in ("calling_expert_analysis", "complete")
    if tool != "planner":
        assert "confidence" in s and s["usage"]["prompt_tokens"] > 0
        assert s["files_used"] == [resolved(extra["relevant_files"][0])]


async def test_the_expert_gets_the_issues_of_every_step(daemon: Any, simulator: Any, tmp_path: Path) -> None:
    cache = source_file(tmp_path)
    async with connect(daemon.url) as client:
        first = await client.call_tool("codereview", step(1, issues_found=[{"severity": "high", "description": "KeyError on a miss"}]))
        cid = first.structured["continuation_id"]  # type: ignore[index]
        final = step(2, more=False, relevant_files=[cache], continuation_id=cid, issues_found=[{"severity": "low", "description": "no docstring"}])
        result = await client.call_tool("codereview", final)
    assert not result.is_error, result.text
    prompt = simulator.recent[-1]["messages"][-1]["content"]
    assert "Issues found:\n- Issue (high): KeyError on a miss\n- Issue (low): no docstring" in prompt


# -- secaudit, refactor, testgen, docgen, tracer: declarations on the engine -----------------------

DECLARED: dict[str, tuple[dict[str, Any], str, str]] = {
    # tool: (its own fields, its pause status, a phrase of its system prompt)
    "secaudit": ({"audit_focus": "owasp", "threat_level": "high"}, "pause_for_security_audit", "application security engineer"),
    "refactor": ({"refactor_type": "decompose"}, "pause_for_refactoring_analysis", "planning a refactoring"),
    "testgen": ({}, "pause_for_test_analysis", "test engineer"),
    "docgen": ({}, "pause_for_documentation_analysis", "technical writer"),
    "tracer": ({"trace_mode": "precision", "target_description": "how get() reaches CACHE"}, "pause_for_tracing", "code navigator"),
}


@pytest.mark.parametrize("tool", sorted(DECLARED))
async def test_each_declared_tool_runs_its_steps_then_asks_the_expert(daemon: Any, simulator: Any, tmp_path: Path, tool: str) -> None:
    own, status, system = DECLARED[tool]
    cache = source_file(tmp_path)
    async with connect(daemon.url) as client:
        first = await client.call_tool(tool, step(1, total=3, relevant_files=[cache], **own))
        s = first.structured
        assert s is not None and not first.is_error, first.text
        cid = s["continuation_id"]
        second = await client.call_tool(tool, step(2, total=3, confidence="medium", continuation_id=cid, **own))
        assert simulator.stats.requests_total == 0  # intermediate steps never call a model
        final = await client.call_tool(tool, step(3, total=3, more=False, continuation_id=cid, **own))
    assert s["status"] == status and s["required_actions"] and s["provider_calls"] == 0
    assert second.structured is not None and second.structured["status"] == status
    assert second.structured["required_actions"] != s["required_actions"]  # converging, not starting
    done = final.structured
    assert done is not None and not final.is_error, final.text
    assert done["status"] == "calling_expert_analysis" and done["provider_calls"] == 1
    assert done["files_used"] == [resolved(cache)]
    messages = simulator.recent[-1]["messages"]
    sent = json.dumps(messages)
    assert "MARKER-7731" in sent  # the expert sees the file's text
    assert system in messages[0]["content"]
    for name, value in own.items():
        assert f"{name}: {value}" in messages[-1]["content"]  # and the tool's own fields


@pytest.mark.parametrize(
    ("tool", "fields", "named"),
    [
        ("secaudit", {"audit_focus": "everything"}, "audit_focus"),
        ("secaudit", {"threat_level": "extreme"}, "threat_level"),
        ("refactor", {"refactor_type": "rewrite"}, "refactor_type"),
        ("tracer", {"target_description": "x"}, "trace_mode"),
        ("tracer", {"trace_mode": "precision"}, "target_description"),
        ("tracer", {"trace_mode": "ask", "target_description": "x"}, "trace_mode"),
        ("testgen", {"test_framework": "pytest"}, "test_framework"),
    ],
)
async def test_a_declared_tool_names_its_bad_fields_and_saves_nothing(daemon: Any, tool: str, fields: dict[str, Any], named: str) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool(tool, step(1, **fields))
    assert result.is_error and result.text.startswith(f"Invalid arguments for {tool}: ") and named in result.text
    assert read_threads(daemon.daemon.settings) == []


@pytest.mark.parametrize("tool", ["secaudit", "refactor", "testgen", "docgen"])
async def test_the_final_step_of_a_file_tool_needs_relevant_files(daemon: Any, simulator: Any, tool: str) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool(tool, step(1, more=False))
    assert result.is_error and "relevant_files" in result.text and simulator.stats.requests_total == 0


# -- challenge --------------------------------------------------------------------------------------


async def test_challenge_wraps_the_statement_and_calls_no_model(daemon: Any, simulator: Any) -> None:
    statement = "The cache is thread-safe because Python has a GIL."
    async with connect(daemon.url) as client:
        result = await client.call_tool("challenge", {"prompt": statement})
        empty = await client.call_tool("challenge", {"prompt": ""})
        huge = await client.call_tool("challenge", {"prompt": "why " * 50_000})
    assert not result.is_error and statement in result.text
    assert "critically" in result.text and "Do not agree" in result.text
    assert result.structured is not None and result.structured["status"] == "challenge_accepted"
    assert result.structured["trimmed"] is False and result.structured["provider_calls"] == 0
    assert empty.is_error and "prompt" in empty.text
    assert huge.structured is not None and huge.structured["trimmed"] is True
    assert len(huge.text) <= daemon.daemon.settings.max_result_tokens * 4
    assert simulator.stats.requests_total == 0
