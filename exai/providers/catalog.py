"""The models exai knows, which provider serves each, and how big a request each accepts.

Plain data and pure functions: which models a configuration allows, and what `auto` prefers.
Routing decisions that depend on live state (circuits) are the gateway's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

PROVIDERS: Final = ("kimi", "glm")
SIM_MODEL: Final = "exai-sim"
AUTO: Final = "auto"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    provider: str
    context_window: int
    max_output_tokens: int


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """How a provider is named in the configuration, for messages a user can act on."""

    name: str
    label: str
    key_env: str
    url_env: str
    rpm_env: str
    allowed_env: str
    default_model: str


PROVIDER_INFO: Final = {
    "kimi": ProviderInfo(
        "kimi",
        "Kimi (Moonshot)",
        "KIMI_API_KEY",
        "KIMI_BASE_URL",
        "EXAI_KIMI_RPM",
        "EXAI_KIMI_ALLOWED_MODELS",
        "kimi-k2-0905-preview",
    ),
    "glm": ProviderInfo(
        "glm",
        "GLM (Z.ai)",
        "GLM_API_KEY",
        "GLM_BASE_URL",
        "EXAI_GLM_RPM",
        "EXAI_GLM_ALLOWED_MODELS",
        "glm-4.6",
    ),
}

# Context windows and output limits as the providers document them (tokens).
CATALOG: Final = {
    info.name: info
    for info in (
        ModelInfo("kimi-k2-0905-preview", "kimi", 262_144, 32_768),
        ModelInfo("kimi-k2-turbo-preview", "kimi", 262_144, 32_768),
        ModelInfo("kimi-thinking-preview", "kimi", 131_072, 32_768),
        ModelInfo("moonshot-v1-8k", "kimi", 8_192, 4_096),
        ModelInfo("moonshot-v1-32k", "kimi", 32_768, 16_384),
        ModelInfo("moonshot-v1-128k", "kimi", 131_072, 32_768),
        ModelInfo("glm-4.6", "glm", 204_800, 131_072),
        ModelInfo("glm-4.5", "glm", 131_072, 98_304),
        ModelInfo("glm-4.5-air", "glm", 131_072, 98_304),
        ModelInfo("glm-4.5-flash", "glm", 131_072, 98_304),
    )
}

# The simulator's model, served through the kimi provider path in demo mode.
SIM_INFO: Final = ModelInfo(SIM_MODEL, "kimi", 131_072, 8_192)


def catalog(demo: bool) -> dict[str, ModelInfo]:
    """Every model this configuration can know of, the simulated one first in demo mode."""
    if demo:
        return {SIM_MODEL: SIM_INFO, **CATALOG}
    return dict(CATALOG)


def allow_list(settings: Any, provider: str) -> list[str] | None:
    """The provider's allow-list from the settings (None = every model is allowed)."""
    allowed = getattr(settings, f"{provider}_allowed_models", None)
    if not allowed:
        return None
    return [name.strip() for name in allowed if name.strip()]


def is_allowed(settings: Any, info: ModelInfo) -> bool:
    if info.name == SIM_MODEL:
        return True
    allowed = allow_list(settings, info.provider)
    return allowed is None or info.name in allowed


def default_model(settings: Any, provider: str, demo: bool) -> str | None:
    """The model `auto` uses on this provider: its usual default, else the first allowed one."""
    if demo and provider == SIM_INFO.provider:
        return SIM_MODEL
    preferred = PROVIDER_INFO[provider].default_model
    if is_allowed(settings, CATALOG[preferred]):
        return preferred
    allowed = allow_list(settings, provider) or []
    return next((name for name in allowed if name in CATALOG), None)


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A rough lower bound of a request's prompt tokens (about 4 characters per token).

    It errs low on purpose: it only rejects a request before sending when the request
    certainly does not fit; the provider's own answer catches the rest.
    """
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(part.get("text", ""))) for part in content if isinstance(part, dict))
    return chars // 4 + 4 * len(messages)
