"""docgen: document code, in steps, with an expert's documentation at the end."""

from __future__ import annotations

from exai.tools.workflow import StepArgs, WorkflowTool


class DocGen(WorkflowTool[StepArgs]):
    name = "docgen"
    description = (
        "Write documentation in steps: each call records what you read and what it lacks, with no model "
        "call; the final step (next_step_required: false, relevant_files required) gets an expert's "
        "docstrings and comments."
    )
    Args = StepArgs
    work = "documentation_analysis"
    system = (
        "You are a technical writer who reads code closely. Write documentation that says what each "
        "function promises: its arguments, result, errors, side effects, cost (big-O where it matters) "
        "and what it does under cancellation or concurrency, in the project's docstring style. Never "
        "describe the code line by line and never change it; mark anything you could not verify."
    )
    final_requires = ("relevant_files",)
    actions = (
        (
            "Read the files to document and list them in relevant_files.",
            "Find the project's docstring style and what is documented already.",
        ),
        (
            "For each undocumented or wrongly documented function, note what it promises and what can go wrong.",
            "Note complex logic and call flows that need a comment.",
        ),
        (
            "Check your notes against the code once more (arguments, errors, side effects).",
            "Make the final step with the list of what to document.",
        ),
    )
