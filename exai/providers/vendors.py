"""What each vendor's answers mean: error bodies to retry or not and to the user's message,
rate headers, and the request fields that differ (thinking, web search). Plain data, no I/O.

GLM (Z.ai) puts a business code in `error.code` (https://docs.z.ai/api-reference/api-code);
Kimi (Moonshot) an error type in `error.type` (https://platform.moonshot.ai/docs/api/chat,
"Error codes"). A known code or type decides; otherwise the HTTP status does.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Final

from exai.providers.base import ErrorKind, Source
from exai.providers.retry import RETRY_AFTER_CAP_S, is_retryable_status


@dataclass(frozen=True, slots=True)
class Verdict:
    """What exai does with one kind of error answer, and what it tells the user.

    `cause` and `action` are sentences with `{label}` (the provider's name), `{model}` and the
    variables `{key}` (API key), `{rpm}`, `{url}`, `{allowed}`; `circuit`: the answer counts towards
    the provider's circuit (every retried one does, and so do the vendor rows that are not).
    """

    kind: ErrorKind
    retry: bool
    cause: str
    action: str
    circuit: bool = True


_RETRY_LATER: Final = "exai retried within the call's deadline; try again in a little while"
_OTHER: Final = "or use a model of the other provider"

# GLM business codes (error.code), https://docs.z.ai/api-reference/api-code.
GLM_CODES: Final[dict[str, Verdict]] = {
    **{
        code: Verdict(ErrorKind.AUTH, False, "{label} refused the request: the API key was refused", "Fix {key} and restart exai")
        for code in ("1000", "1001", "1002", "1003", "1004")
    },
    "1113": Verdict(
        ErrorKind.QUOTA, False, "{label} refused the request: the account is in arrears (no balance left)", "Top up the Z.ai account, " + _OTHER
    ),
    "1261": Verdict(
        ErrorKind.CONTEXT_TOO_LONG,
        False,
        "{label} refused the request: the prompt is longer than the model accepts",
        "Send fewer or smaller files, or start a new thread without continuation_id",
    ),
    "1301": Verdict(
        ErrorKind.CONTENT_FILTERED,
        False,
        "{label} refused the request: its safety filter flagged the input or the answer as unsafe or sensitive",
        "Rephrase the request or leave out the flagged material",
    ),
    "1302": Verdict(
        ErrorKind.RATE_LIMITED,
        True,
        "{label} refused the request: too many requests run at once on this account (concurrency limit)",
        f"Lower EXAI_GLM_MAX_INFLIGHT to your plan's concurrency; {_RETRY_LATER}",
    ),
    "1303": Verdict(
        ErrorKind.RATE_LIMITED,
        True,
        "{label} refused the request: requests come too often for this account (frequency limit)",
        f"Set {{rpm}} below your plan's limit; {_RETRY_LATER}",
    ),
    "1304": Verdict(
        ErrorKind.QUOTA,
        False,
        "{label} refused the request: the account reached its daily call limit",
        "Wait for the daily reset, raise the limit with Z.ai, " + _OTHER,
    ),
    "1305": Verdict(
        ErrorKind.RATE_LIMITED, True, "{label} refused the request: the API has too much traffic right now", f"{_RETRY_LATER}, " + _OTHER
    ),
    "1308": Verdict(
        ErrorKind.QUOTA,
        False,
        "{label} refused the request: the plan's usage cap for this period is reached",
        "Wait for the reset, upgrade the plan, " + _OTHER,
    ),
    "1309": Verdict(
        ErrorKind.PLAN, False, "{label} refused the request: the subscription plan (GLM Coding Plan) has expired", "Renew the plan, " + _OTHER
    ),
    "1310": Verdict(
        ErrorKind.QUOTA,
        False,
        "{label} refused the request: the plan's weekly or monthly usage cap is reached",
        "Wait for the reset, upgrade the plan, " + _OTHER,
    ),
    "1311": Verdict(
        ErrorKind.PLAN,
        False,
        "{label} refused the request: the plan does not include this model",
        "Use a model the plan includes (limit them with {allowed}) or upgrade the plan",
    ),
    "1312": Verdict(
        ErrorKind.OVERLOADED, True, "{label} refused the request: the model is overloaded right now", f"{_RETRY_LATER}, " + _OTHER
    ),
}

# Kimi error types (error.type), https://platform.moonshot.ai/docs/api/chat#error-codes.
KIMI_TYPES: Final[dict[str, Verdict]] = {
    "rate_limit_reached_error": Verdict(
        ErrorKind.RATE_LIMITED,
        True,
        "{label} refused the request: the account's concurrency or request-rate limit is reached",
        f"Set {{rpm}} below your tier's RPM; {_RETRY_LATER}",
    ),
    "engine_overloaded_error": Verdict(
        ErrorKind.OVERLOADED, True, "{label} refused the request: the engine is overloaded right now", f"{_RETRY_LATER}, " + _OTHER
    ),
    "exceeded_current_quota_error": Verdict(
        ErrorKind.QUOTA,
        False,
        "{label} refused the request: the account's balance or token quota is used up (or the account is suspended for it)",
        "Top up the Moonshot account (check its balance in the console), " + _OTHER,
    ),
    "invalid_authentication_error": Verdict(
        ErrorKind.AUTH, False, "{label} refused the request: the API key was refused", "Fix {key} and restart exai"
    ),
    "incorrect_api_key_error": Verdict(ErrorKind.AUTH, False, "{label} refused the request: the API key was refused", "Fix {key} and restart exai"),
    "content_filter": Verdict(
        ErrorKind.CONTENT_FILTERED,
        False,
        "{label} refused the content: it judged the request high-risk",
        "Rephrase the request or leave out the flagged material",
    ),
    "permission_denied_error": Verdict(
        ErrorKind.BAD_REQUEST,
        False,
        "{label} refused the request: this API or model is not open to the account",
        "Use a model the account may call (limit them with {allowed})",
        circuit=False,
    ),
}

_AUTH: Final = Verdict(ErrorKind.AUTH, False, "{label} refused the request: the API key was refused", "Fix {key} and restart exai")
# By HTTP status, when the body names no code or type exai knows.
_BY_STATUS: Final[dict[tuple[str, int], Verdict]] = {
    ("kimi", 401): _AUTH,
    # Kimi answers 403 when the balance is used up (https://www.kimi.com/help/kimi-api/api-troubleshooting).
    ("kimi", 403): KIMI_TYPES["exceeded_current_quota_error"],
    ("glm", 401): _AUTH,
    ("glm", 403): _AUTH,
}
_RATE: Final = Verdict(
    ErrorKind.RATE_LIMITED, True, "{label} is rate limiting requests", f"Set {{rpm}} below your plan's limit; {_RETRY_LATER}"
)
_QUOTA_BY_WORDS: Final = Verdict(
    ErrorKind.QUOTA, False, "{label} refused the request: the account's quota or balance is used up", "Top up the account, " + _OTHER
)
_TIMEOUT: Final = Verdict(ErrorKind.TIMEOUT, True, "{label} timed out the request", _RETRY_LATER)
_DOWN: Final = Verdict(ErrorKind.UNAVAILABLE, True, "{label} is unavailable", f"{_RETRY_LATER}, " + _OTHER)
_TOO_LONG: Final = Verdict(
    ErrorKind.CONTEXT_TOO_LONG,
    False,
    "{label} refused the request: the request does not fit the model's context window",
    "Send fewer or smaller files, or start a new thread without continuation_id",
    circuit=False,
)
_FILTERED: Final = Verdict(
    ErrorKind.CONTENT_FILTERED,
    False,
    "{label} refused the content",
    "Rephrase the request or leave out the flagged material",
    circuit=False,
)
_NO_MODEL: Final = Verdict(
    ErrorKind.BAD_REQUEST,
    False,
    "{label} does not serve model {model} at this URL",
    "Check the model name and {url}",
    circuit=False,
)
_REFUSED: Final = Verdict(
    ErrorKind.BAD_REQUEST, False, "{label} refused the request's parameters", "Check the request's parameters", circuit=False
)

# Words in an error without a known code or type (a proxy, an older API version).
_CONTEXT_HINTS: Final = (
    "context length",
    "context_length",
    "context window",
    "maximum context",
    "token limit",
    "too long",
    "too many tokens",
    "prompt is too long",
    "input length",
    "超长",
)
_FILTER_HINTS: Final = ("content_filter", "content filter", "sensitive", "high risk", "unsafe", "inappropriate", "敏感")
_QUOTA_HINTS: Final = ("insufficient", "quota", "balance", "billing", "arrears", "余额")


def known(code: str, error_type: str) -> tuple[str, Verdict] | None:
    """(the code or type, its verdict) when the error names one the tables know: a GLM code,
    or a Kimi type (in `type`, or in `code` as some proxies put it)."""
    for name, table in ((code, GLM_CODES), (error_type, KIMI_TYPES), (code, KIMI_TYPES)):
        if name in table:
            return name, table[name]
    return None


def verdict(provider: str, status: int, code: str, error_type: str, message: str) -> Verdict:
    """The verdict on one error answer: the vendor's code or type, else the status (and words)."""
    if (found := known(code, error_type)) is not None:
        return found[1]
    if (provider, status) in _BY_STATUS:
        return _BY_STATUS[(provider, status)]
    if status in (401, 403):
        return _AUTH
    lowered = f"{message} {code} {error_type}".lower()
    if status == 429:
        return _QUOTA_BY_WORDS if any(hint in lowered for hint in _QUOTA_HINTS) else _RATE
    if status == 408:
        return _TIMEOUT
    if is_retryable_status(status):
        return _DOWN
    if status == 413 or any(hint in lowered for hint in _CONTEXT_HINTS):
        return _TOO_LONG
    if any(hint in lowered for hint in _FILTER_HINTS):
        return _FILTERED
    if status == 404:
        return _NO_MODEL
    return _REFUSED


_RESET_AT: Final = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?(?: ?(?:UTC|GMT|[+-]\d{2}:?\d{2}|Z))?")


def reset_time(error: dict[str, Any], message: str) -> str | None:
    """When a usage cap resets, as the vendor wrote it (a `*reset*` field, else a date in the message)."""
    for key, value in error.items():
        if "reset" in str(key).lower() and isinstance(value, str | int | float) and str(value).strip():
            return str(value).strip()[:40]
    found = _RESET_AT.search(message)
    return found.group(0) if found else None


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def rate_hold_s(remaining: str | None, reset: str | None, *, now: float | None = None) -> float | None:
    """Seconds to hold the provider's next request, from X-RateLimit-Remaining / -Reset.

    Only when nothing remains and the reset is readable: seconds (`12`, `1.5`), a duration
    (`1m30s`, `250ms`) or a Unix time (epoch seconds); capped like Retry-After. None otherwise.
    """
    if remaining is None or reset is None:
        return None
    try:
        if int(float(remaining.strip())) > 0:
            return None
    except ValueError:
        return None
    text = reset.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    else:
        if seconds > 1e9:  # a Unix time, not a delay
            seconds -= time.time() if now is None else now
    if seconds != seconds:  # NaN
        return None
    return min(RETRY_AFTER_CAP_S, max(0.0, seconds))


@dataclass(frozen=True, slots=True)
class Dialect:
    """The request fields that differ between vendors."""

    # The `tools` entry that turns the vendor's own web search on.
    web_search_tool: dict[str, Any]
    # The tool-call name the vendor expects echoed back (Kimi's builtin), or None when the
    # search runs inside the one request (GLM).
    echo_tool: str | None
    # What one search costs besides the tokens (USD), where the vendor publishes it.
    search_fee_usd: float | None = None


DIALECTS: Final[dict[str, Dialect]] = {
    # https://docs.z.ai/guides/tools/web-search: results come back in the answer's `web_search`.
    # Z.ai's fee per search is not confirmed here: searches count by their tokens only.
    "glm": Dialect({"type": "web_search", "web_search": {"enable": True, "search_result": True}}, None),
    # https://platform.moonshot.ai/docs/guide/use-web-search: the model calls `$web_search`;
    # the client sends the call's arguments back as the tool message, and the model answers.
    # The fee: $0.004 per `$web_search` call (https://www.kimi.com/help/kimi-api/api-pricing).
    "kimi": Dialect({"type": "builtin_function", "function": {"name": "$web_search"}}, "$web_search", 0.004),
}


def thinking_field(thinking: str) -> dict[str, str] | None:
    """The `thinking` request field for `thinking: enabled|disabled` (both vendors' shape); None for auto."""
    return None if thinking == "auto" else {"type": thinking}


_LINK: Final = re.compile(r"\[([^\]\n]{1,300})\]\((https?://[^)\s]{1,2000})\)")


def link_sources(text: str) -> list[Source]:
    """The markdown links of an answer, as sources: how Kimi cites what `$web_search` found
    (its API returns no separate list of results)."""
    return [Source(title.strip(), url) for title, url in _LINK.findall(text)]
