"""The models exai knows, which provider serves each, and how big a request each accepts.

Plain data and pure functions: which models a configuration allows, and what `auto` prefers.
Routing decisions that depend on live state (circuits) are the gateway's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, PositiveInt, ValidationError

from exai.errors import ExaiError
from exai.providers.base import Usage

if TYPE_CHECKING:
    from exai.config import Settings

PROVIDERS: Final = ("kimi", "glm")
SIM_MODEL: Final = "exai-sim"
AUTO: Final = "auto"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model, its limits (tokens) and its prices (USD per million tokens; None: not published)."""

    name: str
    provider: str
    context_window: int
    max_output_tokens: int
    input_usd: float | None = None
    cached_input_usd: float | None = None  # a cache hit; None: billed as input
    output_usd: float | None = None
    thinking: bool = False  # takes the `thinking: {type: enabled|disabled}` request field

    def cost_usd(self, usage: Usage) -> float | None:
        """What `usage` cost on this model; None when its prices are not known."""
        if self.input_usd is None or self.output_usd is None:
            return None
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_price = self.input_usd if self.cached_input_usd is None else self.cached_input_usd
        return (
            (usage.prompt_tokens - cached) * self.input_usd
            + cached * cached_price
            + usage.completion_tokens * self.output_usd
        ) / 1_000_000


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

# Limits (tokens) and prices (USD per million tokens: input on a cache miss, input on a cache
# hit, output) as the vendors publish them; where a figure could not be confirmed, it says so.
_M: Final = ModelInfo
CATALOG: Final = {
    info.name: info
    for info in (
        # Kimi: platform.moonshot.ai/docs/pricing/chat (snapshot of 2026-03-26) for the k2 and
        # k2.5 rows: context windows and all three prices. Output limits: Moonshot publishes
        # none per model (max_tokens is bounded by the context window); 32,768 is exai's cap.
        _M("kimi-k2-0905-preview", "kimi", 262_144, 32_768, 0.60, 0.15, 2.50),
        # kimi-k2-turbo-preview: prices from the same page as remembered, not re-confirmed.
        _M("kimi-k2-turbo-preview", "kimi", 262_144, 32_768, 1.15, 0.15, 8.00),
        # kimi-thinking-preview: an older preview; Moonshot's current pages list no price.
        _M("kimi-thinking-preview", "kimi", 131_072, 32_768),
        # moonshot-v1: prices from agentsapis.com/kimi-api/k2-pricing (a third party, 2026-02),
        # not confirmed on Moonshot's own page; no cache-hit price published.
        _M("moonshot-v1-8k", "kimi", 8_192, 4_096, 0.20, None, 2.00),
        _M("moonshot-v1-32k", "kimi", 32_768, 16_384, 1.00, None, 3.00),
        _M("moonshot-v1-128k", "kimi", 131_072, 32_768, 2.00, None, 5.00),
        # GLM: docs.z.ai/guides/overview/pricing as mirrored by the zai plugin catalog of OpenClaw
        # and zenmux.ai (2026); limits from docs.z.ai model pages (glm-4.6: 200K context, 128K
        # output). Every GLM-4.5-and-later model takes the `thinking` field (docs.z.ai thinking mode).
        _M("glm-4.6", "glm", 204_800, 131_072, 0.60, 0.11, 2.20, thinking=True),
        _M("glm-4.5", "glm", 131_072, 98_304, 0.60, 0.11, 2.20, thinking=True),
        # glm-4.5-air: 0.20 / 0.03 / 1.10 as Z.ai listed it; third-party mirrors show 0.10-0.11.
        _M("glm-4.5-air", "glm", 131_072, 98_304, 0.20, 0.03, 1.10, thinking=True),
        _M("glm-4.5-flash", "glm", 131_072, 98_304, 0.0, 0.0, 0.0, thinking=True),  # free tier
        # Newer models (same sources):
        _M("kimi-k2.5", "kimi", 262_144, 32_768, 0.60, 0.10, 3.00, thinking=True),
        # kimi-k2.6: prices from developer.puter.com (2026-06), a third party; thinking
        # support assumed as k2.5's, not confirmed.
        _M("kimi-k2.6", "kimi", 262_144, 32_768, 0.95, 0.16, 4.00, thinking=True),
        # kimi-k2-thinking always thinks (no `thinking` field); prices as kimi-k2, not re-confirmed.
        _M("kimi-k2-thinking", "kimi", 262_144, 32_768, 0.60, 0.15, 2.50),
        _M("kimi-k2-0711-preview", "kimi", 131_072, 32_768, 0.60, 0.15, 2.50),
        _M("glm-4.7", "glm", 204_800, 131_072, 0.60, 0.11, 2.20, thinking=True),
        # glm-5 and glm-5.1: a third-party mirror only (OpenClaw's zai catalog), not confirmed on docs.z.ai.
        _M("glm-5", "glm", 202_800, 131_100, 1.00, 0.20, 3.20, thinking=True),
        _M("glm-5.1", "glm", 202_800, 131_100, 1.20, 0.24, 4.00, thinking=True),
    )
}

