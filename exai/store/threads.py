"""What a conversation thread is, whatever store keeps it: `Turn`, `Thread`, `Appended`,
the thread id's two spellings and the errors every backend raises."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from exai.errors import ExaiError

# A thread id is a UUID, hyphenated (new threads) or 32 hex digits (threads of the first schema).
_THREAD_ID = re.compile(
    r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I
)
_SHOWN_ID_CHARS: Final = 80


class ThreadNotFound(ExaiError):
    """No live thread has this id: never created, expired, or not a thread id at all."""

    def __init__(self, thread_id: str):
        shown = (
            thread_id if len(thread_id) <= _SHOWN_ID_CHARS else thread_id[:_SHOWN_ID_CHARS] + "…"
        )
        super().__init__(f"continuation_id '{shown}' is unknown or expired; start a new thread")
        self.thread_id = thread_id


class StoreUnavailable(ExaiError):
    """The store cannot be opened or read; `str()` is one line naming where it is and why."""


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    tool: str
    created: float = field(default_factory=time.time)
    step_number: int | None = None
    model: str | None = None
    files: list[str] = field(default_factory=list)  # files embedded in this turn
    versions: dict[str, str] = field(default_factory=dict)  # file -> digest of the text embedded
    # An assistant turn's model use: prompt/completion/cached tokens and cost_usd (None: no price).
    usage: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], *, tool: str, created: float) -> Turn:
        """A stored turn; turns of the first schema have only role and content."""
        return cls(
            role=str(data.get("role", "user")),
            content=str(data.get("content", "")),
            tool=str(data.get("tool") or tool),
            created=float(data.get("created") or created),
            step_number=data.get("step_number"),
            model=data.get("model"),
            files=list(data.get("files") or []),
            versions=dict(data.get("versions") or {}),
            usage=data.get("usage") if isinstance(data.get("usage"), dict) else None,
        )


@dataclass
class Thread:
    id: str
    tool: str  # the tool that started it
    created: float
    updated: float  # last use
    expires: float
    turns: list[Turn]
    findings: list[str]  # consolidated findings, in order
    files: list[str]  # every file embedded in the thread so far (resolved paths)
    model: str | None  # last model used
    dropped: int  # turns dropped by the turn cap so far

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tool": self.tool,
            "turns": len(self.turns),
            "created": self.created,
            "updated": self.updated,
            "expires": self.expires,
            "model": self.model,
            "dropped": self.dropped,
        }


@dataclass
class Appended:
    thread_id: str
    dropped_now: int  # turns dropped by this append (cap EXAI_MAX_CONVERSATION_TURNS)


def lookup_ids(thread_id: str) -> tuple[str, str] | None:
    """Both stored spellings of a thread id (hyphenated, hex), or None if it is no thread id."""
    if not isinstance(thread_id, str) or not _THREAD_ID.fullmatch(thread_id):
        return None
    value = uuid.UUID(thread_id)
    return str(value), value.hex
