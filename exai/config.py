"""Settings: read once at start-up from the environment and `.env`, validated, secrets redacted.

The environment wins over `.env` in the working directory; keyword overrides (the command
line) win over both. Every problem becomes a one-line `ConfigError` naming the variable,
the value (`****` for secrets) and the rule, so `exai serve` can exit 2 without a traceback.
A variable that starts with `EXAI_` but names no setting is a problem too: a typo must never
fall back to a default in silence.

This module knows no tool, provider or store: what it cannot check alone (the tool names of
`EXAI_DISABLED_TOOLS`) the caller passes in.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, TypeAlias
from urllib.parse import quote, unquote, urlsplit

from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from exai.errors import ExaiError

ENV_FILE: Final = ".env"
ENV_PREFIX: Final = "EXAI_"

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
STORE_FILE: Final = "conversations.sqlite3"
DEFAULT_REPLICA_LEASE_SECS: Final = 10.0
DEFAULT_TASK_AFTER_SECS: Final = 2.0
DEFAULT_TASK_TIMEOUT_SECS: Final = 1800.0
DEFAULT_TASK_TTL_SECS: Final = 3600.0
DEFAULT_MAX_TASKS: Final = 64
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


def _broken(rule: str, **context: Any) -> PydanticCustomError:
    """A validation error whose message is exactly `rule` (no pydantic prefix)."""
    return PydanticCustomError("exai_config", rule, context)


# -- value types: each carries the one rule its errors state ------------------------------


@dataclass(frozen=True)
class Rule:
    """The rule a setting's type states whenever a value is refused, pydantic's own parse
    errors (not an integer, not a number) included, so every message says the same thing."""

    text: str


def _empty_is_unset(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, SecretStr) and not value.get_secret_value().strip():
        return None
    return value


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _split_names(value: Any) -> Any:
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list | tuple):
        names = [name.strip() if isinstance(name, str) else name for name in value]
        return [name for name in names if name != ""] or None
    return value


_SECRET_RULE: Final = "must be a single word of printable ASCII (no spaces or control characters)"
_URL_RULE: Final = "must be an http:// or https:// URL with a host"


def _header_safe(value: SecretStr | None) -> SecretStr | None:
    # It travels in an HTTP header: anything but printable ASCII could never match one.
    if value is not None and any(
        not (ch.isascii() and ch.isprintable()) or ch.isspace() for ch in value.get_secret_value()
    ):
        raise _broken(_SECRET_RULE)
    return value


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        ok = False
    if not ok:
        raise _broken(_URL_RULE)
    return value.rstrip("/")


Port: TypeAlias = Annotated[int, Field(ge=0, le=65535), Rule("must be an integer from 0 to 65535")]
AtLeastOne: TypeAlias = Annotated[int, Field(ge=1), Rule("must be an integer >= 1")]
# 0 is meaningful for these: no waiting queue, no retries, no automatic steps.
AtLeastZero: TypeAlias = Annotated[int, Field(ge=0), Rule("must be an integer >= 0")]
PositiveNumber: TypeAlias = Annotated[float, Field(gt=0), Rule("must be a number > 0")]
NonNegativeNumber: TypeAlias = Annotated[float, Field(ge=0), Rule("must be a number >= 0")]
Rate: TypeAlias = Annotated[
    Annotated[int, Field(ge=1)] | None,
    BeforeValidator(_empty_is_unset),
    Rule("must be an integer >= 1 (requests per minute), or empty for no limit"),
]
Secret: TypeAlias = Annotated[
    SecretStr | None,
    AfterValidator(_header_safe),
    BeforeValidator(_empty_is_unset),
    Rule(_SECRET_RULE),
]
ModelList: TypeAlias = Annotated[
    list[str] | None,
    BeforeValidator(_split_names),
    Rule("must be a comma-separated list of model names"),
]
BaseUrl: TypeAlias = Annotated[
    str, AfterValidator(_http_url), BeforeValidator(_stripped), Rule(_URL_RULE)
]


# -- the store's location -----------------------------------------------------------------


@dataclass(frozen=True)
class SqliteLocation:
    """`sqlite:///PATH`: one SQLite file on this machine (a relative PATH is from the working
    directory, so `sqlite:////abs/path` and `sqlite:///rel/path` both work)."""

    path: Path

    def __str__(self) -> str:
        return f"sqlite:///{self.path}"

    @property
    def url(self) -> str:
        return str(self)


@dataclass(frozen=True)
class RedisLocation:
    """`redis://[:password@]host:port/db`: a Redis 7+ (or Valkey) server shared by replicas.
    `str()` never shows the password."""

    host: str
    port: int
    db: int
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        auth = f":{REDACTED}@" if self.password is not None else ""
        return f"redis://{auth}{_bracketed(self.host)}:{self.port}/{self.db}"

    @property
    def url(self) -> str:
        """The URL with its password (for the client only; never logged or shown)."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{_bracketed(self.host)}:{self.port}/{self.db}"


