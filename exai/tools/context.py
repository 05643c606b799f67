"""The context budget: what of a thread, its files and a new prompt fits one model request.

Priority: the prompt, then the files, then the history from the newest turn back. A file
already embedded in a kept history turn, with the same text, is referenced, not embedded
again (a file changed since is embedded again; the expert embeds everything afresh).
Whatever is left out or cut is named, for the result to say so. `fit_result` keeps a
tool's result (text and structuredContent together) under EXAI_MAX_RESULT_TOKENS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from exai.store import Turn
from exai.tools.files import FileContent, render_files

CHARS_PER_TOKEN: Final = 4
ANSWER_SHARE: Final = 0.25  # of the model's context window, kept for its answer
DEFAULT_WINDOW: Final = 32_768  # tokens, for a model the catalog does not know
MIN_FILE_CHARS: Final = 2_000  # below this, a trimmed file is not worth sending
FILES_HEADING: Final = "\n\nFiles:\n"
REFERENCED_HEADING: Final = "\n\nFiles shown earlier in this conversation: "
TRIM_NOTE: Final = "\n[result trimmed to about {tokens} tokens (EXAI_MAX_RESULT_TOKENS)]"
MIN_CUT_CHARS: Final = 200  # result values are not cut shorter than this
NOTES_SLACK: Final = 400  # characters kept for the notes fit_result adds


@dataclass
class Context:
    messages: list[dict[str, Any]]
    embedded: list[str] = field(default_factory=list)  # resolved paths of files whose text this request carries
    referenced: list[str] = field(default_factory=list)  # files shown in a kept history turn
    omitted: list[str] = field(default_factory=list)  # sentences naming what was left out or cut
    versions: dict[str, str] = field(default_factory=dict)  # embedded file -> digest of its text (version_of)
    attachments: str = ""  # the files part of the last message (after the prompt)


def fit_context(
    *,
    system: str,
    history: Sequence[Turn],
    files: Sequence[FileContent],
    prompt: str,
    window_tokens: int,
    embed_all: bool = False,
) -> Context:
    """The messages for one request, within `window_tokens` minus the answer's share."""
    room = int(window_tokens * (1 - ANSWER_SHARE)) * CHARS_PER_TOKEN - len(system) - len(REFERENCED_HEADING)
    omitted: list[str] = []
    if len(prompt) > room:
        omitted.append(f"the prompt was cut from {len(prompt)} to {max(room, 0)} characters")
        prompt = prompt[: max(room, 0)]
    room -= len(prompt)

    current = {file.resolved: version_of(file) for file in files}
    shown_in: dict[str, list[int]] = {}  # file -> history turns (by index) that embed its current text
    if not embed_all:
        for index, turn in enumerate(history):
            for path in turn.files:
                if path in current and turn.versions.get(path) == current[path]:
                    shown_in.setdefault(path, []).append(index)

    embedded: list[FileContent] = []
    later: list[FileContent] = []  # already shown in history: embedded only if that turn is dropped

    def embed(file: FileContent) -> None:
        nonlocal room
        # The file's header (with a trimming note at its longest) and its share of the heading.
        overhead = len(render_files([dataclasses.replace(file, text="", trimmed=True)])) + len(FILES_HEADING) + 2
        if len(file.text) + overhead <= room:
            embedded.append(file)
            room -= len(file.text) + overhead
        elif room - overhead >= MIN_FILE_CHARS:
            text = file.text[: room - overhead]
            embedded.append(dataclasses.replace(file, text=text, trimmed=True, shown=len(text.encode())))
            omitted.append(f"{file.path} was cut to its first {len(text)} characters to fit the context window")
            room = 0
        else:
            omitted.append(f"{file.path} was left out: no room in the context window")

    for file in files:
        if file.resolved in shown_in:
            later.append(file)
        else:
            embed(file)

    kept: list[Turn] = []
    kept_index: set[int] = set()
    for index in range(len(history) - 1, -1, -1):
        turn = history[index]
        if len(turn.content) > room:
            break
        room -= len(turn.content)
        kept.append(turn)
        kept_index.add(index)
    dropped = len(history) - len(kept)
    if dropped:
        omitted.append(f"the {dropped} oldest thread turn(s) were left out to fit the context window")

    referenced = []
    for file in later:
        if kept_index.intersection(shown_in[file.resolved]):
            referenced.append(file.path)
            room -= len(file.path) + 2
        else:
            embed(file)

    attachments = ""
    if embedded:
        attachments += FILES_HEADING + render_files(embedded)
    if referenced:
        attachments += REFERENCED_HEADING + ", ".join(referenced)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    messages.extend({"role": turn.role, "content": turn.content} for turn in reversed(kept))
    messages.append({"role": "user", "content": prompt + attachments})
    versions = {f.resolved: version_of(f) for f in embedded}
    return Context(messages, list(versions), referenced, omitted, versions, attachments)


