"""consensus: several models judge one proposal at once, each blind to the others, then a synthesis."""

from __future__ import annotations

import math
import time
from typing import Any, Final, Literal

import trio
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from exai.providers.base import ErrorKind, ProviderError
from exai.providers.catalog import PROVIDERS, default_model
from exai.store import Turn
from exai.tools.base import ToolContext, ToolOutput, turn_usage
from exai.tools.context import fit_context, window_of
from exai.tools.files import FileContent
from exai.tools.workflow import StepArgs, StepRun, WorkflowTool

# The models get this share of the time left; the rest is kept for the synthesis.
MODELS_SHARE: Final = 0.8
SYNTHESIS_MARGIN_S: Final = 0.2  # the synthesis stops this long before the deadline, keeping the answers
MAX_MODELS: Final = 8

STANCES: Final = {
    "for": "Your stance: FOR. Make the strongest honest case for the proposal; still name any flaw that would sink it.",
    "against": "Your stance: AGAINST. Make the strongest honest case against the proposal; still concede what is clearly right.",
    "neutral": "Your stance: NEUTRAL. Weigh the proposal evenly and say where the balance falls.",
}
SYSTEM: Final = (
    "You are one of several independent experts asked for a verdict on a technical proposal. "
    "Judge it on its merits: feasibility, risks, cost, alternatives. End with a one-line verdict."
)
SYNTHESIS: Final = (
    "You combine independent expert opinions on a proposal into one recommendation. Name which "
    "model said what (by model and stance), where they agree, where they differ and why, and "
    "finish with a recommendation and its main risk."
)


class ModelStance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    stance: Literal["for", "against", "neutral"] = "neutral"


class ConsensusArgs(StepArgs):
    models: list[ModelStance] = Field(
        default_factory=list,
        max_length=MAX_MODELS,
        description="Models to ask, each with a stance (for|against|neutral); default: one per configured provider.",
    )


