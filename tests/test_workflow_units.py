"""Unit tests of the workflow pieces that are plain functions: the context budget, schemas,
answer parsing, the planner's plan, and a property test of every workflow tool's arguments.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exai.store import Turn
from exai.tools import all_tools
from exai.tools.base import ToolArgumentError, compact_schema
from exai.tools.context import fit_context, fit_result, keep_under, version_of
from exai.tools.files import FileContent
from exai.tools.planner import Planner, plan_of
from exai.tools.workflow import StepArgs, WorkflowTool, parse_json

WORKFLOW = ("thinkdeep", "debug", "analyze", "codereview", "planner", "consensus", "precommit", "secaudit", "refactor", "testgen", "docgen", "tracer")


def file(path: str, text: str) -> FileContent:
    return FileContent(path=path, resolved=path, size=len(text), text=text, trimmed=False, shown=len(text))


def turn(content: str, files: list[FileContent] | None = None, role: str = "user") -> Turn:
    """A history turn that embedded these files (with their text's version)."""
    shown = files or []
    return Turn(role=role, content=content, tool="debug", files=[f.resolved for f in shown], versions={f.resolved: version_of(f) for f in shown})


# -- the context budget -------------------------------------------------------------------


def test_everything_fits_in_order() -> None:
    history = [turn("first"), turn("second", role="assistant")]
    ctx = fit_context(system="sys", history=history, files=[file("/a.py", "A-TEXT")], prompt="now", window_tokens=10_000)
    assert [m["content"] for m in ctx.messages[:3]] == ["sys", "first", "second"]
    assert ctx.messages[-1]["content"].startswith("now") and "A-TEXT" in ctx.messages[-1]["content"]
    assert ctx.embedded == ["/a.py"] and ctx.omitted == []


def test_a_file_in_a_kept_turn_is_referenced_not_embedded() -> None:
    history = [turn("--- /a.py ---\nA-TEXT", files=[file("/a.py", "A-TEXT")])]
    ctx = fit_context(system="s", history=history, files=[file("/a.py", "A-TEXT")], prompt="p", window_tokens=10_000)
    assert json.dumps(ctx.messages).count("A-TEXT") == 1
    assert ctx.referenced == ["/a.py"] and ctx.embedded == []
    expert = fit_context(system="s", history=history, files=[file("/a.py", "A-TEXT")], prompt="p", window_tokens=10_000, embed_all=True)
    assert "A-TEXT" in expert.messages[-1]["content"]  # the expert gets it afresh


def test_a_file_changed_since_its_turn_is_embedded_again() -> None:
    history = [turn("--- /a.py ---\nA-TEXT", files=[file("/a.py", "A-TEXT")]), turn("--- /b.py ---\nB", files=[file("/b.py", "B")])]
    ctx = fit_context(system="s", history=history, files=[file("/a.py", "A-TEXT-2"), file("/b.py", "B")], prompt="p", window_tokens=10_000)
    assert ctx.embedded == ["/a.py"] and ctx.referenced == ["/b.py"]
    assert "A-TEXT-2" in ctx.messages[-1]["content"] and ctx.versions == {"/a.py": version_of(file("/a.py", "A-TEXT-2"))}
    unversioned = [Turn(role="user", content="--- /b.py ---\nB", tool="chat", files=["/b.py"])]
    assert fit_context(system="s", history=unversioned, files=[file("/b.py", "B")], prompt="p", window_tokens=10_000).embedded == ["/b.py"]


def test_oldest_turns_go_first_and_a_dropped_turns_file_is_embedded_again() -> None:
    history = [turn("x" * 3_000 + " A-TEXT", files=[file("/a.py", "A-TEXT")]), turn("recent " * 100)]
    ctx = fit_context(system="s", history=history, files=[file("/a.py", "A-TEXT")], prompt="p", window_tokens=1_000)
    assert [m["content"] for m in ctx.messages[1:-1]] == ["recent " * 100]
    assert any("1 oldest thread turn" in note for note in ctx.omitted)
    assert ctx.embedded == ["/a.py"] and "A-TEXT" in ctx.messages[-1]["content"]


def test_a_file_too_big_is_cut_and_named_and_one_with_no_room_is_left_out() -> None:
    big, other = file("/big.py", "b" * 40_000), file("/other.py", "o" * 100)
    ctx = fit_context(system="s", history=[], files=[big, other], prompt="p", window_tokens=4_000)
    assert sum(len(m["content"]) for m in ctx.messages) <= 4_000 * 4 * 0.75
    assert any("/big.py was cut" in note for note in ctx.omitted)
    assert any("/other.py was left out" in note for note in ctx.omitted)
    assert ctx.embedded == ["/big.py"]


def test_a_prompt_bigger_than_the_window_is_cut_and_named() -> None:
    ctx = fit_context(system="s", history=[], files=[], prompt="p" * 10_000, window_tokens=1_000)
    assert len(ctx.messages[-1]["content"]) < 3_000
    assert any("prompt was cut" in note for note in ctx.omitted)


def test_keep_under() -> None:
    assert keep_under("short", 10) == ("short", False)
    text, cut = keep_under("x" * 1_000, 50)
    assert cut and len(text) <= 200 and text.endswith("(EXAI_MAX_RESULT_TOKENS)]")


def render_all(structured: dict[str, Any]) -> str:
    return json.dumps(structured, indent=1)


def test_fit_result_keeps_a_small_result_as_it_is() -> None:
    structured = {"findings": ["a", "b"], "notes": []}
    assert fit_result(render_all, structured, 1_000) == (render_all(structured), structured)


@pytest.mark.parametrize(
    "structured, kept_findings, note",
    [
        ({"findings": [f"finding {i} " + "f" * 400 for i in range(100)]}, None, "oldest finding(s) were left out"),
        ({"findings": ["one"], "expert_analysis": {"summary": "s" * 100_000}}, ["one"], "characters were cut"),
    ],
)
def test_fit_result_keeps_text_and_structured_content_together_under_the_limit(
    structured: dict[str, Any], kept_findings: list[str] | None, note: str
) -> None:
    text, fitted = fit_result(render_all, structured, 2_000)
    assert len(text) + len(json.dumps(fitted)) <= 2_000 * 4
    assert any(note in n for n in fitted["notes"]), fitted["notes"]
    assert fitted["findings"][-1] == structured["findings"][-1]  # the newest finding is kept whole
    if kept_findings is not None:
        assert fitted["findings"] == kept_findings


# -- schemas and answers ---------------------------------------------------------------------


def test_compact_schema_drops_titles_nulls_and_empty_defaults() -> None:
    schema = StepArgs.model_json_schema()
    compact = compact_schema(schema)
    text = json.dumps(compact)
    assert '"title"' not in text and '"null"' not in text and '"default": null' not in text
    assert compact["properties"]["hypothesis"]["type"] == "string"
    assert compact["properties"]["confidence"]["default"] == "exploring"
    assert len(text) < len(json.dumps(schema)) * 0.8


def test_compact_schema_inlines_defs_and_keeps_only_the_top_level_additional_properties() -> None:
    compact = compact_schema(StepArgs.model_json_schema())
    text = json.dumps(compact)
    assert "$defs" not in text and "$ref" not in text
    issue = compact["properties"]["issues_found"]["items"]
    assert issue["required"] == ["severity", "description"] and "additionalProperties" not in issue
    assert compact["additionalProperties"] is False
    # What the listing leaves out is still refused.
    args = {"step": "s", "step_number": 1, "total_steps": 1, "next_step_required": True, "findings": "f"}
    with pytest.raises(ToolArgumentError, match=r"issues_found\.0\.where: unknown field"):
        all_tools()["debug"].bind({**args, "issues_found": [{"severity": "low", "description": "d", "where": "x"}]})


@pytest.mark.parametrize(
    "text, parsed",
    [
        ('{"a": 1}', {"a": 1}),
        ('Here you go:\n```json\n{"findings": "x"}\n```', {"findings": "x"}),
        ("no json at all", None),
        ("[1, 2]", None),
        ('{"broken": ', None),
    ],
)
def test_parse_json(text: str, parsed: Any) -> None:
    assert parse_json(text) == parsed


def test_required_actions_follow_step_and_confidence() -> None:
    debug = all_tools()["debug"]
    assert isinstance(debug, WorkflowTool)
    early = debug.required_actions(1, "exploring")
    assert early != debug.required_actions(3, "low") != debug.required_actions(3, "high")
    assert "final step" in debug.required_actions(2, "very_high")[0]


def test_plan_of_applies_revisions_and_branches() -> None:
    turns = [
        Turn("user", "[plan step 1] a", "planner"),
        Turn("user", "[plan step 2] b", "planner"),
        Turn("user", "[plan step 3 revises 2] b2", "planner"),
        Turn("user", "[plan step 4 branch alt from 1] c", "planner"),
        Turn("user", "[plan step 9] not a planner turn", "chat"),
    ]
    plan = plan_of(turns).as_dict()
    assert plan["steps"] == [{"step_number": 1, "step": "a"}, {"step_number": 2, "step": "b2"}]
    assert plan["branches"] == {"alt": {"from_step": 1, "steps": [{"step_number": 4, "step": "c"}]}}


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"is_step_revision": True}, "revises_step_number must name an existing step"),
        ({"revises_step_number": 1}, "needs is_step_revision"),
        ({"branch_from_step": 1}, "needs a branch_id"),
        ({"branch_id": "b"}, "needs branch_from_step"),
    ],
)
def test_planner_refuses_inconsistent_steps(fields: dict[str, Any], problem: str) -> None:
    planner = Planner()
    args = planner.parse({"step": "s", "step_number": 2, "total_steps": 2, "next_step_required": True, **fields})
    with pytest.raises(ToolArgumentError, match=problem):
        planner.check(args, plan_of([Turn("user", "[plan step 1] a", "planner")]))


# -- every workflow tool's arguments, fuzzed --------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 60) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@pytest.mark.parametrize("name", WORKFLOW)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_arguments_parse_or_name_the_bad_field(name: str, data: st.DataObject) -> None:
    tool = all_tools()[name]
    fields = [*tool.input_schema()["properties"], "nonsense"]
    arguments = data.draw(st.dictionaries(st.sampled_from(fields), json_values, max_size=len(fields)))
    try:
        args = tool.parse(arguments)
    except ToolArgumentError as exc:
        assert str(exc).startswith(f"Invalid arguments for {name}: ")
        return
    assert args.step_number >= 1 and args.total_steps >= 1 and args.step
    if isinstance(tool, WorkflowTool):
        assert f"step {args.step_number}]" in tool.render_step(args)
