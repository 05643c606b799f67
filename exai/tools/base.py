"""What a tool is, and what it may use while it runs. A tool never touches a limiter or a socket."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from exai.errors import ExaiError
from exai.providers.base import CallBudget, Completion, ProviderError
from exai.store import Store


class ToolArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class ToolOutput:
    text: str
    is_error: bool = False
    structured: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None


class ToolArgumentError(ExaiError):
    """The arguments failed the tool's schema; the message names each bad field."""


@dataclass
class ToolContext:
    """The call as a tool sees it."""

    request_id: str
    settings: Any
    gateway: Any
    budget: CallBudget
    store: Store
    report: Callable[[str], Awaitable[None]]
    status: Callable[[], dict[str, Any]]
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    activity: dict[str, Any] = field(default_factory=dict)

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None,
        temperature: float | None = None,
    ) -> Completion:
        """One model completion within this call's budget and deadline.

        Always streams, so a provider that goes silent is caught after EXAI_STREAM_IDLE_SECS;
        `report` forwards progress only to a client that asked for it.
        """

        async def on_text(text: str, tokens: int) -> None:
            await self.report(f"{tokens} tokens: {_tail(text)}")

        with contextlib.suppress(ProviderError):  # for the monitor; an unknown model fails just below
            self.activity["model"] = self.gateway.resolve(model)[1]
        completion = await self.gateway.complete(
            model=model,
            messages=messages,
            budget=self.budget,
            temperature=temperature,
            on_text=on_text,
            request_id=self.request_id,
        )
        self.activity["model"] = completion.model
        self.usage["prompt_tokens"] += completion.usage.prompt_tokens
        self.usage["completion_tokens"] += completion.usage.completion_tokens
        return completion


def _tail(text: str, width: int = 60) -> str:
    # Only the end matters: a long answer is not re-split on every chunk.
    flat = " ".join(text[-4 * width :].split())
    return flat if len(flat) <= width else "…" + flat[-width:]


class Tool:
    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[ToolArgs]]

    def input_schema(self) -> dict[str, Any]:
        schema = self.Args.model_json_schema()
        schema.pop("title", None)
        return schema

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "inputSchema": self.input_schema()}

    def parse(self, arguments: dict[str, Any]) -> ToolArgs:
        try:
            return self.Args.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentError(describe_validation_error(self.name, exc)) from None

    async def run(self, args: Any, ctx: ToolContext) -> ToolOutput:
        raise NotImplementedError


def describe_validation_error(tool: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown field")
        else:
            problems.append(f"{where}: {err['msg']}")
    return f"Invalid arguments for {tool}: " + "; ".join(problems)
