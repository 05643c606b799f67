"""clink: hand a prompt to another AI command-line tool (EXAI_CLINK_CLIS) as a sub-agent.

The CLI gets, on its standard input, the role's instructions, the thread so far, the prompt
and the files' text; its standard output is the answer, recorded in the thread like chat's.
It runs in a process group of its own that ends with the call, whatever ends it (see
`exai.tools.processes`): cancelled, timed out or abandoned, neither the CLI nor anything it
started is left. With EXAI_CLINK_CLIS unset, clink is off: not listed and unknown to calls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, Literal

import trio
from loguru import logger
from pydantic import Field

from exai.store import Turn
from exai.tools.base import Tool, ToolArgs, ToolArgumentError, ToolContext, ToolOutput, open_thread
from exai.tools.context import fit_context, keep_under
from exai.tools.files import FileContent, read_files, trimmed_note
from exai.tools.processes import Finished, run_bounded

MAX_OUTPUT_BYTES: Final = 1024 * 1024  # of the CLI's answer; more is cut, and the result says so
INPUT_WINDOW_TOKENS: Final = 128_000  # what is written to the CLI: its model's window is not known here
STDERR_SHOWN: Final = 2_000  # characters of stderr's tail in an error
RESULT_NOTES_TOKENS: Final = 500  # of EXAI_MAX_RESULT_TOKENS, kept for exai's lines after the answer
# The daemon's own secrets are not the CLI's business; its own keys it finds in its own variables.
HIDDEN_VARIABLES: Final = ("KIMI_API_KEY", "GLM_API_KEY")

ROLES: Final = {
    "default": (
        "You are an AI command-line agent called as a sub-agent by another assistant. Answer the "
        "request below directly and concisely; look at the files and the repository yourself when "
        "that helps, cite paths and symbols exactly, and say what you could not check."
    ),
    "planner": (
        "You are a planning sub-agent called by another assistant. Turn the request below into a "
        "plan: numbered phases, each with its steps, dependencies and how to verify it is done, the "
        "risks with their mitigations, and the first concrete action. Keep it short."
    ),
    "codereviewer": (
        "You are a code-review sub-agent called by another assistant. Review what the request below "
        "names: real bugs, security, concurrency and performance problems, by severity (critical, "
        "high, medium, low), each with file:line, its impact and a concrete fix. No style nits."
    ),
}


class ClinkArgs(ToolArgs):
    prompt: str = Field(min_length=1, description="What to ask the CLI.")
    cli_name: str = Field(min_length=1, description="Which CLI: a name from EXAI_CLINK_CLIS.")
    role: Literal["default", "planner", "codereviewer"] = "default"
    files: list[str] = Field(default_factory=list, description="Absolute paths whose text the CLI gets.")
    continuation_id: str | None = Field(None, description="Thread id of an earlier result.")


def cli_environment() -> dict[str, str]:
    """The daemon's environment without exai's own settings and provider keys."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EXAI_") and k not in HIDDEN_VARIABLES}


def as_input(messages: list[dict[str, Any]]) -> str:
    """The request as one text for a CLI's standard input: instructions, thread, prompt."""
    system, *history, last = messages
    parts = [system["content"]]
    if history:
        parts.append("The conversation so far:")
        parts.extend(f"[{m['role']}]\n{m['content']}" for m in history)
        parts.append("The request:")
    parts.append(last["content"])
    return "\n\n".join(parts) + "\n"


def failure(name: str, finished: Finished) -> str:
    stderr = finished.stderr_tail.decode("utf-8", errors="replace").strip()[-STDERR_SHOWN:]
    how = f"was ended by signal {-finished.returncode}" if finished.returncode < 0 else f"exited with status {finished.returncode}"
    return f"clink: {name} {how}." + (f" Its stderr ends with:\n{stderr}" if stderr else " It wrote nothing to stderr.")


class Clink(Tool[ClinkArgs]):
    name = "clink"
    description = (
        "Hand a prompt (and files) to another AI command-line tool configured in EXAI_CLINK_CLIS (e.g. "
        "gemini, codex) as a sub-agent, in a role (default, planner, codereviewer); returns its answer "
        "and keeps it in the thread (continuation_id)."
    )
    Args = ClinkArgs

    async def run(self, args: ClinkArgs, ctx: ToolContext) -> ToolOutput:
        settings = ctx.settings
        clis: dict[str, tuple[str, ...]] = dict(settings.clink_clis)
        argv = clis.get(args.cli_name)
        if argv is None:
            raise ToolArgumentError(
                f"clink: no CLI named {args.cli_name!r}; EXAI_CLINK_CLIS configures: {', '.join(sorted(clis))}"
            )
        async with ctx.store.hold(args.continuation_id):
            thread = await open_thread(ctx, args.continuation_id)
            history: list[Turn] = thread.turns if thread is not None else []
            files: list[FileContent] = []
            if args.files:
                files = await read_files(args.files, settings.allowed_roots, int(settings.max_file_bytes))
            context = fit_context(
                system=ROLES[args.role], history=history, files=files, prompt=args.prompt, window_tokens=INPUT_WINDOW_TOKENS
            )
            ctx.show(model=f"clink:{args.cli_name}")
            await ctx.report(f"clink: {args.cli_name} is working")
            started = trio.current_time()
            try:
                finished = await run_bounded(
                    argv,
                    cwd=Path(settings.allowed_roots[0]),
                    env=cli_environment(),
                    stdin=as_input(context.messages).encode(),
                    max_stdout=MAX_OUTPUT_BYTES,
                )
            except OSError as exc:
                return ToolOutput(f"clink: cannot start {args.cli_name} ({argv[0]}): {exc.strerror or exc}", is_error=True)
            logger.bind(rid=ctx.request_id).info(
                "clink {} exited {} in {:.3f}s, {} bytes out, {} bytes of stderr kept",
                args.cli_name,
                finished.returncode,
                trio.current_time() - started,
                finished.stdout_size,
                len(finished.stderr_tail),
            )
            if not finished.complete:
                return ToolOutput(f"clink: {args.cli_name} wrote more than {finished.stdout_size} bytes and was stopped", is_error=True)
            if finished.returncode != 0:
                return ToolOutput(failure(args.cli_name, finished), is_error=True)
            answer = finished.stdout.decode("utf-8", errors="replace").strip()
            appended = await ctx.store.append(
                args.continuation_id,
                self.name,
                [
                    Turn("user", context.messages[-1]["content"], self.name, files=context.embedded, versions=context.versions),
                    Turn("assistant", answer, self.name, model=f"clink:{args.cli_name}"),
                ],
                files=context.embedded,
                model=f"clink:{args.cli_name}",
            )
        tokens = int(settings.max_result_tokens)
        shown, _ = keep_under(answer, max(tokens - RESULT_NOTES_TOKENS, tokens // 2))
        notes = [f"continuation_id: {appended.thread_id} (pass it to clink, chat or a workflow tool to continue this thread)"]
        if finished.stdout_size > len(finished.stdout):
            notes.append(f"{args.cli_name} wrote {finished.stdout_size} bytes; the first {len(finished.stdout)} are kept")
        if note := trimmed_note(files):
            notes.append(note)
        if context.omitted:
            notes.append("To fit the input: " + "; ".join(context.omitted) + ".")
        text = shown + "".join(f"\n\n[exai] {n}" for n in notes)
        meta = {"cli": args.cli_name, "continuation_id": appended.thread_id}
        return ToolOutput(text, meta=meta)
