"""The step engine behind the workflow tools (thinkdeep, debug, analyze, codereview, consensus).

The calling assistant investigates between calls; each call is one step. An intermediate step
makes no provider call: it is recorded in the thread and answered with what to do next. The
final step asks the expert model for an analysis of everything the thread gathered. With
`auto_steps` the daemon runs further steps itself, in a loop bounded by the auto-step limit,
the call's provider budget and its deadline; every finished step is in the thread at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from exai.providers.base import BudgetExhausted, ProviderError
from exai.store import Turn
from exai.tools.base import (
    ModelArgs,
    Tool,
    ToolArgumentError,
    ToolContext,
    ToolOutput,
    open_thread,
    turn_usage,
)
from exai.tools.context import fit_context, fit_result, window_of
from exai.tools.files import FileContent, read_files, trimmed_note

CONFIDENCE: Final = ("exploring", "low", "medium", "high", "very_high", "almost_certain", "certain")
Confidence = Literal["exploring", "low", "medium", "high", "very_high", "almost_certain", "certain"]
CONFIDENT: Final = CONFIDENCE.index("very_high")  # auto-steps stop at this confidence or above
STALL_STEPS: Final = 2  # auto-steps stop after this many steps without a new finding
ISSUE_PREFIX: Final = "Issue ("  # how a step's issues_found stand in its thread turn

AUTO_STEP_FORMAT: Final = (
    "You are running one step of this investigation yourself. Answer with ONLY a JSON object: "
    '{"findings": "what this step established, with evidence", "confidence": "exploring|low|medium|'
    'high|very_high|almost_certain|certain", "hypothesis": "your current best explanation", '
    '"next_step": "what to examine next"}. Do not repeat earlier findings.'
)
EXPERT_FORMAT: Final = (
    "You are the expert reviewing an investigation another assistant carried out. Check its "
    "findings against the files, point out what it missed or got wrong, and answer with ONLY a "
    'JSON object: {"summary": "...", "conclusion": "...", "issues": [{"severity": "critical|high|'
    'medium|low", "description": "...", "where": "file:line"}], "recommendations": ["..."], '
    '"confidence": "low|medium|high|certain"}.'
)


class Issue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    severity: Literal["critical", "high", "medium", "low"]
    description: str = Field(min_length=1)


# The fields every step of an investigating workflow tool takes.
# No docstring: pydantic would put it into every tool's schema.
class StepArgs(ModelArgs):
    step: str = Field(min_length=1, description="This step; on the final step, your conclusion.")
    step_number: int = Field(ge=1)
    total_steps: int = Field(ge=1, description="Steps expected in all.")
    next_step_required: bool = Field(description="false: the final step (expert analysis).")
    findings: str = Field(description="What this step found (file:line).")
    files_checked: list[str] = Field(default_factory=list)
    relevant_files: list[str] = Field(default_factory=list, description="Absolute paths sent to the model.")
    relevant_context: list[str] = Field(default_factory=list)
    issues_found: list[Issue] = Field(default_factory=list)
    hypothesis: str | None = None
    confidence: Confidence = "exploring"
    continuation_id: str | None = Field(None, description="Thread id of an earlier result.")
    model: str | None = Field(None, description="Model name, or 'auto'.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    use_assistant_model: bool = True
    auto_steps: int = Field(0, ge=0, description="Steps exai runs itself, a model call each.")


S = TypeVar("S", bound=StepArgs)


@dataclass
class StepRun(Generic[S]):
    """One call's view of its thread while it runs."""

    args: S
    ctx: ToolContext
    thread_id: str | None
    history: list[Turn]
    findings: list[str]
    files: list[str]  # relevant files of the whole thread (resolved), in first-seen order
    step_number: int
    total_steps: int
    confidence: str
    hypothesis: str | None
    tool_name: str
    suggested: str | None = None  # the last auto-step's "next_step"
    notes: list[str] = field(default_factory=list)
    embedded: list[str] = field(default_factory=list)  # files whose text this call sent

    async def save(self, turns: list[Turn], *, findings: Sequence[str] = (), files: Sequence[str] = (), model: str | None = None) -> None:
        """Append to the thread (creating it on first use); note turns the store dropped."""
        store = self.ctx.store
        appended = await store.append(self.thread_id, self.tool_name, turns, findings=findings, files=files, model=model)
        self.thread_id = self.ctx.continuation_id = appended.thread_id
        self.history.extend(turns)
        self.findings.extend(findings)
        if appended.dropped_now:
            self.notes.append(
                f"{appended.dropped_now} oldest turn(s) dropped from the thread (EXAI_MAX_CONVERSATION_TURNS)"
            )


