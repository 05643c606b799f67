"""codereview: review code in steps, with an expert review of the files at the end."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from exai.tools.workflow import StepArgs, WorkflowTool


class CodeReviewArgs(StepArgs):
    review_type: Literal["full", "security", "performance", "quick"] = Field("full", description="Kind of review.")
    focus_on: str | None = Field(None, description="Areas to focus on.")
    standards: str | None = Field(None, description="Coding standards to enforce.")


class CodeReview(WorkflowTool[CodeReviewArgs]):
    name = "codereview"
    description = (
        "Review code in steps: each call records what you reviewed and the issues found, with no "
        "model call; the final step (next_step_required: false, relevant_files required) gets an "
        "expert review."
    )
    Args = CodeReviewArgs
    work = "code_review"
    system = (
        "You are a meticulous senior code reviewer. Find real bugs, security holes and performance "
        "problems, rank them by severity, and give a concrete fix for each; skip style nits."
    )
    final_requires = ("relevant_files",)
    actions = (
        (
            "Read the changed or named files in full and list them in relevant_files.",
            "Understand what the code is meant to do before judging it.",
        ),
        (
            "Check error handling, input validation and resource cleanup.",
            "Look for concurrency, security and performance problems; record each in issues_found.",
        ),
        (
            "Verify each issue you recorded against the code; drop the false ones.",
            "When the review is complete, make the final step.",
        ),
    )
