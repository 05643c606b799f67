"""precommit: review the change about to be committed, read with the real git, in steps."""

from __future__ import annotations

from pydantic import Field, field_validator

from exai.tools.base import ToolContext, ToolOutput
from exai.tools.files import FileContent
from exai.tools.git import Change, read_change, repository
from exai.tools.workflow import StepArgs, StepRun, WorkflowTool

REF_MAX_CHARS = 256


class PrecommitArgs(StepArgs):
    path: str = Field(description="Absolute path of the repository, or of a directory in it (only the change under it is read).")
    compare_to: str | None = Field(None, description="A git ref: review the change since it, instead of staged/unstaged.")
    include_staged: bool = True
    include_unstaged: bool = True

    @field_validator("compare_to")
    @classmethod
    def _a_ref_not_an_option(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or len(value) > REF_MAX_CHARS:
            raise ValueError(f"must be a git ref of 1 to {REF_MAX_CHARS} characters")
        if value.startswith("-"):
            raise ValueError("must be a git ref, and a ref never starts with '-'")
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ValueError("must be a git ref: no spaces or control characters")
        return value


class Precommit(WorkflowTool[PrecommitArgs]):
    name = "precommit"
    description = (
        "Review the change about to be committed, in steps: each call records what you checked, with no "
        "model call; the final step (next_step_required: false) sends the diff, read with git under path "
        "(staged and unstaged, or since compare_to), to an expert."
    )
    Args = PrecommitArgs
    work = "precommit_validation"
    system = (
        "You are a senior engineer reviewing a change before it is committed. Judge the diff against "
        "what it is meant to do: bugs it introduces, cases it misses, security and concurrency problems, "
        "broken callers, missing tests and documentation, leftover debug code or secrets. Rank findings "
        "by severity with file:line, and say plainly whether the change is ready to commit."
    )
    actions = (
        (
            "Read the whole change (git diff, git diff --cached) and say in findings what it is meant to do.",
            "Put the changed files and their closest callers in relevant_files.",
        ),
        (
            "Check each changed function's callers and tests: what the change can break.",
            "Look for missing error handling, security problems and debug leftovers; record each in issues_found.",
        ),
        (
            "Verify each recorded issue against the diff; drop the false ones.",
            "When the review is complete, make the final step: the expert gets the diff itself.",
        ),
    )

    async def run(self, args: PrecommitArgs, ctx: ToolContext) -> ToolOutput:
        # Every step: a path that is not a repository is refused before anything is saved.
        await repository(args.path, ctx.settings.allowed_roots, args.compare_to)
        return await super().run(args, ctx)

    async def material(self, run: StepRun[PrecommitArgs]) -> list[FileContent]:
        args, settings = run.args, run.ctx.settings
        directory = await repository(args.path, settings.allowed_roots, args.compare_to)
        await run.ctx.report(f"{self.name}: reading the change with git")
        change = Change(args.compare_to, args.include_staged, args.include_unstaged)
        return await read_change(directory, change, int(settings.max_file_bytes))