def rank(confidence: str) -> int:
    return CONFIDENCE.index(confidence) if confidence in CONFIDENCE else 0


def parse_json(text: str) -> Any:
    """The JSON object in a model's answer (also inside a ``` fence), else None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class WorkflowTool(Tool[S]):
    """A workflow tool: a declaration the engine runs, over its step argument model `S`."""

    work: ClassVar[str]  # status while steps remain: pause_for_<work>
    system: ClassVar[str]
    final_requires: ClassVar[tuple[str, ...]] = ()
    auto_capable: ClassVar[bool] = True
    # required_actions: early steps, while confidence is below medium, and once it is medium or above
    actions: ClassVar[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]

    def required_actions(self, step_number: int, confidence: str) -> list[str]:
        early, exploring, converging = self.actions
        if rank(confidence) >= CONFIDENT:
            return ["Confirm the remaining doubt with one concrete check, then call the final step (next_step_required: false)."]
        if step_number <= 1:
            return list(early)
        return list(converging if rank(confidence) >= CONFIDENCE.index("medium") else exploring)

    def task_details(self, args: S) -> str:
        """The tool's own fields (review_type, focus_areas...) as lines for the model."""
        base = set(StepArgs.model_fields)
        lines = []
        for name, value in args.model_dump(mode="json").items():
            if name not in base and value not in (None, "", []):
                lines.append(f"{name}: {value if isinstance(value, str) else json.dumps(value)}")
        return "\n".join(lines)

    # -- the engine ----------------------------------------------------------------------

    async def run(self, args: S, ctx: ToolContext) -> ToolOutput:
        total = max(args.total_steps, args.step_number)
        limit = int(ctx.settings.max_auto_steps)
        auto = min(args.auto_steps, limit) if self.auto_capable else 0
        if args.model is not None:
            window_of(ctx, args.model)  # an unknown model is refused before anything is saved
        # Every path is checked (reading nothing yet); the text is read only for a model call.
        named = await read_files(
            list(dict.fromkeys([*args.relevant_files, *args.files_checked])), ctx.settings.allowed_roots, 0
        )
        relevant_paths = [c.resolved for c in named if c.path in set(args.relevant_files)]
        async with ctx.store.hold(args.continuation_id):
            thread = await open_thread(ctx, args.continuation_id)
            files = list(dict.fromkeys([*(thread.files if thread else []), *relevant_paths]))
            if not args.next_step_required:
                self.check_final(args, files)
            run = StepRun(
                args=args,
                ctx=ctx,
                thread_id=args.continuation_id,
                history=list(thread.turns) if thread else [],
                findings=list(thread.findings) if thread else [],
                files=files,
                step_number=args.step_number,
                total_steps=total,
                confidence=args.confidence,
                hypothesis=args.hypothesis,
                tool_name=self.name,
            )
            if not self.auto_capable and args.auto_steps:
                run.notes.append(f"{self.name} runs no auto_steps; it was ignored")
            elif args.auto_steps and not args.next_step_required:
                # The final step is the assistant's conclusion: no further steps, only the expert.
                run.notes.append("auto_steps was ignored: the final step runs no further steps, only the expert analysis")
            elif args.auto_steps > limit:
                run.notes.append(f"auto_steps {args.auto_steps} was clamped to {limit} (EXAI_MAX_AUTO_STEPS)")
            if thread is not None and thread.dropped:
                run.notes.append(f"this thread has dropped {thread.dropped} oldest turn(s) (EXAI_MAX_CONVERSATION_TURNS)")
            ctx.show(step=f"{args.step_number}/{total}")
            await run.save(
                [Turn(role="user", content=self.render_step(args), tool=self.name, created=time.time(), step_number=args.step_number)],
                findings=[args.findings] if args.findings.strip() else [],
                files=relevant_paths,
            )
            if not args.next_step_required:
                return await self.finish(run)
            if auto and rank(args.confidence) >= CONFIDENT:
                run.notes.append("auto-steps not run: confidence is already very_high or above")
                auto = 0
            if auto == 0:
                return self.result(run, status=f"pause_for_{self.work}")
            return await self.auto_run(run, auto, clamped=args.auto_steps > limit)

    async def material(self, run: StepRun[S]) -> list[FileContent]:
        """What the tool itself gathers for a model call, ahead of the files (precommit: the diff)."""
        return []

    async def read(self, run: StepRun[S], paths: list[str]) -> list[FileContent]:
        """The tool's material and the files' text for a model call; the result names those
        trimmed to EXAI_MAX_FILE_BYTES."""
        settings = run.ctx.settings
        contents = [
            *await self.material(run),
            *await read_files(paths, settings.allowed_roots, int(settings.max_file_bytes)),
        ]
        note = trimmed_note(contents)
        if note and note not in run.notes:
            run.notes.append(note)
        return contents

    def check_final(self, args: S, files: list[str]) -> None:
        missing = [name for name in self.final_requires if not (files if name == "relevant_files" else getattr(args, name))]
        if missing:
            raise ToolArgumentError(
                f"Invalid arguments for {self.name}: the final step (next_step_required: false) needs "
                + ", ".join(missing)
            )

    def render_step(self, args: S) -> str:
        lines = [f"[{self.name} step {args.step_number}] {args.step}", f"Findings: {args.findings}"]
        if args.hypothesis:
            lines.append(f"Hypothesis: {args.hypothesis}")
        lines.append(f"Confidence: {args.confidence}")
        if args.files_checked:
            lines.append("Files checked: " + ", ".join(args.files_checked))
        if args.relevant_files:
            lines.append("Relevant files: " + ", ".join(args.relevant_files))
        if args.relevant_context:
            lines.append("Relevant context: " + ", ".join(args.relevant_context))
        lines.extend(f"{ISSUE_PREFIX}{i.severity}): {i.description}" for i in args.issues_found)
        details = self.task_details(args)
        if details:
            lines.append(details)
        return "\n".join(lines)

    async def auto_run(self, run: StepRun[S], steps: int, *, clamped: bool) -> ToolOutput:
        """Run up to `steps` further steps, one provider call each; a loop, never recursion.

        Stops early at high confidence, after STALL_STEPS steps with nothing new, or when
        the call's provider budget is spent. Cancellation (the deadline) propagates; every
        finished step is already in the thread.
        """
        ctx, args = run.ctx, run.args
        window = window_of(ctx, args.model)
        contents = await self.read(run, run.files)
        seen = {" ".join(f.lower().split()) for f in run.findings}
        stalled = 0
        stop = "steps"
        for _ in range(steps):
            number = run.step_number + 1
            run.total_steps = max(run.total_steps, number)
            ctx.show(step=f"{number}/{run.total_steps}")
            await ctx.report(f"{self.name}: auto step {number}/{run.total_steps}")
            if ctx.budget.remaining <= 0:
                stop = "budget"
                break
            context = fit_context(
                system=f"{self.system}\n\n{AUTO_STEP_FORMAT}",
                history=run.history,
                files=contents,
                prompt=self.auto_prompt(run, number),
                window_tokens=window,
            )
            run.notes.extend(n for n in context.omitted if n not in run.notes)
            try:
                completion = await ctx.complete(context.messages, model=args.model, temperature=args.temperature)
            except BudgetExhausted:
                stop = "budget"
                break
            except ProviderError as exc:
                return failed(self.result(run, status=f"pause_for_{self.work}"), exc)
            answer = parse_json(completion.text) or {}
            findings = str(answer.get("findings") or completion.text).strip()
            if answer.get("confidence") in CONFIDENCE:
                run.confidence = answer["confidence"]
            if isinstance(answer.get("hypothesis"), str) and answer["hypothesis"].strip():
                run.hypothesis = answer["hypothesis"]
            if isinstance(answer.get("next_step"), str) and answer["next_step"].strip():
                run.suggested = answer["next_step"].strip()
            run.step_number = number
            run.embedded = list(dict.fromkeys([*run.embedded, *context.embedded]))
            now = time.time()
            await run.save(
                [
                    # The files sent stay in the thread (later steps refer to them); the findings list is there already.
                    Turn(role="user", content=f"[{self.name} step {number}, run by exai]{context.attachments}", tool=self.name, created=now, step_number=number, files=context.embedded, versions=context.versions),
                    Turn(role="assistant", content=completion.text, tool=self.name, created=now, step_number=number, model=completion.model, usage=turn_usage(completion)),
                ],
                findings=[findings],
                model=completion.model,
            )
            logger.bind(rid=ctx.request_id).info(
                "{} auto step {}/{} confidence={} thread={}", self.name, number, run.total_steps, run.confidence, run.thread_id
            )
            key = " ".join(findings.lower().split())
            stalled = stalled + 1 if key in seen else 0
            seen.add(key)
            if rank(run.confidence) >= CONFIDENT:
                stop = "confident"
                break
            if stalled >= STALL_STEPS:
                stop = "stalled"
                break
        else:
            if clamped:
                stop = "limit"
        status = f"pause_for_{self.work}"
        if stop in ("budget", "limit"):
            status = "budget_exhausted"
        run.notes.append(_STOP_NOTES[stop].format(limit=ctx.settings.max_auto_steps, budget=ctx.budget.max_calls))
        return self.result(run, status=status)

    def task_lines(self, run: StepRun[S], heading: str, findings: list[str]) -> list[str]:
        """The task, the tool's own fields, the findings and the hypothesis, for a prompt."""
        lines = [f"Task ({self.name}): {run.args.step}", self.task_details(run.args), heading, *(f"- {f}" for f in findings)]
        if run.hypothesis:
            lines.append(f"Current hypothesis: {run.hypothesis}")
        return lines

    def auto_prompt(self, run: StepRun[S], number: int) -> str:
        lines = self.task_lines(run, "Findings so far:", run.findings[-20:])
        lines.append(f"Run step {number} of {run.total_steps} now; current confidence: {run.confidence}.")
        return "\n".join(line for line in lines if line)

    async def finish(self, run: StepRun[S]) -> ToolOutput:
        """The final step: the expert's analysis unless certain or not wanted."""
        args, ctx = run.args, run.ctx
        if not args.use_assistant_model or args.confidence == "certain":
            why = "use_assistant_model is false" if not args.use_assistant_model else "confidence is certain"
            run.notes.append(f"no expert analysis: {why}")
            return self.result(run, status="complete", final=True, expert=None)
        expert_files = await self.read(run, run.files)
        await ctx.report(f"{self.name}: asking the expert model")
        context = fit_context(
            system=f"{self.system}\n\n{EXPERT_FORMAT}",
            history=run.history,
            files=expert_files,
            prompt=self.expert_prompt(run),
            window_tokens=window_of(ctx, args.model),
            embed_all=True,
        )
        run.notes.extend(context.omitted)
        try:
            completion = await ctx.complete(context.messages, model=args.model, temperature=args.temperature)
        except ProviderError as exc:
            return failed(self.result(run, status="calling_expert_analysis", final=True), exc)
        expert: Any = parse_json(completion.text)
        if expert is None:
            expert = completion.text
        run.embedded = list(dict.fromkeys([*run.embedded, *context.embedded]))
        await run.save(
            [Turn(role="assistant", content=completion.text, tool=self.name, created=time.time(), step_number=run.step_number, model=completion.model, usage=turn_usage(completion))],
            model=completion.model,
        )
        return self.result(run, status="calling_expert_analysis", final=True, expert=expert)

    def expert_prompt(self, run: StepRun[S]) -> str:
        args = run.args
        lines = self.task_lines(run, "Consolidated findings, step by step:", run.findings)
        # Every step's issues, as render_step kept them in the thread (this step's included).
        issues = dict.fromkeys(
            line for turn in run.history if turn.role == "user" for line in turn.content.splitlines() if line.startswith(ISSUE_PREFIX)
        )
        if issues:
            lines += ["Issues found:", *(f"- {issue}" for issue in issues)]
        if args.relevant_context:
            lines.append("Relevant context: " + ", ".join(args.relevant_context))
        lines.append(f"The assistant's confidence: {args.confidence}.")
        return "\n".join(line for line in lines if line)

    def result(self, run: StepRun[S], *, status: str, final: bool = False, expert: Any = None, extra: dict[str, Any] | None = None) -> ToolOutput:
        ctx = run.ctx
        actions = [] if final else self.required_actions(run.step_number, run.confidence)
        if run.suggested and not final:
            actions.insert(0, f"Suggested by the last auto-step: {run.suggested}")
        structured: dict[str, Any] = {
            "status": status,
            "step_number": run.step_number,
            "total_steps": max(run.total_steps, run.step_number),
            "next_step_required": not final,
            "continuation_id": run.thread_id,
            "provider_calls": ctx.budget.used,
            "required_actions": actions,
            "findings": run.findings,
            "confidence": run.confidence,
            "files_used": run.embedded,
            "usage": ctx.usage.as_dict(ctx.budget.used),
        }
        if run.hypothesis:
            structured["hypothesis"] = run.hypothesis
        if final:
            structured["expert_analysis"] = expert
        if extra:
            structured.update(extra)
        if run.notes:
            structured["notes"] = run.notes
        text, structured = fit_result(partial(render_result, self.name), structured, int(ctx.settings.max_result_tokens))
        return ToolOutput(text, structured=structured)


