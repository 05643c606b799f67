"""thinkdeep: extended reasoning about a hard problem, checked by an expert model at the end."""

from __future__ import annotations

from pydantic import Field

from exai.tools.workflow import StepArgs, WorkflowTool


class ThinkDeepArgs(StepArgs):
    problem_context: str | None = Field(None, description="Background: constraints, what was tried.")
    focus_areas: list[str] = Field(default_factory=list, description="E.g. architecture, performance, security.")


class ThinkDeep(WorkflowTool[ThinkDeepArgs]):
    name = "thinkdeep"
    description = (
        "Think a hard problem through in steps (design, trade-offs, a decision): each call records "
        "your reasoning, with no model call; the final step (next_step_required: false) gets an "
        "expert's critique."
    )
    Args = ThinkDeepArgs
    work = "deep_thinking"
    system = (
        "You are a principal engineer thinking with a colleague. Challenge assumptions, find the "
        "edge cases and alternatives they missed, and say which option you would choose and why."
    )
    actions = (
        (
            "State the problem, its constraints and what a good answer must satisfy.",
            "List at least two candidate approaches.",
        ),
        (
            "Examine each approach against the constraints, with evidence from the code.",
            "Name the assumptions you have not verified yet and check them.",
        ),
        (
            "Look for the failure modes of your preferred approach.",
            "When the choice is clear, make the final step with your conclusion.",
        ),
    )
