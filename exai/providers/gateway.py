"""The model gateway: model names to providers, and one provider call with its retries.

Per attempt, in this order: the provider's circuit, the call's budget, the request-rate
ceiling, then the provider's in-flight slot, held only while the HTTP request runs (never
across a backoff sleep). Every wait is bounded by the caller's deadline; a wait that cannot
end before it fails at once with a message saying so.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import httpx
import trio
from loguru import logger

from exai import metrics
from exai.limits import DeploymentSlots, ProcessSlots, take_slot
from exai.providers.base import (
    CallBudget,
    Completion,
    ErrorKind,
    OnText,
    ProviderError,
    Source,
    Usage,
)
from exai.providers.catalog import (
    AUTO,
    PROVIDER_INFO,
    PROVIDERS,
    ModelInfo,
    catalog,
    default_model,
    estimate_tokens,
    is_allowed,
)
from exai.providers.circuit import MISCONFIGURED, OPEN, CircuitBreaker
from exai.providers.openai_compat import (
    AttemptError,
    OpenAICompatProvider,
    context_too_long_message,
)
from exai.providers.ratelimit import RequestRateLimiter
from exai.providers.retry import retry_wait, too_late_message
from exai.providers.transport import TrioH11Transport
from exai.providers.vendors import DIALECTS, link_sources

if TYPE_CHECKING:
    from exai.config import Settings

DEMO_API_KEY: Final = "exai-demo-key"
NOT_CONFIGURED: Final = "not_configured"
CLOSE_TIMEOUT_S: Final = 1.0
# Errors that mean "this provider cannot serve anything now", where `auto` may switch.
FALLBACK_KINDS: Final = frozenset({ErrorKind.CIRCUIT_OPEN, ErrorKind.AUTH, ErrorKind.QUOTA, ErrorKind.PLAN})
# Kimi answers `$web_search` calls one round trip at a time; more than this is a loop.
MAX_SEARCH_ROUNDS: Final = 4
LATENCY_WINDOW: Final = 256


@dataclass
class ProviderStats:
    calls_total: int = 0
    errors_total: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0  # of the attempts whose model has a price
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    # Latencies of the last finished attempts, for the monitor's p50/p95.
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


@dataclass
class Route:
    """Everything the gateway keeps for one provider."""

    name: str
    limiter: trio.CapacityLimiter
    circuit: CircuitBreaker
    http: OpenAICompatProvider | None  # None: no API key, not configured
    rate: RequestRateLimiter
    stats: ProviderStats = field(default_factory=ProviderStats)

    @property
    def state(self) -> str:
        return self.circuit.state if self.http is not None else NOT_CONFIGURED


class ModelGateway:
    """Routes model names to providers, and makes each provider call with its retries."""

    def __init__(
        self, settings: Settings, routes: dict[str, Route], *, demo: bool, slots: DeploymentSlots | None = None
    ):
        self.settings = settings
        self.routes = routes
        self.demo = demo
        self.models: dict[str, ModelInfo] = catalog(demo, settings.models_file)
        self.rng = random.Random()
        self.slots: DeploymentSlots = slots or ProcessSlots()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        limiters: dict[str, trio.CapacityLimiter],
        *,
        simulator_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        slots: DeploymentSlots | None = None,
    ) -> ModelGateway:
        """Build the gateway; `simulator_url` puts it in demo mode (both providers on the simulator)."""
        demo = simulator_url is not None
        routes = {}
        for name in PROVIDERS:
            info = PROVIDER_INFO[name]
            if simulator_url is not None:
                key: str | None = DEMO_API_KEY
                base_url = simulator_url
            else:
                key = _secret(getattr(settings, f"{name}_api_key", None))
                base_url = str(getattr(settings, f"{name}_base_url"))
            limiter = limiters[name]
            rate = (slots or ProcessSlots()).rate_limiter(
                name, getattr(settings, f"{name}_rpm", None), env_var=info.rpm_env
            )
            http = None
            if key:
                http = OpenAICompatProvider(
                    name,
                    base_url,
                    key,
                    max_connections=int(limiter.total_tokens),
                    transport=transport,
                    hold=rate.hold_for,
                )
            routes[name] = Route(
                name=name,
                limiter=limiter,
                circuit=CircuitBreaker(
                    name, failures=settings.circuit_failures, cooldown_s=settings.circuit_cooldown_secs
                ),
                http=http,
                rate=rate,
            )
        return cls(settings, routes, demo=demo, slots=slots)

    async def __aenter__(self) -> ModelGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close every provider client; bounded and shielded, so it also runs when cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
            for route in self.routes.values():
                if route.http is not None:
                    await route.http.aclose()

    # -- routing ----------------------------------------------------------------------

    def _requested(self, model: str | None) -> str:
        name = (model or "").strip() or str(self.settings.default_model).strip() or AUTO
        return name.lower()

    def resolve(self, model: str | None) -> tuple[str, str]:
        """(provider, model id) for a requested model; None or "auto" use the configured default.

        Raises ProviderError: unknown_model (listing the allowed ones) or not_configured.
        """
        name = self._requested(model)
        if name == AUTO:
            return self._auto()
        info = self.models.get(name)
        if info is None:
            raise ProviderError(
                "exai", ErrorKind.UNKNOWN_MODEL, f"Unknown model '{name}'. Allowed models: {self._allowed_text()}."
            )
        if not is_allowed(self.settings, info):
            raise ProviderError(
                info.provider,
                ErrorKind.UNKNOWN_MODEL,
                f"Model '{name}' is not allowed by {PROVIDER_INFO[info.provider].allowed_env}. "
                f"Allowed models: {self._allowed_text()}.",
            )
        if self.routes[info.provider].http is None:
            pinfo = PROVIDER_INFO[info.provider]
            raise ProviderError(
                info.provider,
                ErrorKind.NOT_CONFIGURED,
                f"Model '{name}' is served by {pinfo.label}, which is not configured: set "
                f"{pinfo.key_env} and restart exai. Allowed models: {self._allowed_text()}.",
            )
        return info.provider, name

    def _usable(self) -> list[tuple[str, str]]:
        """(provider, its default model) for every configured provider, in preference order."""
        usable = []
        for name in PROVIDERS:
            model = default_model(self.settings, name, self.demo)
            if self.routes[name].http is not None and model is not None:
                usable.append((name, model))
        return usable

    def _auto(self, exclude: str | None = None) -> tuple[str, str]:
        candidates = [pair for pair in self._usable() if pair[0] != exclude]
        if not candidates:
            raise ProviderError(
                "exai",
                ErrorKind.NOT_CONFIGURED,
                "No model provider is configured: set KIMI_API_KEY or GLM_API_KEY (or run "
                "`exai serve --demo` for the built-in simulated model).",
            )
        if self.settings.fallback:
            for pair in candidates:
                if self.routes[pair[0]].circuit.admits():
                    return pair
        return candidates[0]

    def _allowed_names(self) -> list[str]:
        return [
            name
            for name, info in self.models.items()
            if is_allowed(self.settings, info) and self.routes[info.provider].http is not None
        ]

    def _allowed_text(self) -> str:
        names = self._allowed_names()
        return ", ".join([AUTO, *names]) if names else "none (no provider is configured)"

    # -- calls ------------------------------------------------------------------------

    async def complete(
        self,
        *,
        model: str | None,
        messages: list[dict[str, Any]],
        budget: CallBudget,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_text: OnText | None = None,
        request_id: str = "",
        thinking: str = "auto",
        web_search: bool = False,
    ) -> Completion:
        """One completion, with retries, within the caller's deadline and budget.

        `thinking` (auto|enabled|disabled) goes to models that take it; `web_search` turns on
        the vendor's own search, its round trips (Kimi's) each a provider call. The result's
        usage and cost are the whole answer's.

        Streams when `on_text` is given: it is called with (text so far, tokens so far), in
        order, never after this returns; a retry starts the text again from "". Raises
        ProviderError (BudgetExhausted included); cancellation propagates untouched and
        closes the open HTTP request at once.
        """
        provider, model_id = self.resolve(model)
        call: dict[str, Any] = {
            "messages": messages,
            "budget": budget,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "on_text": on_text,
            "request_id": request_id,
            "thinking": thinking,
            "web_search": web_search,
        }
        try:
            return await self._converse(provider, model_id, **call)
        except ProviderError as exc:
            if not (
                self._requested(model) == AUTO
                and self.settings.fallback
                and exc.provider == provider
                and exc.kind in FALLBACK_KINDS
            ):
                raise
            try:
                other, other_model = self._auto(exclude=provider)
            except ProviderError:
                raise exc from None
            if not self.routes[other].circuit.admits():
                raise
            logger.bind(rid=request_id).warning(
                "provider fallback: {} unavailable ({}), auto uses {} {}", provider, exc.kind, other, other_model
            )
            return await self._converse(other, other_model, **call)

    async def _converse(
        self, provider: str, model_id: str, *, messages: list[dict[str, Any]], web_search: bool, **call: Any
    ) -> Completion:
        """One answer: one provider call, or one per round trip of the vendor's search (Kimi
        calls `$web_search`; its arguments go back as the tool message, as Kimi's docs require)."""
        completion = await self._call(provider, model_id, messages=messages, web_search=web_search, **call)
        usage, cost, sources = completion.usage, completion.cost_usd, list(completion.sources)
        fee = DIALECTS[provider].search_fee_usd
        for _ in range(MAX_SEARCH_ROUNDS):
            if not completion.tool_calls:
                break
            if fee is not None:
                searches = fee * len(completion.tool_calls)
                self.routes[provider].stats.cost_usd += searches
                cost = None if cost is None else cost + searches
            messages = [*messages, *_echo(completion)]
            completion = await self._call(provider, model_id, messages=messages, web_search=web_search, **call)
            usage = Usage(
                usage.prompt_tokens + completion.usage.prompt_tokens,
                usage.completion_tokens + completion.usage.completion_tokens,
                usage.cached_tokens + completion.usage.cached_tokens,
            )
            cost = None if cost is None or completion.cost_usd is None else cost + completion.cost_usd
            sources += completion.sources
        if completion.tool_calls:
            raise ProviderError(
                provider,
                ErrorKind.BAD_RESPONSE,
                f"{PROVIDER_INFO[provider].label} kept calling its web search after {MAX_SEARCH_ROUNDS + 1} "
                "round trips without answering. Try again, or ask without web_search.",
            )
        if web_search and not sources:
            sources = link_sources(completion.text)  # Kimi cites its search in the answer's links
        return replace(completion, usage=usage, cost_usd=cost, sources=_unique(sources))

    async def _call(
        self,
        provider: str,
        model_id: str,
        *,
        messages: list[dict[str, Any]],
        budget: CallBudget,
        temperature: float | None,
        max_tokens: int | None,
        on_text: OnText | None,
        request_id: str,
        thinking: str,
        web_search: bool,
    ) -> Completion:
        route = self.routes[provider]
        assert route.http is not None, "resolve() only returns configured providers"
        info = self.models[model_id]
        estimated = estimate_tokens(messages)
        if estimated > info.context_window:
            raise ProviderError(provider, ErrorKind.CONTEXT_TOO_LONG, context_too_long_message(info, estimated))
        if max_tokens is not None:
            max_tokens = min(max_tokens, info.max_output_tokens)
        attempts = 1 + self.settings.provider_max_retries
        for number in range(1, attempts + 1):
            route.circuit.check()
            budget.take()
            deadline = trio.current_effective_deadline()
            await route.rate.wait_turn(deadline)
            try:
                with route.circuit.attempt():
                    await take_slot(route.limiter)
                    try:
                        async with self.slots.provider_slot(provider, int(route.limiter.total_tokens)):
                            return await self._attempt(
                                route,
                                info,
                                messages=messages,
                                temperature=temperature,
                                max_tokens=max_tokens,
                                on_text=on_text,
                                thinking=thinking,
                                web_search=web_search,
                                log_context=(request_id, number, attempts),
                            )
                    finally:
                        route.limiter.release()
            except AttemptError as exc:
                # A caller cancelled meanwhile (its deadline, say) gets Cancelled, not this error.
                await trio.lowlevel.checkpoint_if_cancelled()
                if not exc.retryable or number == attempts:
                    raise _final(exc, number) from None
                left = deadline - trio.current_time()
                wait = retry_wait(number - 1, exc.retry_after, left, self.rng)
                if wait >= left:
                    raise ProviderError(
                        provider, exc.kind, too_late_message(provider, exc.retry_after, wait, left)
                    ) from None
                await trio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(
        self,
        route: Route,
        info: ModelInfo,
        *,
        messages: list[dict[str, Any]],
        temperature: float | None,
        max_tokens: int | None,
        on_text: OnText | None,
        thinking: str,
        web_search: bool,
        log_context: tuple[str, int, int],
    ) -> Completion:
        """One HTTP attempt, counted, timed and logged whatever its outcome."""
        assert route.http is not None
        request_id, number, attempts = log_context
        started = trio.current_time()
        outcome = "cancelled"
        detail = ""
        route.stats.calls_total += 1
        try:
            completion = await route.http.attempt(
                model=info,
                messages=messages,
                timeout_s=self.settings.provider_timeout_secs,
                stream_idle_s=self.settings.stream_idle_secs,
                temperature=temperature,
                max_tokens=max_tokens,
                on_text=on_text,
                thinking=thinking,
                web_search=web_search,
            )
        except AttemptError as exc:
            outcome = exc.kind
            detail = f" status={exc.status}" if exc.status else ""
            route.stats.errors_total += 1
            route.stats.errors_by_kind[exc.kind.value] = route.stats.errors_by_kind.get(exc.kind.value, 0) + 1
            raise
        else:
            outcome = "ok"
            usage = completion.usage
            route.stats.prompt_tokens += usage.prompt_tokens
            route.stats.completion_tokens += usage.completion_tokens
            route.stats.cached_tokens += usage.cached_tokens
            completion.cost_usd = info.cost_usd(usage)
            if completion.cost_usd is not None:
                route.stats.cost_usd += completion.cost_usd
            detail = (
                f" prompt_tokens={usage.prompt_tokens} completion_tokens={usage.completion_tokens}"
                f" cached_tokens={usage.cached_tokens}"
            )
            return completion
        finally:
            took = trio.current_time() - started
            if outcome != "cancelled":
                route.stats.latencies.append(took)
            metrics.labelled(metrics.provider_requests_total, route.name, info.name, outcome).inc()
            metrics.labelled(metrics.provider_latency, route.name).observe(took)
            # Success is in the call's own log line; failures are events worth a line each.
            level = "DEBUG" if outcome in ("ok", "cancelled") else "WARNING"
            logger.bind(rid=request_id).log(
                level,
                "provider attempt {}/{} {} {}: {} in {:.3f}s{}",
                number,
                attempts,
                route.name,
                info.name,
                outcome,
                took,
                detail,
            )

    # -- status -----------------------------------------------------------------------

    def list_models(self) -> list[dict[str, Any]]:
        """Every known model with its limits, whether a call could use it now, and why not."""
        out = []
        for info in self.models.values():
            route = self.routes[info.provider]
            pinfo = PROVIDER_INFO[info.provider]
            state = route.state
            reason = None
            if not is_allowed(self.settings, info):
                reason = f"not in {pinfo.allowed_env}"
            elif route.http is None:
                reason = f"{pinfo.key_env} is not set"
            elif state == MISCONFIGURED:
                reason = f"{pinfo.label} rejected the API key; fix {pinfo.key_env} and restart exai"
            elif state == OPEN:
                reason = f"{pinfo.label} is failing; its circuit is open for now"
            entry: dict[str, Any] = {
                "name": info.name,
                "provider": info.provider,
                "context_window": info.context_window,
                "max_output_tokens": info.max_output_tokens,
                "available": reason is None,
                "circuit": state,
            }
            if reason is not None:
                entry["reason"] = reason
            out.append(entry)
        return out

    def statistics(self) -> dict[str, dict[str, Any]]:
        """Per provider: circuit state (and seconds until an open one lets a probe through),
        open requests, attempts, failed attempts by kind, recent attempt latency, tokens, the
        RPM ceiling and how many wait for it, half-open probes in flight, pooled sockets busy Safe from the monitor's thread (copies first)."""
        out = {}
        for name, route in self.routes.items():
            stats = route.stats
            latencies = sorted(stats.latencies)  # one C-level copy: safe against appends
            out[name] = {
                "circuit": route.state,
                "probe_in_s": route.circuit.probe_in_s() if route.http is not None else None,
                "inflight": route.http.open_requests if route.http is not None else 0,
                "calls_total": stats.calls_total,
                "errors_total": stats.errors_total,
                "errors_by_kind": dict(stats.errors_by_kind),
                "latency_p50_s": _percentile(latencies, 0.5),
                "latency_p95_s": _percentile(latencies, 0.95),
                "prompt_tokens": stats.prompt_tokens,
                "completion_tokens": stats.completion_tokens,
                "cached_tokens": stats.cached_tokens,
                "cost_usd": round(stats.cost_usd, 6),
                "rpm": route.rate.rpm,
                "rpm_waiting": route.rate.waiting,
                "probes_inflight": route.circuit.probes_inflight,
                "busy_connections": _busy_connections(route),
            }
        return out