_STOP_NOTES: Final = {
    "steps": "auto-steps ran as many steps as asked",
    "limit": "auto-steps stopped at the limit of {limit} steps per call (EXAI_MAX_AUTO_STEPS); continue with continuation_id",
    "budget": "auto-steps stopped: the call's budget of {budget} provider requests is spent (EXAI_MAX_PROVIDER_CALLS); continue with continuation_id",
    "confident": "auto-steps stopped: confidence reached very_high",
    "stalled": "auto-steps stopped: two steps in a row found nothing new",
}


def failed(output: ToolOutput, error: ProviderError) -> ToolOutput:
    """A provider failure as a tool error that still carries the thread, so the work can go on."""
    output.is_error = True
    output.text = f"{error}\n\nThe steps so far are saved; continue with the continuation_id below.\n\n{output.text}"
    if output.structured is not None:
        output.structured["error"] = str(error)
    return output


def render_result(tool: str, structured: dict[str, Any]) -> str:
    """A readable text rendering of a workflow result."""
    s = structured
    lines = [
        f"{tool}: {s['status']} (step {s['step_number']} of {s['total_steps']}, confidence {s['confidence']}, "
        f"{s['provider_calls']} provider call(s))",
        f"continuation_id: {s['continuation_id']}",
    ]
    if s.get("hypothesis"):
        lines.append(f"Hypothesis: {s['hypothesis']}")
    if s["findings"]:
        lines += ["", "Findings:", *(f"- {f}" for f in s["findings"])]
    for response in s.get("responses", []):
        shown = response.get("text") or response.get("error", "")
        lines += ["", f"[{response['model']} ({response['stance']}): {response['status']}]", shown]
    if "expert_analysis" in s and s["expert_analysis"] is not None:
        expert = s["expert_analysis"]
        lines += ["", "Expert analysis:", expert if isinstance(expert, str) else json.dumps(expert, indent=2)]
    if s["required_actions"]:
        lines += ["", "Before the next step:", *(f"- {a}" for a in s["required_actions"])]
    if s.get("notes"):
        lines += ["", "Notes:", *(f"- {n}" for n in s["notes"])]
    return "\n".join(lines)
