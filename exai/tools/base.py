"""What a tool is, and what it may use while it runs. A tool never touches a limiter or a socket."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exai.config import Settings
from exai.errors import ExaiError
from exai.providers.base import CallBudget, Completion, ProviderError
from exai.providers.gateway import ModelGateway
from exai.store import Store, Thread, ThreadNotFound


class ToolArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


Thinking = Literal["auto", "enabled", "disabled"]


# The arguments of every tool that calls a model (chat, the step engine's tools).
# No docstring: pydantic would put it into every tool's schema.
class ModelArgs(ToolArgs):
    # Said in few words: it is in the schema of every tool that calls a model (tools/list <= 32,000 bytes).
    thinking: Thinking = Field("auto", description="The model's reasoning: auto (its default), enabled or disabled.")


@dataclass
class CallUsage:
    """What one tools/call used of the models, over all its completions."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0  # completions whose model has no price: the total cost is unknown

    def add(self, completion: Completion) -> None:
        self.prompt_tokens += completion.usage.prompt_tokens
        self.completion_tokens += completion.usage.completion_tokens
        self.cached_tokens += completion.usage.cached_tokens
        if completion.cost_usd is None:
            self.unpriced += 1
        else:
            self.cost_usd += completion.cost_usd

    def as_dict(self, provider_calls: int) -> dict[str, Any]:
        """`structuredContent.usage`: cost_usd is null when a model used has no price."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "provider_calls": provider_calls,
            "cost_usd": None if self.unpriced else round(self.cost_usd, 6),
        }


@dataclass
class ToolOutput:
    text: str
    is_error: bool = False
    structured: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Activity:
    """What a call is doing now, as /api/status shows it. Never changed in place: a change is a
    new value, so a status snapshot always holds one whole state of the call."""

    state: Literal["queued", "running"] = "queued"
    model: str | None = None
    step: str | None = None  # a workflow's "step/total"
    message: str | None = None  # the last progress message


class Shown(Protocol):
    """What holds a call's current Activity (the call in flight)."""

    activity: Activity


class ToolArgumentError(ExaiError):
    """The arguments failed the tool's schema; the message names each bad field."""


@dataclass
class ToolContext:
    """The call as a tool sees it."""

    request_id: str
    settings: Settings
    gateway: ModelGateway
    budget: CallBudget
    store: Store
    report: Callable[[str], Awaitable[None]]
    status: Callable[[], dict[str, Any]]
    call: Shown
    usage: CallUsage = field(default_factory=CallUsage)
    thinking: Thinking = "auto"  # the call's `thinking` argument, for every completion it asks for
    # The thread this call saved its work to: an answer to a cancelled call names it.
    continuation_id: str | None = None

    def show(self, *, model: str | None = None, step: str | None = None) -> None:
        """Tell the monitor which model or step the call is at (None: unchanged)."""
        now = self.call.activity
        self.call.activity = replace(now, model=model or now.model, step=step or now.step)

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None,
        temperature: float | None = None,
        web_search: bool = False,
    ) -> Completion:
        """One model completion within this call's budget and deadline, with the call's
        `thinking` mode; counted in `usage`.

        Always streams, so a provider that goes silent is caught after EXAI_STREAM_IDLE_SECS;
        `report` forwards progress only to a client that asked for it.
        """

        async def on_text(text: str, tokens: int, thinking: bool) -> None:
            if thinking:
                await self.report(f"{tokens} tokens: the model is thinking…")
            else:
                await self.report(f"{tokens} tokens: {_tail(text)}")

        with contextlib.suppress(ProviderError):  # for the monitor; an unknown model fails just below
            self.show(model=self.gateway.resolve(model)[1])
        completion: Completion = await self.gateway.complete(
            model=model,
            messages=messages,
            budget=self.budget,
            temperature=temperature,
            on_text=on_text,
            request_id=self.request_id,
            thinking=self.thinking,
            web_search=web_search,
        )
        self.show(model=completion.model)
        self.usage.add(completion)
        return completion


def turn_usage(completion: Completion) -> dict[str, Any]:
    """What a thread's assistant turn records of the completion behind it (`exai thread ID`)."""
    usage = completion.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost_usd": None if completion.cost_usd is None else round(completion.cost_usd, 6),
    }


def _tail(text: str, width: int = 60) -> str:
    # Only the end matters: a long answer is not re-split on every chunk.
    flat = " ".join(text[-4 * width :].split())
    return flat if len(flat) <= width else "…" + flat[-width:]


A = TypeVar("A", bound=ToolArgs)


@dataclass(frozen=True)
class BoundCall:
    """A call's checked arguments, and the run of the tool over them."""

    args: ToolArgs
    run: Callable[[ToolContext], Awaitable[ToolOutput]]


class ServedTool(Protocol):
    """A tool as the daemon serves it, whatever its argument model."""

    @property
    def name(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def bind(self, arguments: dict[str, Any]) -> BoundCall: ...


class Tool(Generic[A]):
    """A tool over its argument model `A`: `run` gets the arguments parsed and checked."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: type[A]

    def input_schema(self) -> dict[str, Any]:
        return compact_schema(self.Args.model_json_schema())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "inputSchema": self.input_schema()}

    def parse(self, arguments: dict[str, Any]) -> A:
        try:
            return self.Args.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentError(describe_validation_error(self.name, exc)) from None

    def bind(self, arguments: dict[str, Any]) -> BoundCall:
        """The call to run, its arguments checked now (ToolArgumentError names each bad field)."""
        args = self.parse(arguments)
        return BoundCall(args, partial(self.run, args))

    async def run(self, args: A, ctx: ToolContext) -> ToolOutput:
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


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without titles, null alternatives, empty defaults, $defs (each used once,
    inlined where it is used) and the nested objects' `additionalProperties: false` (the
    arguments are still refused with unknown fields anywhere): under half the bytes, which
    keeps tools/list under 32,000 bytes (CONTRACT section 4)."""
    definitions = schema.get("$defs", {})
    dropped = ("title", "$defs", "additionalProperties")

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/") and len(node) == 1:
            node = definitions[ref.removeprefix("#/$defs/")]
        node = {k: v for k, v in node.items() if k not in dropped}
        options = node.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options and len(options) == 2:
            node.pop("anyOf")
            node.update(next(o for o in options if o != {"type": "null"}))
        if node.get("default", 0) in (None, []):
            node.pop("default")
        return {k: walk(v) for k, v in node.items()}

    result: dict[str, Any] = walk(schema)
    if "additionalProperties" in schema:
        result["additionalProperties"] = schema["additionalProperties"]
    return result


async def open_thread(ctx: ToolContext, continuation_id: str | None) -> Thread | None:
    """The thread a call continues (None for a new one); an unknown or expired id is the
    caller's error, naming it."""
    if continuation_id is None:
        return None
    try:
        return await ctx.store.get(continuation_id)
    except ThreadNotFound as exc:
        raise ToolArgumentError(str(exc)) from None
