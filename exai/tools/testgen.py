"""testgen: work out which tests code needs, in steps, with an expert's test plan and code at the end."""

from __future__ import annotations

from exai.tools.workflow import StepArgs, WorkflowTool


class TestGen(WorkflowTool[StepArgs]):
    __test__ = False  # not a pytest class, whatever its name says

    name = "testgen"
    description = (
        "Write tests in steps: each call records the code paths and edge cases you found, with no model "
        "call; the final step (next_step_required: false, relevant_files required) gets an expert's tests "
        "in the project's framework."
    )
    Args = StepArgs
    work = "test_analysis"
    system = (
        "You are a test engineer. Write the tests that would catch real bugs in this code: the main "
        "behaviour, boundaries, error paths, concurrency and resource cleanup where they apply. Use the "
        "test framework, fixtures and style the project already uses; each test asserts one behaviour "
        "and could fail. Put the test code in the conclusion and one line per test in recommendations."
    )
    final_requires = ("relevant_files",)
    actions = (
        (
            "Read the code under test and its existing tests; list both in relevant_files.",
            "Find the test framework, fixtures and conventions the project uses.",
        ),
        (
            "List the code paths, boundaries and error cases each function has.",
            "Note what existing tests miss; record the riskiest gaps in issues_found.",
        ),
        (
            "Decide the smallest set of tests that covers the gaps, with what each asserts.",
            "Make the final step with that list in findings.",
        ),
    )
