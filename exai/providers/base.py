"""The provider interface: what the request lifecycle and the tools see of a model provider.

Nothing here knows about HTTP; `openai_compat` maps transport failures onto these errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from exai.errors import ExaiError

# Called with (answer text so far, tokens so far, thinking) while a reply streams in;
# `thinking`: the model is reasoning and has not begun its answer.
OnText = Callable[[str, int, bool], Awaitable[None]]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, served from the provider's cache


@dataclass(frozen=True, slots=True)
class Source:
    """A web page the provider's search returned."""

    title: str
    url: str


@dataclass
class Completion:
    text: str
    model: str
    provider: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    # Calls of the vendor's builtin search to echo back (Kimi's `$web_search`), raw as they came.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reasoning: str = ""  # the model's thinking: never part of the answer or the thread
    sources: list[Source] = field(default_factory=list)
    cost_usd: float | None = None  # None: the model has no price in the catalog


class ErrorKind(StrEnum):
    """Why a provider request failed, as the retry policy, the circuit and `auto` see it."""

    RATE_LIMITED = "rate_limited"  # the provider is pacing us: retried, no verdict on its health
    OVERLOADED = "overloaded"  # the provider is too busy now: retried, counts as a failure
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"  # connection errors, 5xx, a broken stream
    AUTH = "auth"  # the API key is refused: the provider is misconfigured until a restart
    QUOTA = "quota"  # balance, arrears or a usage cap: never retried
    PLAN = "plan"  # the plan expired or does not include the model: never retried
    CONTEXT_TOO_LONG = "context_too_long"
    CONTENT_FILTERED = "content_filtered"
    BAD_RESPONSE = "bad_response"
    BAD_REQUEST = "bad_request"  # the provider refused the request's parameters
    BUDGET = "budget"  # EXAI_MAX_PROVIDER_CALLS reached
    CIRCUIT_OPEN = "circuit_open"
    UNKNOWN_MODEL = "unknown_model"
    NOT_CONFIGURED = "not_configured"


class ProviderError(ExaiError):
    """A provider request failed; `str(error)` is a sentence a user can act on.

    `retryable`: another attempt may succeed. `fails_circuit`: the answer counts towards the
    provider's circuit (every retryable failure does; so do the vendors' non-retried account
    and request answers).
    """

    def __init__(
        self,
        provider: str,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool = False,
        fails_circuit: bool | None = None,
    ):
        super().__init__(message)
        self.provider = provider
        self.kind = kind
        self.retryable = retryable
        self.fails_circuit = retryable if fails_circuit is None else fails_circuit


class BudgetExhausted(ProviderError):
    def __init__(self, limit: int):
        super().__init__(
            "exai",
            ErrorKind.BUDGET,
            f"This call reached its budget of {limit} provider requests (EXAI_MAX_PROVIDER_CALLS); "
            "split the work into smaller calls or raise the limit.",
        )


class CallBudget:
    """Provider requests one tools/call may still make, retries and auto-steps included."""

    def __init__(self, max_calls: int):
        self.max_calls = max_calls
        self.used = 0

    def take(self) -> None:
        """Count one provider request; raises BudgetExhausted when none is left."""
        if self.used >= self.max_calls:
            raise BudgetExhausted(self.max_calls)
        self.used += 1

    @property
    def remaining(self) -> int:
        return self.max_calls - self.used
