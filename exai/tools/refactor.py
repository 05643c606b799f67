"""refactor: find what to refactor, in steps, with an expert's refactoring plan at the end."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from exai.tools.workflow import StepArgs, WorkflowTool


class RefactorArgs(StepArgs):
    refactor_type: Literal["codesmells", "decompose", "modernize", "organization"] = Field(
        "codesmells", description="Kind of refactoring to look for."
    )


class Refactor(WorkflowTool[RefactorArgs]):
    name = "refactor"
    description = (
        "Find refactoring opportunities in steps: each call records what you examined, with no model "
        "call; the final step (next_step_required: false, relevant_files required) gets an expert's "
        "prioritised plan."
    )
    Args = RefactorArgs
    work = "refactoring_analysis"
    system = (
        "You are a senior engineer planning a refactoring. Propose changes that make the code easier to "
        "change without changing what it does: name each opportunity by file:line, say why it matters, "
        "show the target shape briefly, and order them so each step is small, safe and testable. Prefer "
        "the language's current idioms; never propose a rewrite where an extraction will do."
    )
    final_requires = ("relevant_files",)
    actions = (
        (
            "Read the code to refactor in full and list it in relevant_files.",
            "Note its size, responsibilities and the tests that cover it.",
        ),
        (
            "Look for the refactor_type's signs: duplication, long functions, mixed responsibilities, dated idioms, tangled modules.",
            "Record each opportunity in issues_found with its file:line and severity (how much it hurts).",
        ),
        (
            "Check each opportunity against its callers: would the change keep behaviour and tests?",
            "Order the opportunities by value and risk, then make the final step.",
        ),
    )