def version_of(file: FileContent) -> str:
    """A short digest of the file's text: a turn that embedded other text did not show this file."""
    return hashlib.sha256(file.text.encode()).hexdigest()[:16]


def window_of(ctx: Any, model: str | None) -> int:
    """The context window of the model a request for `model` goes to (ProviderError if none)."""
    _, name = ctx.gateway.resolve(model)
    info = ctx.gateway.models.get(name)
    return int(info.context_window) if info is not None else DEFAULT_WINDOW


def keep_under(text: str, max_tokens: int) -> tuple[str, bool]:
    """`text` cut to about `max_tokens` tokens with a note saying so; and whether it was cut."""
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text, False
    note = TRIM_NOTE.format(tokens=max_tokens)
    return text[: max(limit - len(note), 0)] + note, True


def fit_result(render: Callable[[dict[str, Any]], str], structured: dict[str, Any], max_tokens: int) -> tuple[str, dict[str, Any]]:
    """The text and structuredContent of a result, together about `max_tokens` tokens at most.

    MCP clients count both. While the structured part is over half of it: the oldest findings
    are left out (the thread keeps them all), then long values are cut; the text, rendered
    from what is left, is cut last. The notes say what was done.
    """
    limit = max_tokens * CHARS_PER_TOKEN
    text = render(structured)
    if len(text) + size_of(structured) <= limit:
        return text, structured
    result, notes = dict(structured), list(structured.get("notes", []))
    half = limit // 2 - NOTES_SLACK
    findings = list(result.get("findings", []))
    excess, left_out = size_of(result) - half, 0
    while excess > 0 and len(findings) - left_out > 1:
        excess -= len(json.dumps(findings[left_out])) + 2
        left_out += 1
    if left_out:
        result["findings"] = findings[left_out:]
        notes.append(f"the {left_out} oldest finding(s) were left out of this result (EXAI_MAX_RESULT_TOKENS); the thread keeps them all")
    cap = half
    while size_of(result) > half and cap > MIN_CUT_CHARS:
        cap = max(cap // 2, MIN_CUT_CHARS)
        result = cut_strings(result, cap)
    if cap < half:
        notes.append(f"values longer than {cap} characters were cut (EXAI_MAX_RESULT_TOKENS)")
    result["notes"] = notes
    text, trimmed = keep_under(render(result), max(limit - size_of(result) - NOTES_SLACK, limit // 4) // CHARS_PER_TOKEN)
    if trimmed:
        notes.append("the result text was trimmed (EXAI_MAX_RESULT_TOKENS)")
    return text, result


def size_of(value: Any) -> int:
    return len(json.dumps(value))


def cut_strings(value: Any, cap: int) -> Any:
    """`value` with every string longer than `cap` characters cut to it."""
    if isinstance(value, str):
        return value if len(value) <= cap else value[:cap] + "…"
    if isinstance(value, list):
        return [cut_strings(item, cap) for item in value]
    if isinstance(value, dict):
        return {key: cut_strings(item, cap) for key, item in value.items()}
    return value