# Each backend adds its location type here and its parser to _STORE_SCHEMES, nothing else.
StoreLocation: TypeAlias = SqliteLocation | RedisLocation
STORE_URL_FORMS: Final = "sqlite:///PATH or redis://[:password@]host:port/db"
REDIS_URL_FORM: Final = "redis://[:password@]host:port/db"
REDIS_DATABASES: Final = 16


def _sqlite_location(rest: str) -> SqliteLocation:
    if not rest.startswith("/") or rest == "/":
        raise ValueError(f"must be {STORE_URL_FORMS} (a file path after the third slash)")
    return SqliteLocation(Path(rest[1:]).expanduser().absolute())


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _redis_location(rest: str) -> RedisLocation:
    auth, at, where = rest.rpartition("@")
    password: str | None = None
    if at:
        user, colon, secret = auth.partition(":")
        if user or not colon or not secret:
            raise ValueError(f"must be {REDIS_URL_FORM} (a password after ':', no user name)")
        password = unquote(secret)
    address, slash, db_text = where.partition("/")
    host, colon, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not slash or not colon or not host:
        raise ValueError(f"must be {REDIS_URL_FORM} (host, port and database number)")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"must be {REDIS_URL_FORM} (a port from 1 to 65535)")
    if not db_text.isdigit() or int(db_text) >= REDIS_DATABASES:
        raise ValueError(f"must be {REDIS_URL_FORM} (a database number from 0 to {REDIS_DATABASES - 1})")
    return RedisLocation(host, int(port_text), int(db_text), password)


_STORE_SCHEMES: Final[dict[str, Callable[[str], StoreLocation]]] = {
    "sqlite": _sqlite_location,
    "redis": _redis_location,
}


