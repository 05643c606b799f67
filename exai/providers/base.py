"""The provider interface: what the request lifecycle and the tools see of a model provider.

Nothing here knows about HTTP; `openai_compat` maps transport failures onto these errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# Called with (text so far, completion tokens so far) while a reply streams in.
OnText = Callable[[str, int], Awaitable[None]]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Completion:
    text: str
    model: str
    provider: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None


class ProviderError(Exception):
    """A provider request failed; `str(error)` is a sentence a user can act on.

    `kind` is one of: rate_limited, timeout, auth, context_too_long, content_filtered,
    unavailable, bad_response, budget, circuit_open, unknown_model, not_configured,
    bad_request (the provider refused the request's parameters; retrying will not help).
    """

    def __init__(self, provider: str, kind: str, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.provider = provider
        self.kind = kind
        self.retryable = retryable


class BudgetExhausted(ProviderError):
    def __init__(self, limit: int):
        super().__init__(
            "exai",
            "budget",
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


def as_messages(system: str | None, history: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    """Build an OpenAI-style message list."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(history)
    messages.append({"role": "user", "content": prompt})
    return messages
