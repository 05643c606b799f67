"""Settings: read once at start-up from the environment and `.env`, validated, secrets redacted.

The environment wins over `.env` in the working directory; keyword overrides (the command
line) win over both. Every problem becomes a one-line `ConfigError` naming the variable,
the value (`****` for secrets) and the rule, so `exai serve` can exit 2 without a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_FILE: Final = ".env"

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8079
DEFAULT_MONITOR_PORT: Final = 8080
DEFAULT_HTTP_PORT: Final = 8081
DEFAULT_HTTP_SESSION_IDLE_SECS: Final = 300.0
DEFAULT_MAX_CONNECTIONS: Final = 1000
DEFAULT_MAX_MESSAGE_BYTES: Final = 1_048_576
DEFAULT_GLOBAL_MAX_INFLIGHT: Final = 24
DEFAULT_SESSION_MAX_INFLIGHT: Final = 8
DEFAULT_KIMI_MAX_INFLIGHT: Final = 6
DEFAULT_GLM_MAX_INFLIGHT: Final = 4
DEFAULT_MAX_QUEUED: Final = 256
DEFAULT_TOOL_TIMEOUT_SECS: Final = 180.0
DEFAULT_PROVIDER_TIMEOUT_SECS: Final = 120.0
DEFAULT_PROVIDER_MAX_RETRIES: Final = 3
DEFAULT_MAX_PROVIDER_CALLS: Final = 5
DEFAULT_MAX_AUTO_STEPS: Final = 3
DEFAULT_STREAM_IDLE_SECS: Final = 30.0
DEFAULT_CIRCUIT_FAILURES: Final = 5
DEFAULT_CIRCUIT_COOLDOWN_SECS: Final = 30.0
DEFAULT_FALLBACK: Final = True
DEFAULT_SHUTDOWN_GRACE_SECS: Final = 10.0
DEFAULT_STATE_DIR: Final = Path("~/.local/state/exai")
DEFAULT_CONVERSATION_TTL_HOURS: Final = 24.0
DEFAULT_MAX_CONVERSATION_TURNS: Final = 40
DEFAULT_LOG_LEVEL: Final = "INFO"
DEFAULT_LOG_FORMAT: Final = "text"
DEFAULT_KIMI_BASE_URL: Final = "https://api.moonshot.ai/v1"
DEFAULT_GLM_BASE_URL: Final = "https://api.z.ai/api/paas/v4"
DEFAULT_MODEL: Final = "auto"
DEFAULT_MAX_FILE_BYTES: Final = 262_144
DEFAULT_MAX_RESULT_TOKENS: Final = 20_000

LOG_LEVELS: Final = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: Final = ("text", "json")
REDACTED: Final = "****"
UNSET: Final = "unset"

# Field groups sharing one rule. The rule text is also used when pydantic itself rejects
# the value (not an integer, not a number), so every message states the same rule.
_PORTS: Final = ("port", "monitor_port", "http_port")
_AT_LEAST_ONE: Final = (
    "max_connections",
    "max_message_bytes",
    "global_max_inflight",
    "session_max_inflight",
    "kimi_max_inflight",
    "glm_max_inflight",
    "max_provider_calls",
    "circuit_failures",
    "max_conversation_turns",
    "max_file_bytes",
    "max_result_tokens",
)
# 0 is meaningful here: no waiting queue, no retries, no automatic steps.
_AT_LEAST_ZERO: Final = ("max_queued", "provider_max_retries", "max_auto_steps")
_RATES: Final = ("kimi_rpm", "glm_rpm")
_POSITIVE_NUMBERS: Final = (
    "tool_timeout_secs",
    "provider_timeout_secs",
    "stream_idle_secs",
    "circuit_cooldown_secs",
    "conversation_ttl_hours",
    "http_session_idle_secs",
)
# A grace of 0 means "cancel in-flight calls at once on SIGTERM".
_NON_NEGATIVE_NUMBERS: Final = ("shutdown_grace_secs",)
_SECRETS: Final = ("auth_token", "kimi_api_key", "glm_api_key")
_MODEL_LISTS: Final = ("kimi_allowed_models", "glm_allowed_models")
_BASE_URLS: Final = ("kimi_base_url", "glm_base_url")

_RULES: Final[dict[str, str]] = {
    **dict.fromkeys(_PORTS, "must be an integer from 0 to 65535"),
    **dict.fromkeys(_AT_LEAST_ONE, "must be an integer >= 1"),
    **dict.fromkeys(_AT_LEAST_ZERO, "must be an integer >= 0"),
    **dict.fromkeys(_RATES, "must be an integer >= 1 (requests per minute), or empty for no limit"),
    **dict.fromkeys(_POSITIVE_NUMBERS, "must be a number > 0"),
    **dict.fromkeys(_NON_NEGATIVE_NUMBERS, "must be a number >= 0"),
    **dict.fromkeys(_SECRETS, "must be a single word of printable ASCII (no spaces or control characters)"),
    **dict.fromkeys(_MODEL_LISTS, "must be a comma-separated list of model names"),
    **dict.fromkeys(_BASE_URLS, "must be an http:// or https:// URL with a host"),
    "host": "must be a host name or IP address",
    "fallback": "must be a boolean (true/false, 1/0, yes/no, on/off)",
    "state_dir": "must be a directory path",
    "allowed_roots": f"must be {os.pathsep!r}-separated existing directories",
    "log_level": f"must be one of {', '.join(LOG_LEVELS)}",
    "log_format": f"must be one of {', '.join(LOG_FORMATS)}",
    "default_model": "must be a model name or auto",
}


def _broken(rule: str, **context: Any) -> PydanticCustomError:
    """A validation error whose message is exactly `rule` (no pydantic prefix)."""
    return PydanticCustomError("exai_config", rule, context)


def _working_directory() -> list[Path]:
    return [Path.cwd().resolve()]


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.x.x.x and ::1 (bracketed or IPv4-mapped forms included)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class Settings(BaseSettings):
    """The daemon's configuration. Field names are for code; env names are the aliases."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        case_sensitive=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        # Lists come as `a,b` / `/x:/y`, split by the validators below, never as JSON.
        enable_decoding=False,
        validate_default=True,
        allow_inf_nan=False,
    )

    host: str = Field(default=DEFAULT_HOST, validation_alias="EXAI_HOST")
    port: int = Field(default=DEFAULT_PORT, validation_alias="EXAI_PORT")
    monitor_port: int = Field(default=DEFAULT_MONITOR_PORT, validation_alias="EXAI_MONITOR_PORT")
    http_port: int = Field(default=DEFAULT_HTTP_PORT, validation_alias="EXAI_HTTP_PORT")
    auth_token: SecretStr | None = Field(default=None, validation_alias="EXAI_AUTH_TOKEN")
    max_connections: int = Field(
        default=DEFAULT_MAX_CONNECTIONS, validation_alias="EXAI_MAX_CONNECTIONS"
    )
    max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES, validation_alias="EXAI_MAX_MESSAGE_BYTES"
    )
    global_max_inflight: int = Field(
        default=DEFAULT_GLOBAL_MAX_INFLIGHT, validation_alias="EXAI_GLOBAL_MAX_INFLIGHT"
    )
    session_max_inflight: int = Field(
        default=DEFAULT_SESSION_MAX_INFLIGHT, validation_alias="EXAI_SESSION_MAX_INFLIGHT"
    )
    kimi_max_inflight: int = Field(
        default=DEFAULT_KIMI_MAX_INFLIGHT, validation_alias="EXAI_KIMI_MAX_INFLIGHT"
    )
    glm_max_inflight: int = Field(
        default=DEFAULT_GLM_MAX_INFLIGHT, validation_alias="EXAI_GLM_MAX_INFLIGHT"
    )
    max_queued: int = Field(default=DEFAULT_MAX_QUEUED, validation_alias="EXAI_MAX_QUEUED")
    tool_timeout_secs: float = Field(
        default=DEFAULT_TOOL_TIMEOUT_SECS, validation_alias="EXAI_TOOL_TIMEOUT_SECS"
    )
    provider_timeout_secs: float = Field(
        default=DEFAULT_PROVIDER_TIMEOUT_SECS, validation_alias="EXAI_PROVIDER_TIMEOUT_SECS"
    )
    provider_max_retries: int = Field(
        default=DEFAULT_PROVIDER_MAX_RETRIES, validation_alias="EXAI_PROVIDER_MAX_RETRIES"
    )
    max_provider_calls: int = Field(
        default=DEFAULT_MAX_PROVIDER_CALLS, validation_alias="EXAI_MAX_PROVIDER_CALLS"
    )
    max_auto_steps: int = Field(
        default=DEFAULT_MAX_AUTO_STEPS, validation_alias="EXAI_MAX_AUTO_STEPS"
    )
    stream_idle_secs: float = Field(
        default=DEFAULT_STREAM_IDLE_SECS, validation_alias="EXAI_STREAM_IDLE_SECS"
    )
    circuit_failures: int = Field(
        default=DEFAULT_CIRCUIT_FAILURES, validation_alias="EXAI_CIRCUIT_FAILURES"
    )
    circuit_cooldown_secs: float = Field(
        default=DEFAULT_CIRCUIT_COOLDOWN_SECS, validation_alias="EXAI_CIRCUIT_COOLDOWN_SECS"
    )
    kimi_rpm: int | None = Field(default=None, validation_alias="EXAI_KIMI_RPM")
    glm_rpm: int | None = Field(default=None, validation_alias="EXAI_GLM_RPM")
    kimi_allowed_models: list[str] | None = Field(
        default=None, validation_alias="EXAI_KIMI_ALLOWED_MODELS"
    )
    glm_allowed_models: list[str] | None = Field(
        default=None, validation_alias="EXAI_GLM_ALLOWED_MODELS"
    )
    fallback: bool = Field(default=DEFAULT_FALLBACK, validation_alias="EXAI_FALLBACK")
    shutdown_grace_secs: float = Field(
        default=DEFAULT_SHUTDOWN_GRACE_SECS, validation_alias="EXAI_SHUTDOWN_GRACE_SECS"
    )
    state_dir: Path = Field(default=DEFAULT_STATE_DIR, validation_alias="EXAI_STATE_DIR")
    conversation_ttl_hours: float = Field(
        default=DEFAULT_CONVERSATION_TTL_HOURS, validation_alias="EXAI_CONVERSATION_TTL_HOURS"
    )
    max_conversation_turns: int = Field(
        default=DEFAULT_MAX_CONVERSATION_TURNS, validation_alias="EXAI_MAX_CONVERSATION_TURNS"
    )
    allowed_roots: list[Path] = Field(
        default_factory=_working_directory, validation_alias="EXAI_ALLOWED_ROOTS"
    )
    log_level: str = Field(default=DEFAULT_LOG_LEVEL, validation_alias="EXAI_LOG_LEVEL")
    log_format: str = Field(default=DEFAULT_LOG_FORMAT, validation_alias="EXAI_LOG_FORMAT")
    kimi_api_key: SecretStr | None = Field(default=None, validation_alias="KIMI_API_KEY")
    kimi_base_url: str = Field(default=DEFAULT_KIMI_BASE_URL, validation_alias="KIMI_BASE_URL")
    glm_api_key: SecretStr | None = Field(default=None, validation_alias="GLM_API_KEY")
    glm_base_url: str = Field(default=DEFAULT_GLM_BASE_URL, validation_alias="GLM_BASE_URL")
    default_model: str = Field(default=DEFAULT_MODEL, validation_alias="EXAI_DEFAULT_MODEL")
    max_file_bytes: int = Field(default=DEFAULT_MAX_FILE_BYTES, validation_alias="EXAI_MAX_FILE_BYTES")
    max_result_tokens: int = Field(
        default=DEFAULT_MAX_RESULT_TOKENS, validation_alias="EXAI_MAX_RESULT_TOKENS"
    )
    disabled_tools: list[str] | None = Field(default=None, validation_alias="EXAI_DISABLED_TOOLS")
    http_session_idle_secs: float = Field(
        default=DEFAULT_HTTP_SESSION_IDLE_SECS, validation_alias="EXAI_HTTP_SESSION_IDLE_SECS"
    )

    # -- before: turn text from the environment into the field's shape ---------------------

    @field_validator(*_RATES, *_SECRETS, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("state_dir", mode="before")
    @classmethod
    def _no_empty_path(cls, value: Any) -> Any:
        # Path("") would silently mean the working directory.
        if isinstance(value, str) and not value.strip():
            raise _broken(_RULES["state_dir"])
        return value

    @field_validator(*_MODEL_LISTS, "disabled_tools", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            names = [name.strip() if isinstance(name, str) else name for name in value]
            return [name for name in names if name != ""] or None
        return value

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            value = str(value).split(os.pathsep)
        if isinstance(value, list | tuple):
            value = [root for root in value if str(root).strip() != ""]
            if not value:
                raise _broken("must name at least one existing directory")
        return value

    @field_validator("host", "default_model", *_BASE_URLS, mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    # -- after: one rule per field --------------------------------------------------------

    @field_validator(*_PORTS)
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise _broken(_RULES["port"])
        return value

    @field_validator(*_AT_LEAST_ONE, *_RATES)
    @classmethod
    def _at_least_one(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise _broken("must be an integer >= 1")
        return value

    @field_validator(*_AT_LEAST_ZERO)
    @classmethod
    def _at_least_zero(cls, value: int) -> int:
        if value < 0:
            raise _broken("must be an integer >= 0")
        return value

    @field_validator(*_POSITIVE_NUMBERS)
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise _broken("must be a number > 0")
        return value

    @field_validator(*_NON_NEGATIVE_NUMBERS)
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise _broken("must be a number >= 0")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise _broken(_RULES["host"])
        return value

    @field_validator("default_model")
    @classmethod
    def _default_model(cls, value: str) -> str:
        if not value:
            raise _broken("must not be empty (a model name or auto)")
        return value

    @field_validator(*_BASE_URLS)
    @classmethod
    def _base_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
        except ValueError:
            ok = False
        if not ok:
            raise _broken(_RULES["kimi_base_url"])
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value not in LOG_LEVELS:
            raise _broken(_RULES["log_level"])
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in LOG_FORMATS:
            raise _broken(_RULES["log_format"])
        return value

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator(*_SECRETS)
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        # It travels in an HTTP header: anything but printable ASCII could never match one.
        if value is not None and any(
            not (ch.isascii() and ch.isprintable()) or ch.isspace() for ch in value.get_secret_value()
        ):
            raise _broken(_RULES["auth_token"])
        return value

    @field_validator("disabled_tools")
    @classmethod
    def _known_tools(cls, value: list[str] | None) -> list[str] | None:
        from exai.tools import TOOL_NAMES  # the tools import the providers, which need no settings

        unknown = [name for name in value or () if name not in TOOL_NAMES]
        if unknown:
            raise _broken(
                "unknown tool {unknown} (known: {known})",
                unknown=", ".join(unknown),
                known=", ".join(TOOL_NAMES),
            )
        return value

    @field_validator("allowed_roots")
    @classmethod
    def _roots_exist(cls, value: list[Path]) -> list[Path]:
        roots: list[Path] = []
        for root in value:
            try:
                resolved = root.expanduser().resolve()
                is_dir = resolved.is_dir()
            except (OSError, RuntimeError):
                is_dir = False
            if not is_dir:
                raise _broken("{root} is not an existing directory", root=str(root))
            if resolved not in roots:
                roots.append(resolved)
        return roots

    # -- the hierarchy between fields -----------------------------------------------------

    @model_validator(mode="after")
    def _hierarchy(self) -> Settings:
        problems = []
        if self.provider_timeout_secs > self.tool_timeout_secs:
            problems.append(
                f"EXAI_PROVIDER_TIMEOUT_SECS={_number(self.provider_timeout_secs)}: must not exceed "
                f"EXAI_TOOL_TIMEOUT_SECS ({_number(self.tool_timeout_secs)})"
            )
        if self.session_max_inflight > self.global_max_inflight:
            problems.append(
                f"EXAI_SESSION_MAX_INFLIGHT={self.session_max_inflight}: must not exceed "
                f"EXAI_GLOBAL_MAX_INFLIGHT ({self.global_max_inflight})"
            )
        if self.auth_token is None and not is_loopback(self.host):
            problems.append(
                f"EXAI_HOST={_one_line(self.host)}: a non-loopback address needs EXAI_AUTH_TOKEN "
                "(or bind to 127.0.0.1)"
            )
        if problems:
            # The message is built already; passing it as context keeps braces in values literal.
            raise _broken("{problems}", problems="; ".join(problems))
        return self


ENV_NAMES: Final[dict[str, str]] = {
    name: str(field.validation_alias) for name, field in Settings.model_fields.items()
}
_FIELD_OF_ENV: Final[dict[str, str]] = {env: name for name, env in ENV_NAMES.items()}


class ConfigError(Exception):
    """Invalid configuration. `str()` is one line: `VAR=value: rule`, several joined by `; `."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _one_line(text: str, limit: int = 120) -> str:
    """`text` fit for a one-line message: escaped, shortened, quoted when blank-edged."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f'"{text}"' if text == "" or text != text.strip() else text


def _problem(error: ErrorDetails) -> str:
    """One `VAR=value: rule` line for one pydantic error; secrets shown as `****`."""
    loc = error["loc"]
    if not loc:
        return _one_line(error["msg"], limit=1000)
    key = str(loc[0])
    name = _FIELD_OF_ENV.get(key, key)
    if name not in ENV_NAMES:
        return f"{_one_line(key)}: {_one_line(error['msg'])}"
    raw = error.get("input")
    if name in _SECRETS:
        shown = REDACTED
    elif isinstance(raw, list | tuple):
        shown = _one_line(",".join(str(item) for item in raw))
    else:
        shown = _one_line(str(raw))
    rule = error["msg"] if error["type"] == "exai_config" else _RULES.get(name, error["msg"])
    return f"{ENV_NAMES[name]}={shown}: {_one_line(rule, limit=1000)}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and `.env`, with `overrides` (by field name) on top.

    Raises ConfigError (one line, secrets redacted) on any invalid value or unreadable
    `.env`; TypeError on an override that is not a field (a programming error).
    """
    unknown = sorted(set(overrides) - set(ENV_NAMES))
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError([_problem(error) for error in exc.errors(include_url=False)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{ENV_FILE}: cannot read: {_one_line(str(exc))}"]) from None


def _shown(name: str, value: Any) -> str:
    if value is None:
        return UNSET
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list):
        separator = os.pathsep if name == "allowed_roots" else ","
        return separator.join(str(item) for item in value)
    return str(value)


def _env_file_values() -> dict[str, str | None]:
    path = Path(ENV_FILE)
    if not path.is_file():
        return {}
    return dict(dotenv_values(path, encoding="utf-8"))


def describe_settings(overrides: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(ENV_NAME, shown value, source) for every setting, in the contract's order.

    source is "default", ".env", "environment" or "command line"; secrets show as `****`
    or `unset`. Raises ConfigError like `load_settings`.
    """
    given = {name: value for name, value in (overrides or {}).items() if value is not None}
    settings = load_settings(**given)
    try:
        in_file = _env_file_values()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{ENV_FILE}: cannot read: {_one_line(str(exc))}"]) from None
    rows = []
    for name, env in ENV_NAMES.items():
        if name in given:
            source = "command line"
        elif env in os.environ:
            source = "environment"
        elif in_file.get(env) is not None:
            source = ".env"
        else:
            source = "default"
        rows.append((env, _shown(name, getattr(settings, name)), source))
    return rows


def run_config_command(check: bool) -> int:
    """`exai config [--check]`: 0 when valid, 2 with one line on stderr when not."""
    try:
        rows = describe_settings()
    except ConfigError as exc:
        print(f"exai: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if check:
        print("configuration ok")
        return 0
    env_width = max(len(env) for env, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    for env, value, source in rows:
        print(f"{env:<{env_width}}  {value:<{value_width}}  ({source})")
    return 0


def reread_disabled_tools(settings: Settings) -> Settings:
    """`settings` with EXAI_DISABLED_TOOLS read again (environment first, then `.env`), for a
    reload; every other value stays. ConfigError, as at start-up, when the new value is bad."""
    kept = {name: getattr(settings, name) for name in ENV_NAMES if name != "disabled_tools"}
    return load_settings(**kept)
