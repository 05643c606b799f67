"""chat: talk to a model, optionally continuing a thread and with files as context."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from exai.store import Turn
from exai.tools.base import (
    ModelArgs,
    Tool,
    ToolContext,
    ToolOutput,
    open_thread,
    turn_usage,
)
from exai.tools.context import fit_context, keep_under, window_of
from exai.tools.files import FileContent, read_files, trimmed_note

SYSTEM = (
    "You are a senior engineer helping a coding assistant. Answer precisely and concisely; "
    "say when you are unsure."
)
RESULT_NOTES_TOKENS = 500  # of EXAI_MAX_RESULT_TOKENS, kept for exai's lines after the answer


class ChatArgs(ModelArgs):
    prompt: str = Field(min_length=1, description="What to ask or discuss.")
    model: str | None = Field(None, description="Model name, or 'auto' (default) to let exai choose.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature, 0 to 2.")
    continuation_id: str | None = Field(
        None, description="Continue an earlier conversation: the continuation_id a previous call returned."
    )
    files: list[str] = Field(
        default_factory=list, description="Absolute paths of files to include as context."
    )
    web_search: bool = Field(
        False,
        description="Let the model search the web (the provider's own search); the sources it "
        "used are listed in structuredContent.sources.",
    )


class Chat(Tool[ChatArgs]):
    name = "chat"
    description = (
        "Ask a model (GLM or Kimi) a question or think through a problem together. "
        "Pass files as absolute paths for context, and continuation_id to continue a thread."
    )
    Args = ChatArgs

    async def run(self, args: ChatArgs, ctx: ToolContext) -> ToolOutput:
        async with ctx.store.hold(args.continuation_id):
            thread = await open_thread(ctx, args.continuation_id)
            history: list[Turn] = thread.turns if thread is not None else []
            files: list[FileContent] = []
            if args.files:
                files = await read_files(args.files, ctx.settings.allowed_roots, ctx.settings.max_file_bytes)
            # The thread's history and the files, fitted to the model's window; a file the
            # thread already shows (unchanged) is named, not sent again.
            context = fit_context(
                system=SYSTEM, history=history, files=files, prompt=args.prompt, window_tokens=window_of(ctx, args.model)
            )
            completion = await ctx.complete(
                context.messages, model=args.model, temperature=args.temperature, web_search=args.web_search
            )
            appended = await ctx.store.append(
                args.continuation_id,
                self.name,
                [
                    Turn("user", context.messages[-1]["content"], self.name, files=context.embedded, versions=context.versions),
                    Turn("assistant", completion.text, self.name, model=completion.model, usage=turn_usage(completion)),
                ],
                files=context.embedded,
                model=completion.model,
            )
        # The model sees only the text: the id it needs to go on is there, not just in _meta.
        tokens = int(ctx.settings.max_result_tokens)
        answer, _ = keep_under(completion.text, max(tokens - RESULT_NOTES_TOKENS, tokens // 2))
        text = f"{answer}\n\n[exai] continuation_id: {appended.thread_id} (pass it to chat or a workflow tool to continue this thread)"
        meta: dict[str, Any] = {
            "model": completion.model,
            "provider": completion.provider,
            "continuation_id": appended.thread_id,
        }
        # structuredContent: who answered, where the thread goes on, the sources; the call's
        # usage is added for every tool alike.
        structured: dict[str, Any] = dict(meta)
        if args.web_search:
            structured["sources"] = [{"title": s.title, "url": s.url} for s in completion.sources]
            if completion.sources:
                text += "\n\n[exai] Sources: " + "; ".join(f"{s.title} <{s.url}>" for s in completion.sources)
        if note := trimmed_note(files):
            meta["files_trimmed"] = [
                {"path": f.path, "size": f.size, "sent_bytes": f.shown} for f in files if f.trimmed
            ]
            text = f"{text}\n\n[exai] {note}"
        if context.omitted:
            meta["omitted"] = context.omitted
            text += "\n\n[exai] To fit the model's context window: " + "; ".join(context.omitted) + "."
        if appended.dropped_now:
            meta["dropped_turns"] = appended.dropped_now
            text += (
                f"\n\n(This thread keeps its newest {ctx.store.max_turns} turns "
                f"(EXAI_MAX_CONVERSATION_TURNS): {appended.dropped_now} older turn(s) were dropped.)"
            )
        return ToolOutput(text, structured=structured, meta=meta)