# The simulator's model, served through the kimi provider path in demo mode.
# It takes `thinking` (the simulator streams reasoning when asked) and has no price.
SIM_INFO: Final = ModelInfo(SIM_MODEL, "kimi", 131_072, 8_192, thinking=True)


def catalog(demo: bool, models_file: Path | None = None) -> dict[str, ModelInfo]:
    """Every model this configuration can know of, the simulated one first in demo mode, with
    the models file's additions and overrides (ModelsFileError when it is not valid)."""
    models = {SIM_MODEL: SIM_INFO, **CATALOG} if demo else dict(CATALOG)
    if models_file is not None:
        models.update(read_models_file(models_file, models))
    return models


class ModelsFileError(ExaiError):
    """EXAI_MODELS_FILE cannot be used; `str()` is one line naming the file, the model and the
    problem, `problem` the same without the file."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"EXAI_MODELS_FILE={path}: {problem}")
        self.problem = problem


class _ModelEntry(BaseModel):
    """One `[models."NAME"]` table of the models file; every field optional for an override."""

    model_config = ConfigDict(extra="forbid", strict=True)

    provider: Literal["kimi", "glm"] | None = None
    context_window: PositiveInt | None = None
    max_output_tokens: PositiveInt | None = None
    input_usd: NonNegativeFloat | None = None
    cached_input_usd: NonNegativeFloat | None = None
    output_usd: NonNegativeFloat | None = None
    thinking: bool | None = None


_NEW_MODEL_NEEDS: Final = ("provider", "context_window", "max_output_tokens")


def read_models_file(path: Path, known: dict[str, ModelInfo]) -> dict[str, ModelInfo]:
    """The models a TOML models file adds or overrides (`known` holds the ones it may override).

        [models."glm-4.6"]          # an override: only the fields given change
        input_usd = 0.5
        [models."my-kimi"]          # a new model: provider, context_window, max_output_tokens
        provider = "kimi"
        context_window = 131072
        max_output_tokens = 8192
        thinking = true

    Prices are USD per million tokens. Raises ModelsFileError (one line) on the first problem.
    """

    def problem(what: str) -> ModelsFileError:
        return ModelsFileError(path, what)

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise problem(f"cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise problem("is not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise problem(f"is not valid TOML ({exc})") from exc
    unknown = sorted(set(data) - {"models"})
    if unknown:
        raise problem(f"unknown table or key {unknown[0]!r} (models go in [models.\"NAME\"] tables)")
    tables = data.get("models", {})
    if not isinstance(tables, dict):
        raise problem("'models' must be a table of [models.\"NAME\"] tables")
    models: dict[str, ModelInfo] = {}
    for raw_name, table in tables.items():
        name = raw_name.strip().lower()
        if not name or name in (AUTO, SIM_MODEL):
            raise problem(f"model {raw_name!r}: this name cannot be used")
        if not isinstance(table, dict):
            raise problem(f"model {name!r}: must be a table of fields")
        try:
            entry = _ModelEntry.model_validate(table)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "fields"
            message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
            raise problem(f"model {name!r}: {where}: {message}") from None
        given = entry.model_dump(exclude_none=True)
        base = known.get(name)
        if base is None:
            missing = [field for field in _NEW_MODEL_NEEDS if field not in given]
            if missing:
                raise problem(f"model {name!r} is not in the catalog, so it needs {', '.join(missing)}")
            models[name] = ModelInfo(name=name, **given)
        else:
            models[name] = replace(base, **given)
        if models[name].max_output_tokens > models[name].context_window:
            raise problem(f"model {name!r}: max_output_tokens is larger than context_window")
    return models


def allow_list(settings: Settings, provider: str) -> list[str] | None:
    """The provider's allow-list from the settings (None = every model is allowed)."""
    allowed = getattr(settings, f"{provider}_allowed_models", None)
    if not allowed:
        return None
    return [name.strip() for name in allowed if name.strip()]


def is_allowed(settings: Settings, info: ModelInfo) -> bool:
    if info.name == SIM_MODEL:
        return True
    allowed = allow_list(settings, info.provider)
    return allowed is None or info.name in allowed


def default_model(settings: Settings, provider: str, demo: bool) -> str | None:
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
