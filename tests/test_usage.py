"""Usage and cost, reasoning and web search through the daemon (contract 4b): every result of a
call that asked a model carries structuredContent.usage; a thread keeps each turn's usage, so
`exai thread ID` sums it across calls and restarts; /api/status has each provider's cost.

Rules: real loopback sockets, the simulator over real HTTP, real time with short bounds.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from click.testing import CliRunner

from exai.cli import main
from exai.client import connect
from exai.providers.catalog import CATALOG
from exai.store import read_thread

KIMI = "kimi-k2-0905-preview"


def sim(**behaviour: Any) -> str:
    return f"#sim {json.dumps(behaviour)}"


def thread_json(daemon: Any, cid: str) -> dict[str, Any]:
    shown = CliRunner().invoke(main, ["thread", cid, "--json"], env={"EXAI_STATE_DIR": str(daemon.daemon.settings.state_dir)})
    assert shown.exit_code == 0, shown.output
    return dict(json.loads(shown.output))


async def test_chat_has_usage_and_cost_and_the_provider_its_cost(daemon: Any) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("chat", {"prompt": f"one two three\n{sim(reply='a b c', cached_tokens=2)}"})
    assert not result.is_error
    assert result.structured is not None
    usage = result.structured["usage"]
    info = CATALOG[KIMI]
    assert usage["provider_calls"] == 1 and usage["completion_tokens"] == 3 and usage["cached_tokens"] == 2
    expected = ((usage["prompt_tokens"] - 2) * info.input_usd + 2 * info.cached_input_usd + 3 * info.output_usd) / 1e6  # type: ignore[operator]
    assert usage["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert result.structured["continuation_id"] == result.meta["continuation_id"]  # type: ignore[index]
    assert result.meta["usage"] == usage  # type: ignore[index]
    async with httpx.AsyncClient(base_url=daemon.monitor_url) as http:
        providers = (await http.get("/api/status")).json()["providers"]
    assert providers["kimi"]["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert providers["glm"]["cost_usd"] == 0


async def test_a_model_without_a_price_has_a_null_cost(daemons: Any) -> None:
    bound = await daemons.start(demo=True)
    async with connect(bound.url) as client:
        result = await client.call_tool("chat", {"prompt": "hi"})
    assert result.structured["usage"]["cost_usd"] is None  # type: ignore[index]


async def test_reasoning_is_progress_and_stays_out_of_the_answer_and_the_thread(daemon: Any, simulator: Any) -> None:
    messages: list[str] = []
    # The thought is the simulator's default, so the prompt (kept in the thread) does not hold it.
    simulator.configure(reasoning="SECRET-THOUGHT about caches", reply="because", chunks=2, chunk_delay_s=0.15)
    async with connect(daemon.url) as client:
        result = await client.call_tool(
            "chat",
            {"prompt": "why"},
            on_progress=lambda params: messages.append(str(params.get("message", ""))),
        )
    assert not result.is_error and "because" in result.text and "SECRET-THOUGHT" not in result.text
    assert any("thinking" in m for m in messages) and not any("SECRET-THOUGHT" in m for m in messages)
    thread = read_thread(daemon.daemon.settings, result.meta["continuation_id"])  # type: ignore[index]
    assert all("SECRET-THOUGHT" not in turn.content for turn in thread.turns)


async def test_the_thinking_argument_reaches_the_provider(daemon: Any, simulator: Any) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("chat", {"prompt": "hi", "model": "glm-4.6", "thinking": "disabled"})
        assert not result.is_error
        assert simulator.recent[-1]["thinking"] == {"type": "disabled"}
        bad = await client.call_tool("chat", {"prompt": "hi", "thinking": "maybe"})
    assert bad.is_error and "thinking" in bad.text


@pytest.mark.parametrize(("model", "calls"), [("glm-4.6", 1), (KIMI, 2)])
async def test_chat_web_search_lists_the_sources(daemon: Any, simulator: Any, model: str, calls: int) -> None:
    async with connect(daemon.url) as client:
        result = await client.call_tool("chat", {"prompt": "latest trio release", "model": model, "web_search": True})
    assert not result.is_error, result.text
    structured = result.structured or {}
    sources = structured["sources"]
    assert len(sources) == 2 and all(set(s) == {"title", "url"} and s["url"].startswith("https://search.example/") for s in sources)
    assert structured["usage"]["provider_calls"] == calls == simulator.stats.requests_total
    assert sources[0]["url"] in result.text


async def test_a_thread_sums_its_turns_usage_across_a_workflow_and_a_restart(daemons: Any, simulator: Any) -> None:
    first = await daemons.start()
    reply = json.dumps({"findings": "clue", "confidence": "low", "next_step": "look"})
    args = {
        "step": f"look at the cache\n{sim(reply=reply)}",
        "step_number": 1,
        "total_steps": 3,
        "next_step_required": True,
        "findings": "start",
        "auto_steps": 2,
    }
    async with connect(first.url) as client:
        stepped = await client.call_tool("debug", args)
        assert not stepped.is_error, stepped.text
        cid = stepped.structured["continuation_id"]  # type: ignore[index]
        calls = [stepped.structured["usage"]]  # type: ignore[index]
        assert calls[0]["provider_calls"] == 2
    first.daemon.request_shutdown()
    with trio.fail_after(10):
        await first.daemon.stopped.wait()
    second = await daemons.start()
    async with connect(second.url) as client:
        chatted = await client.call_tool("chat", {"prompt": "and now?", "continuation_id": cid})
        assert not chatted.is_error
        calls.append(chatted.structured["usage"])  # type: ignore[index]
    shown = thread_json(second, cid)
    turns = [t["usage"] for t in shown["turns"] if t["usage"]]
    assert len(turns) == 3  # two auto-steps and the chat answer
    for key in ("prompt_tokens", "completion_tokens", "cached_tokens"):
        assert shown["usage"][key] == sum(c[key] for c in calls) == sum(t[key] for t in turns)
    assert shown["usage"]["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls), abs=1e-5)
    text = CliRunner().invoke(main, ["thread", cid], env={"EXAI_STATE_DIR": str(second.daemon.settings.state_dir)}).output
    assert "out tokens, $" in text and "usage" in text


async def test_a_workflow_tool_takes_thinking_too(daemon: Any, simulator: Any) -> None:
    args = {
        "step": "conclude",
        "step_number": 1,
        "total_steps": 1,
        "next_step_required": False,
        "findings": "the lock is taken twice",
        "model": "glm-4.6",
        "thinking": "enabled",
    }
    async with connect(daemon.url) as client:
        result = await client.call_tool("thinkdeep", args)
    assert not result.is_error, result.text
    assert simulator.recent[-1]["thinking"] == {"type": "enabled"}
    assert result.structured["usage"]["provider_calls"] == 1  # type: ignore[index]
