"""chat: talk to a model, optionally continuing a thread and with files as context."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from exai.providers.base import as_messages
from exai.store import ThreadNotFound, Turn
from exai.tools.base import Tool, ToolArgs, ToolArgumentError, ToolContext, ToolOutput
from exai.tools.files import FileContent, read_files, render_files, trimmed_note

SYSTEM = (
    "You are a senior engineer helping a coding assistant. Answer precisely and concisely; "
    "say when you are unsure."
)


class ChatArgs(ToolArgs):
    prompt: str = Field(min_length=1, description="What to ask or discuss.")
    model: str | None = Field(None, description="Model name, or 'auto' (default) to let exai choose.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature, 0 to 2.")
    continuation_id: str | None = Field(
        None, description="Continue an earlier conversation: the continuation_id a previous call returned."
    )
    files: list[str] = Field(
        default_factory=list, description="Absolute paths of files to include as context."
    )


class Chat(Tool):
    name = "chat"
    description = (
        "Ask a model (GLM or Kimi) a question or think through a problem together. "
        "Pass files as absolute paths for context, and continuation_id to continue a thread."
    )
    Args = ChatArgs

    async def run(self, args: Any, ctx: ToolContext) -> ToolOutput:
        async with ctx.store.hold(args.continuation_id):
            history: list[dict[str, Any]] = []
            if args.continuation_id:
                try:
                    thread = await ctx.store.get(args.continuation_id)
                except ThreadNotFound as exc:
                    raise ToolArgumentError(str(exc)) from None
                history = [{"role": turn.role, "content": turn.content} for turn in thread.turns]
            prompt = args.prompt
            files: list[FileContent] = []
            if args.files:
                files = await read_files(args.files, ctx.settings.allowed_roots, ctx.settings.max_file_bytes)
                prompt = f"{prompt}\n\nFiles:\n{render_files(files)}"
            embedded = [f.resolved for f in files]
            completion = await ctx.complete(
                as_messages(SYSTEM, history, prompt), model=args.model, temperature=args.temperature
            )
            appended = await ctx.store.append(
                args.continuation_id,
                self.name,
                [
                    Turn("user", prompt, self.name, files=embedded),
                    Turn("assistant", completion.text, self.name, model=completion.model),
                ],
                files=embedded,
                model=completion.model,
            )
        # The model sees only the text: the id it needs to go on is there, not just in _meta.
        text = f"{completion.text}\n\n[exai] continuation_id: {appended.thread_id} (pass it to chat or a workflow tool to continue this thread)"
        meta: dict[str, Any] = {
            "model": completion.model,
            "provider": completion.provider,
            "continuation_id": appended.thread_id,
        }
        if note := trimmed_note(files):
            meta["files_trimmed"] = [
                {"path": f.path, "size": f.size, "sent_bytes": f.shown} for f in files if f.trimmed
            ]
            text = f"{text}\n\n[exai] {note}"
        if appended.dropped_now:
            meta["dropped_turns"] = appended.dropped_now
            text += (
                f"\n\n(This thread keeps its newest {ctx.store.max_turns} turns "
                f"(EXAI_MAX_CONVERSATION_TURNS): {appended.dropped_now} older turn(s) were dropped.)"
            )
        return ToolOutput(text, meta=meta)
