"""challenge: a statement handed back with the instruction to examine it, not to agree with it."""

from __future__ import annotations

from pydantic import Field

from exai.tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from exai.tools.context import keep_under

INSTRUCTION = (
    "Examine the statement below critically before you answer. Do not agree because it was said: "
    "check it against the code, the facts and your own earlier reasoning. If it is wrong, incomplete "
    "or misleading, say so and why; if it holds, say what evidence makes it hold. Then answer."
)


class ChallengeArgs(ToolArgs):
    prompt: str = Field(min_length=1, description="The statement to examine, as the user made it.")


class Challenge(Tool[ChallengeArgs]):
    name = "challenge"
    description = (
        "Use when the user questions or pushes back on an earlier answer, or to test a claim: returns the "
        "statement wrapped in an instruction to examine it critically instead of agreeing. No model is called."
    )
    Args = ChallengeArgs

    async def run(self, args: ChallengeArgs, ctx: ToolContext) -> ToolOutput:
        text, cut = keep_under(f'{INSTRUCTION}\n\nStatement:\n"""\n{args.prompt}\n"""', int(ctx.settings.max_result_tokens))
        return ToolOutput(text, structured={"status": "challenge_accepted", "trimmed": cut})
