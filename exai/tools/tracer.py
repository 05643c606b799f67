"""tracer: trace a function's call flow or a module's dependencies, in steps, with an expert check."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from exai.tools.workflow import StepArgs, WorkflowTool


class TracerArgs(StepArgs):
    trace_mode: Literal["precision", "dependencies"] = Field(
        description="precision: a function's execution flow; dependencies: what a module uses and what uses it."
    )
    target_description: str = Field(min_length=1, description="What to trace, and why.")


class Tracer(WorkflowTool[TracerArgs]):
    name = "tracer"
    description = (
        "Trace a function's call flow (precision) or a module's dependencies (dependencies) in steps: "
        "each call records what you traced, with no model call; the final step (next_step_required: "
        "false) gets an expert's check."
    )
    Args = TracerArgs
    work = "tracing"
    system = (
        "You are a code navigator. From the code itself, trace the target: in precision mode its call "
        "chain with the branches, side effects and state it touches, entry point to exit; in "
        "dependencies mode what it depends on and what depends on it, direct and indirect. Give every "
        "edge as file:line, and say which parts of the trace you could not confirm."
    )
    actions = (
        (
            "Find the target's definition and read it in full; list its file in relevant_files.",
            "Name its direct callers and callees (precision) or imports and importers (dependencies).",
        ),
        (
            "Follow each edge one level further, noting branches, side effects and state changes.",
            "Record each edge as file:line in findings; add the files to relevant_files.",
        ),
        (
            "Check the trace for missed paths: error handling, callbacks, dynamic dispatch.",
            "When the trace is complete, make the final step.",
        ),
    )