def _busy_connections(route: Route) -> int:
    if route.http is not None and isinstance(route.http.transport, TrioH11Transport):
        return int(route.http.transport.statistics()["active"])
    return 0


def _echo(completion: Completion) -> list[dict[str, Any]]:
    """The messages that answer a completion's search calls: the assistant's turn with its
    calls (and its thinking, which Kimi's thinking models expect back), then each call's
    arguments as the tool message."""
    turn: dict[str, Any] = {"role": "assistant", "content": completion.text, "tool_calls": completion.tool_calls}
    if completion.reasoning:
        turn["reasoning_content"] = completion.reasoning
    return [
        turn,
        *(
            {
                "role": "tool",
                "tool_call_id": str(call.get("id", "")),
                "name": str(call["function"].get("name", "")),
                "content": str(call["function"].get("arguments", "")),
            }
            for call in completion.tool_calls
        ),
    ]


def _unique(sources: list[Source]) -> list[Source]:
    return list(dict.fromkeys(sources))


def _final(exc: AttemptError, attempts: int) -> ProviderError:
    if attempts == 1:
        return exc
    return AttemptError(
        exc.provider,
        exc.kind,
        f"{exc} (gave up after {attempts} attempts)",
        retryable=exc.retryable,
        fails_circuit=exc.fails_circuit,
        status=exc.status,
    )


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    reveal = getattr(value, "get_secret_value", None)
    text = reveal() if callable(reveal) else str(value)
    return text.strip() or None