class Consensus(WorkflowTool[ConsensusArgs]):
    name = "consensus"
    description = (
        "Get several models' independent verdicts on a proposal (in step): on the final step "
        "(next_step_required: false) every model in models is asked at once, blind to the others, "
        "with its stance; a synthesis names who said what."
    )
    Args = ConsensusArgs
    work = "consensus"
    system = SYSTEM
    auto_capable = False
    actions = (
        ("State the proposal and the question precisely in step; add the files that matter in relevant_files.",),
        ("Add the evidence the models will need to judge the proposal.",),
        ("When the proposal is complete, make the final step to ask the models.",),
    )

    async def finish(self, run: StepRun[ConsensusArgs]) -> ToolOutput:
        args, ctx = run.args, run.ctx
        entries = list(args.models) or default_entries(ctx)
        files = await self.read(run, run.files)
        deadline = trio.current_effective_deadline()
        ask_until = math.inf
        if deadline != math.inf:
            now = trio.current_time()
            ask_until = now + (deadline - now) * MODELS_SHARE
        await ctx.report(f"consensus: asking {len(entries)} models at once")
        responses: list[dict[str, Any]] = [{} for _ in entries]
        async with trio.open_nursery() as nursery:
            for index, entry in enumerate(entries):
                nursery.start_soon(self.ask, run, entry, files, ask_until, responses, index)
        log = logger.bind(rid=ctx.request_id)
        for r in responses:
            log.info("consensus model={} stance={} status={}", r["model"], r["stance"], r["status"])
        now_wall = time.time()
        await run.save(
            [
                Turn(role="assistant", content=f"[{r['model']} ({r['stance']})] {r['text']}", tool=self.name,
                     created=now_wall, step_number=run.step_number, model=r["model"], usage=r["usage"])
                for r in responses
                if r["status"] == "ok"
            ]
        )
        synthesis = await self.synthesise(run, responses, deadline)
        run.embedded = [f.resolved for f in files]
        status = "calling_expert_analysis" if synthesis is not None else "complete"
        return self.result(run, status=status, final=True, expert=synthesis, extra={"responses": responses})

    async def ask(
        self,
        run: StepRun[ConsensusArgs],
        entry: ModelStance,
        files: list[FileContent],
        ask_until: float,
        responses: list[dict[str, Any]],
        index: int,
    ) -> None:
        """One model's blind verdict into responses[index]; failures and timeouts are reported there."""
        ctx = run.ctx
        response: dict[str, Any] = {"model": entry.model, "stance": entry.stance}
        responses[index] = response
        with trio.move_on_at(ask_until):
            try:
                context = fit_context(
                    system=f"{SYSTEM}\n\n{STANCES[entry.stance]}",
                    history=[],
                    files=files,
                    prompt=self.proposal(run),
                    window_tokens=window_of(ctx, entry.model),
                    embed_all=True,
                )
                completion = await ctx.complete(context.messages, model=entry.model, temperature=run.args.temperature)
            except ProviderError as exc:
                response.update(status="timeout" if exc.kind == "timeout" else "error", error=str(exc))
                return
            response.update(status="ok", text=completion.text, usage=turn_usage(completion))
            return
        response.update(status="timeout", error="no answer in the time this call left for the models")

    def proposal(self, run: StepRun[ConsensusArgs]) -> str:
        lines = ["Proposal:", run.args.step, "", "What the asker found so far:", *(f"- {f}" for f in run.findings)]
        return "\n".join(lines)

    async def synthesise(self, run: StepRun[ConsensusArgs], responses: list[dict[str, Any]], deadline: float) -> str | None:
        """The synthesis, or None with a note saying why there is none."""
        args, ctx = run.args, run.ctx
        answered = [r for r in responses if r["status"] == "ok"]
        why = None
        if not args.use_assistant_model:
            why = "use_assistant_model is false"
        elif not answered:
            why = "no model answered"
        elif ctx.budget.remaining <= 0:
            why = "the call's provider budget is spent (EXAI_MAX_PROVIDER_CALLS)"
        if why is None:
            opinions = "\n\n".join(f"[{r['model']} ({r['stance']})]\n{r['text']}" for r in answered)
            failed = [f"{r['model']} ({r['stance']}): {r['status']}" for r in responses if r["status"] != "ok"]
            prompt = f"{self.proposal(run)}\n\nOpinions:\n{opinions}"
            if failed:
                prompt += "\n\nNo answer from: " + "; ".join(failed)
            await ctx.report("consensus: writing the synthesis")
            with trio.move_on_at(deadline - SYNTHESIS_MARGIN_S):
                try:
                    completion = await ctx.complete(
                        [{"role": "system", "content": SYNTHESIS}, {"role": "user", "content": prompt}],
                        model=args.model,
                        temperature=args.temperature,
                    )
                except ProviderError as exc:
                    why = f"the synthesis failed: {exc}"
                else:
                    await run.save(
                        [Turn(role="assistant", content=completion.text, tool=self.name, created=time.time(),
                              step_number=run.step_number, model=completion.model, usage=turn_usage(completion))]
                    )
                    return completion.text
            why = why or "the call's deadline left no time for it"
        run.notes.append(f"no synthesis: {why}; the responses are returned as they are")
        return None


def default_entries(ctx: ToolContext) -> list[ModelStance]:
    """One neutral model per configured provider: its default model."""
    gateway = ctx.gateway
    entries = []
    for provider in PROVIDERS:
        if gateway.routes[provider].http is None:
            continue
        model = default_model(ctx.settings, provider, gateway.demo)
        if model is not None:
            entries.append(ModelStance(model=model, stance="neutral"))
    if not entries:
        raise ProviderError(
            "exai", ErrorKind.NOT_CONFIGURED, "consensus needs a model provider: set KIMI_API_KEY or GLM_API_KEY."
        )
    return entries
