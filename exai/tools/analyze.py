"""analyze: understand code (architecture, quality, performance), with an expert check at the end."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from exai.tools.workflow import StepArgs, WorkflowTool


class AnalyzeArgs(StepArgs):
    analysis_type: Literal["architecture", "performance", "security", "quality", "general"] = Field(
        "general", description="What to focus on."
    )


class Analyze(WorkflowTool[AnalyzeArgs]):
    name = "analyze"
    description = (
        "Analyze code in steps (architecture, performance, security, quality): each call records "
        "what you examined, with no model call; the final step (next_step_required: false) gets an "
        "expert analysis."
    )
    Args = AnalyzeArgs
    work = "analysis"
    system = (
        "You are a software architect analysing a codebase. Judge structure, coupling, performance "
        "and risks from the code itself, and rank your observations by how much they matter."
    )
    actions = (
        (
            "Map the code: entry points, main modules and how data flows between them.",
            "Put the files that matter in relevant_files.",
        ),
        (
            "Examine the hot paths and the boundaries between modules.",
            "Note concrete strengths and weaknesses with file:line evidence.",
        ),
        (
            "Check your main observations against the code once more.",
            "When the picture is complete, make the final step with your summary.",
        ),
    )