def parse_store_url(url: str) -> StoreLocation:
    """The location `url` names; ValueError with a one-line reason when it names none."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"must be a URL ({STORE_URL_FORMS})")
    parse = _STORE_SCHEMES.get(scheme.lower())
    if parse is None:
        raise ValueError(f"{scheme}:// scheme not supported ({STORE_URL_FORMS})")
    return parse(rest)


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


# Rules of the fields whose type is their own (plain str, Path, bool, ...).
_RULES: Final[dict[str, str]] = {
    "host": "must be a host name or IP address",
    "fallback": "must be a boolean (true/false, 1/0, yes/no, on/off)",
    "state_dir": "must be a directory path",
    "store_url": f"must be a URL ({STORE_URL_FORMS})",
    "clink_clis": "must be comma-separated name=command pairs",
    "models_file": "must be the path of a readable TOML file",
    "allowed_roots": f"must be {os.pathsep!r}-separated existing directories",
    "log_level": f"must be one of {', '.join(LOG_LEVELS)}",
    "log_format": f"must be one of {', '.join(LOG_FORMATS)}",
    "default_model": "must be a model name or auto",
    "disabled_tools": "must be a comma-separated list of tool names",
}


class Settings(BaseSettings):
    """The daemon's configuration: field `x` is `EXAI_X`, but for the four provider variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # pydantic-settings matches `EXAI_` + field name only without case; names in another
        # case than the contract's are refused by `load_settings` (see `_strays`).
        case_sensitive=False,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        # Lists come as `a,b` / `/x:/y`, split by the validators below, never as JSON.
        enable_decoding=False,
        validate_default=True,
        allow_inf_nan=False,
    )

    host: str = DEFAULT_HOST
    port: Port = DEFAULT_PORT
    monitor_port: Port = DEFAULT_MONITOR_PORT
    http_port: Port = DEFAULT_HTTP_PORT
    auth_token: Secret = None
    max_connections: AtLeastOne = DEFAULT_MAX_CONNECTIONS
    max_message_bytes: AtLeastOne = DEFAULT_MAX_MESSAGE_BYTES
    global_max_inflight: AtLeastOne = DEFAULT_GLOBAL_MAX_INFLIGHT
    session_max_inflight: AtLeastOne = DEFAULT_SESSION_MAX_INFLIGHT
    kimi_max_inflight: AtLeastOne = DEFAULT_KIMI_MAX_INFLIGHT
    glm_max_inflight: AtLeastOne = DEFAULT_GLM_MAX_INFLIGHT
    max_queued: AtLeastZero = DEFAULT_MAX_QUEUED
    tool_timeout_secs: PositiveNumber = DEFAULT_TOOL_TIMEOUT_SECS
    provider_timeout_secs: PositiveNumber = DEFAULT_PROVIDER_TIMEOUT_SECS
    provider_max_retries: AtLeastZero = DEFAULT_PROVIDER_MAX_RETRIES
    max_provider_calls: AtLeastOne = DEFAULT_MAX_PROVIDER_CALLS
    max_auto_steps: AtLeastZero = DEFAULT_MAX_AUTO_STEPS
    stream_idle_secs: PositiveNumber = DEFAULT_STREAM_IDLE_SECS
    circuit_failures: AtLeastOne = DEFAULT_CIRCUIT_FAILURES
    circuit_cooldown_secs: PositiveNumber = DEFAULT_CIRCUIT_COOLDOWN_SECS
    kimi_rpm: Rate = None
    glm_rpm: Rate = None
    kimi_allowed_models: ModelList = None
    glm_allowed_models: ModelList = None
    fallback: bool = DEFAULT_FALLBACK
    # A grace of 0 means "cancel in-flight calls at once on SIGTERM".
    shutdown_grace_secs: NonNegativeNumber = DEFAULT_SHUTDOWN_GRACE_SECS
    state_dir: Path = DEFAULT_STATE_DIR
    # Empty means the default, `sqlite:///<state_dir>/conversations.sqlite3`, filled in below.
    store_url: str = ""
    replica_lease_secs: PositiveNumber = DEFAULT_REPLICA_LEASE_SECS
    # 0 means "always answer with a task".
    task_after_secs: NonNegativeNumber = DEFAULT_TASK_AFTER_SECS
    task_timeout_secs: PositiveNumber = DEFAULT_TASK_TIMEOUT_SECS
    task_ttl_secs: PositiveNumber = DEFAULT_TASK_TTL_SECS
    max_tasks: AtLeastOne = DEFAULT_MAX_TASKS
    clink_clis: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    conversation_ttl_hours: PositiveNumber = DEFAULT_CONVERSATION_TTL_HOURS
    max_conversation_turns: AtLeastOne = DEFAULT_MAX_CONVERSATION_TURNS
    allowed_roots: list[Path] = Field(default_factory=_working_directory)
    log_level: str = DEFAULT_LOG_LEVEL
    log_format: str = DEFAULT_LOG_FORMAT
    kimi_api_key: Secret = Field(default=None, validation_alias="KIMI_API_KEY")
    kimi_base_url: BaseUrl = Field(default=DEFAULT_KIMI_BASE_URL, validation_alias="KIMI_BASE_URL")
    glm_api_key: Secret = Field(default=None, validation_alias="GLM_API_KEY")
    glm_base_url: BaseUrl = Field(default=DEFAULT_GLM_BASE_URL, validation_alias="GLM_BASE_URL")
    default_model: str = DEFAULT_MODEL
    models_file: Path | None = None
    max_file_bytes: AtLeastOne = DEFAULT_MAX_FILE_BYTES
    max_result_tokens: AtLeastOne = DEFAULT_MAX_RESULT_TOKENS
    disabled_tools: Annotated[list[str] | None, BeforeValidator(_split_names)] = None
    http_session_idle_secs: PositiveNumber = DEFAULT_HTTP_SESSION_IDLE_SECS

    @property
    def store_location(self) -> StoreLocation:
        """Where the store lives, parsed from `store_url` (valid: checked at start-up)."""
        return parse_store_url(self.store_url)

    # -- before: turn text from the environment into the field's shape ---------------------

    @field_validator("state_dir", mode="before")
    @classmethod
    def _no_empty_path(cls, value: Any) -> Any:
        # Path("") would silently mean the working directory.
        if isinstance(value, str) and not value.strip():
            raise _broken(_RULES["state_dir"])
        return value

    @field_validator("models_file", mode="before")
    @classmethod
    def _empty_file_is_unset(cls, value: Any) -> Any:
        return _empty_is_unset(value) if isinstance(value, str) else value

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

    @field_validator("clink_clis", mode="before")
    @classmethod
    def _split_clis(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        clis: dict[str, tuple[str, ...]] = {}
        for pair in filter(None, (part.strip() for part in value.split(","))):
            name, sep, command = (part.strip() for part in pair.partition("="))
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:
                raise _broken("{pair}: {reason}", pair=pair, reason=str(exc)) from None
            if not sep or not name or any(ch.isspace() for ch in name) or not argv:
                raise _broken("{pair}: must be name=command", pair=pair)
            if name in clis:
                raise _broken("{name} is given twice", name=name)
            clis[name] = argv
        return clis

    @field_validator("host", "default_model", "store_url", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return _stripped(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    # -- after: the rules of fields with a type of their own -------------------------------

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

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            state_dir = info.data.get("state_dir")
            if state_dir is None:  # EXAI_STATE_DIR is invalid: its own error says so
                return value
            return str(SqliteLocation(state_dir / STORE_FILE))
        try:
            return parse_store_url(value).url
        except ValueError as exc:
            raise _broken("{reason}", reason=str(exc)) from None

    @field_validator("models_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = value.expanduser().absolute()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise _broken(_RULES["models_file"])
        return path

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
    name: str(field.validation_alias or f"{ENV_PREFIX}{name.upper()}")
    for name, field in Settings.model_fields.items()
}
_FIELD_OF_ENV: Final[dict[str, str]] = {env: name for name, env in ENV_NAMES.items()}
_SECRETS: Final = frozenset(
    name for name, field in Settings.model_fields.items() if Rule(_SECRET_RULE) in field.metadata
)


def _rule(name: str) -> str | None:
    rules = [item.text for item in Settings.model_fields[name].metadata if isinstance(item, Rule)]
    return rules[0] if rules else _RULES.get(name)


class ConfigError(ExaiError):
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


def _without_password(url: str) -> str:
    """`url` with the password of its user part, if any, as `****`."""
    scheme, sep, rest = url.partition("://")
    user, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in user:
        return url
    return f"{scheme}://{user.partition(':')[0]}:{REDACTED}@{host}"


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
        shown = _one_line(_without_password(str(raw)))
    rule = error["msg"] if error["type"] == "exai_config" else (_rule(name) or error["msg"])
    return f"{ENV_NAMES[name]}={shown}: {_one_line(rule, limit=1000)}"


# Candidates for "did you mean": EXAI_ names by what follows the prefix, so `EXAI_KIMI_API_KEY`
# finds `KIMI_API_KEY` and `EXAI_FOO` is not "near" every name for sharing `EXAI_`.
_BY_STEM: Final[dict[str, str]] = {env.removeprefix(ENV_PREFIX): env for env in ENV_NAMES.values()}


def _stray(name: str) -> str | None:
    """The problem of environment variable `name`, when it looks like a setting but is none."""
    if name in _FIELD_OF_ENV or not (name.upper().startswith(ENV_PREFIX) or name.upper() in _FIELD_OF_ENV):
        return None
    near = difflib.get_close_matches(name.upper().removeprefix(ENV_PREFIX), _BY_STEM, n=1)
    problem = f"{_one_line(name)} is not a setting"
    return f"{problem}; did you mean {_BY_STEM[near[0]]}?" if near else problem


def _strays(*sources: Collection[str]) -> list[str]:
    names = sorted({name for source in sources for name in source})
    return [problem for problem in map(_stray, names) if problem is not None]


def _env_file_values() -> dict[str, str | None]:
    path = Path(ENV_FILE)
    if not path.is_file():
        return {}
    try:
        return dict(dotenv_values(path, encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{ENV_FILE}: cannot read: {_one_line(str(exc))}"]) from None


def _unknown_tools(settings: Settings, known_tools: Collection[str]) -> list[str]:
    unknown = [name for name in settings.disabled_tools or () if name not in known_tools]
    if not unknown:
        return []
    shown = _one_line(",".join(settings.disabled_tools or ()))
    return [
        f"EXAI_DISABLED_TOOLS={shown}: unknown tool {', '.join(unknown)} "
        f"(known: {', '.join(known_tools)})"
    ]


def load_settings(*, known_tools: Collection[str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment and `.env`, with `overrides` (by field name) on top.

    `known_tools`, when given, are the names EXAI_DISABLED_TOOLS may use (the daemon's
    registry passes its own). Raises ConfigError (one line, secrets redacted) on any invalid
    value, any `EXAI_` variable that is not a setting or an unreadable `.env`; TypeError on
    an override that is not a field (a programming error).
    """
    unknown = sorted(set(overrides) - set(ENV_NAMES))
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
    problems = _strays(os.environ, _env_file_values())
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems += [_problem(error) for error in exc.errors(include_url=False)]
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{ENV_FILE}: cannot read: {_one_line(str(exc))}")
    else:
        if known_tools is not None:
            problems += _unknown_tools(settings, known_tools)
        if not problems:
            return settings
    raise ConfigError(problems)


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
    if isinstance(value, dict):
        return ",".join(f"{key}={shlex.join(argv)}" for key, argv in value.items()) or UNSET
    if name == "store_url":
        return _without_password(str(value))
    return str(value)


def describe_settings(
    overrides: Mapping[str, Any] | None = None, *, known_tools: Collection[str] | None = None
) -> list[tuple[str, str, str]]:
    """(ENV_NAME, shown value, source) for every setting, in the contract's order.

    source is "default", ".env", "environment" or "command line"; secrets show as `****`
    or `unset`. Raises ConfigError like `load_settings`.
    """
    given = {name: value for name, value in (overrides or {}).items() if value is not None}
    settings = load_settings(known_tools=known_tools, **given)
    in_file = _env_file_values()
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


def reread_disabled_tools(settings: Settings, known_tools: Collection[str]) -> Settings:
    """`settings` with EXAI_DISABLED_TOOLS read again (environment first, then `.env`), for a
    reload; every other value stays. ConfigError, as at start-up, when the new value is bad."""
    kept = {name: getattr(settings, name) for name in ENV_NAMES if name != "disabled_tools"}
    return load_settings(known_tools=known_tools, **kept)
