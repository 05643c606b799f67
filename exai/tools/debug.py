"""debug: find the root cause of a bug, step by step, with an expert check at the end."""

from __future__ import annotations

from exai.tools.workflow import StepArgs, WorkflowTool


class Debug(WorkflowTool[StepArgs]):
    name = "debug"
    description = (
        "Root-cause a bug in steps: each call reports one step (findings, files, hypothesis) and gets "
        "what to check next, with no model call; the final step (next_step_required: false, hypothesis "
        "required) gets an expert analysis. auto_steps lets exai run a few steps itself."
    )
    Args = StepArgs
    work = "investigation"
    system = (
        "You are a senior debugging expert. Find the root cause from evidence, not guesses: trace "
        "the failing path through the code, name exact files and lines, and propose the smallest fix."
    )
    final_requires = ("hypothesis",)
    actions = (
        (
            "Reproduce the failure or find its exact error message and stack trace.",
            "Find where the symptom originates in the code and read those functions.",
            "List the files you examined in files_checked and the ones that matter in relevant_files.",
        ),
        (
            "Trace the failing path backwards from the symptom to its first wrong value.",
            "Check recent changes, configuration and inputs that reach that path.",
            "Write down a hypothesis and the evidence that would disprove it.",
        ),
        (
            "Test the hypothesis: find the evidence that would disprove it.",
            "Look for other call sites or states that trigger the same fault.",
            "When only one explanation is left, make the final step with your hypothesis.",
        ),
    )
