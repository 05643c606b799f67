"""planner: build a plan step by step, with revisions and branches; never calls a model."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import Field

from exai.store import Turn
from exai.tools.base import Tool, ToolArgs, ToolArgumentError, ToolContext, ToolOutput, open_thread
from exai.tools.context import fit_result

# How a plan step is kept in the thread: a header other tools can read as text, and we parse back.
HEADER: Final = re.compile(r"^\[plan step (\d+)(?: revises (\d+))?(?: branch (\S+) from (\d+))?\] ", re.S)


class PlannerArgs(ToolArgs):
    step: str = Field(min_length=1, description="This step of the plan: what to do and why.")
    step_number: int = Field(ge=1, description="This step's number, from 1.")
    total_steps: int = Field(ge=1, description="Steps you expect in all (raised to step_number if smaller).")
    next_step_required: bool = Field(description="true while the plan needs more steps; false when it is complete.")
    continuation_id: str | None = Field(None, description="Plan thread id from an earlier step's result; omit on step 1.")
    is_step_revision: bool = Field(False, description="true: this step replaces revises_step_number.")
    revises_step_number: int | None = Field(None, ge=1, description="The step this one revises.")
    branch_from_step: int | None = Field(None, ge=1, description="Start a branch (an alternative) from this step.")
    branch_id: str | None = Field(None, pattern=r"^\S{1,40}$", description="Name of the branch this step belongs to.")


@dataclass
class Plan:
    steps: dict[int, str] = field(default_factory=dict)
    branches: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {from, steps}
    revisions: int = 0

    def add(self, number: int, text: str, revises: int | None, branch: str | None, branch_from: int | None) -> None:
        if branch is not None:
            lane = self.branches.setdefault(branch, {"from": branch_from, "steps": {}})
            lane["steps"][number] = text
        elif revises is not None:
            self.steps[revises] = text
            self.revisions += 1
        else:
            self.steps[number] = text

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": [{"step_number": n, "step": t} for n, t in sorted(self.steps.items())],
            "branches": {
                name: {"from_step": lane["from"], "steps": [{"step_number": n, "step": t} for n, t in sorted(lane["steps"].items())]}
                for name, lane in self.branches.items()
            },
        }


def plan_of(turns: list[Turn]) -> Plan:
    plan = Plan()
    for turn in turns:
        match = HEADER.match(turn.content) if turn.tool == "planner" else None
        if match:
            number, revises, branch, branch_from = match.groups()
            plan.add(int(number), turn.content[match.end():], int(revises) if revises else None,
                     branch, int(branch_from) if branch_from else None)
    return plan


class Planner(Tool[PlannerArgs]):
    name = "planner"
    description = (
        "Build a plan step by step (no model is called: you think, exai keeps the plan). Each call adds "
        "one step; revise an earlier step with is_step_revision + revises_step_number, explore an "
        "alternative with branch_from_step + branch_id. The result holds the whole plan so far."
    )
    Args = PlannerArgs

    def required_actions(self, step_number: int) -> list[str]:
        if step_number <= 1:
            return ["Describe the goal, the constraints and what done looks like in the next steps."]
        return [
            "Add the next concrete step; revise or branch where an earlier step no longer holds.",
            "When every step is concrete and ordered, send the last one with next_step_required: false.",
        ]

    async def run(self, args: PlannerArgs, ctx: ToolContext) -> ToolOutput:
        total = max(args.total_steps, args.step_number)
        async with ctx.store.hold(args.continuation_id):
            thread = await open_thread(ctx, args.continuation_id)
            plan = plan_of(list(thread.turns) if thread else [])
            revises, branch, branch_from = self.check(args, plan)
            header = f"[plan step {args.step_number}"
            if revises is not None:
                header += f" revises {revises}"
            if branch is not None:
                header += f" branch {branch} from {branch_from}"
            turn = Turn(role="user", content=f"{header}] {args.step}", tool=self.name, created=time.time(), step_number=args.step_number)
            appended = await ctx.store.append(args.continuation_id, self.name, [turn])
            plan.add(args.step_number, args.step, revises, branch, branch_from)
        ctx.show(step=f"{args.step_number}/{total}")
        final = not args.next_step_required
        structured: dict[str, Any] = {
            "status": "complete" if final else "pause_for_planning",
            "step_number": args.step_number,
            "total_steps": total,
            "next_step_required": not final,
            "continuation_id": appended.thread_id,
            "provider_calls": 0,
            "required_actions": [] if final else self.required_actions(args.step_number),
            "plan": plan.as_dict(),
            # The fields every workflow result has; a plan has no findings, files or model use.
            "findings": [],
            "files_used": [],
            "usage": ctx.usage.as_dict(ctx.budget.used),
        }
        if final:
            structured["expert_analysis"] = None
        if appended.dropped_now:
            structured["notes"] = [f"{appended.dropped_now} oldest turn(s) dropped from the thread (EXAI_MAX_CONVERSATION_TURNS)"]
        text, structured = fit_result(render_plan, structured, int(ctx.settings.max_result_tokens))
        return ToolOutput(text, structured=structured)

    def check(self, args: PlannerArgs, plan: Plan) -> tuple[int | None, str | None, int | None]:
        """(revised step, branch, branch start) after checking them against the plan so far."""
        revises = None
        if args.is_step_revision:
            revises = args.revises_step_number
            if revises is None or revises not in plan.steps:
                known = ", ".join(str(n) for n in sorted(plan.steps)) or "none yet"
                raise ToolArgumentError(
                    f"Invalid arguments for planner: revises_step_number must name an existing step (known: {known})"
                )
        elif args.revises_step_number is not None:
            raise ToolArgumentError("Invalid arguments for planner: revises_step_number needs is_step_revision: true")
        branch, branch_from = args.branch_id, args.branch_from_step
        if branch_from is not None and branch is None:
            raise ToolArgumentError("Invalid arguments for planner: branch_from_step needs a branch_id")
        if branch is not None:
            if branch in plan.branches:
                branch_from = plan.branches[branch]["from"]
            elif branch_from is None or branch_from not in plan.steps:
                raise ToolArgumentError(
                    f"Invalid arguments for planner: a new branch {branch!r} needs branch_from_step naming an existing step"
                )
            if revises is not None:
                raise ToolArgumentError("Invalid arguments for planner: a step is either a revision or a branch step, not both")
        return revises, branch, branch_from


def render_plan(s: dict[str, Any]) -> str:
    lines = [f"planner: {s['status']} (step {s['step_number']} of {s['total_steps']})", f"continuation_id: {s['continuation_id']}", "", "Plan:"]
    lines += [f"{item['step_number']}. {item['step']}" for item in s["plan"]["steps"]]
    for name, lane in s["plan"]["branches"].items():
        lines += ["", f"Branch {name} (from step {lane['from_step']}):"]
        lines += [f"{item['step_number']}. {item['step']}" for item in lane["steps"]]
    if s["required_actions"]:
        lines += ["", "Before the next step:", *(f"- {a}" for a in s["required_actions"])]
    lines += [f"- {n}" for n in s.get("notes", [])]
    return "\n".join(lines)
