"""Tests of exai.config.

Rules: every test runs in an empty temporary directory with every EXAI_*/KIMI_*/GLM_*
variable removed, so neither the developer's shell nor a stray .env leaks in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

import exai
from exai import config
from exai.cli import run_config_command
from exai.config import (
    ENV_NAMES,
    ConfigError,
    Settings,
    describe_settings,
    is_loopback,
    load_settings,
)
from exai.tools import TOOL_NAMES

REPO = Path(exai.__file__).resolve().parent.parent
SECRET = "sk-very-secret-value-123"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith(("EXAI_", "KIMI_", "GLM_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def problem_of() -> str:
    """The ConfigError text for the current environment (set by the caller via monkeypatch)."""
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text
    return text


# -- defaults and sources of values ---------------------------------------------------------


def test_defaults_are_the_contract(tmp_path: Path) -> None:
    s = load_settings()
    assert (s.host, s.port, s.monitor_port, s.auth_token) == ("127.0.0.1", 8079, 8080, None)
    assert (s.http_port, s.http_session_idle_secs) == (8081, 300.0)
    assert (s.max_connections, s.max_message_bytes) == (1000, 1048576)
    assert (s.global_max_inflight, s.session_max_inflight) == (24, 8)
    assert (s.kimi_max_inflight, s.glm_max_inflight, s.max_queued) == (6, 4, 256)
    assert (s.tool_timeout_secs, s.provider_timeout_secs) == (180.0, 120.0)
    assert (s.provider_max_retries, s.max_provider_calls, s.max_auto_steps) == (3, 5, 3)
    assert (s.stream_idle_secs, s.circuit_failures, s.circuit_cooldown_secs) == (30.0, 5, 30.0)
    assert (s.kimi_rpm, s.glm_rpm) == (None, None)
    assert (s.kimi_allowed_models, s.glm_allowed_models) == (None, None)
    assert s.fallback is True
    assert s.shutdown_grace_secs == 10.0
    assert s.state_dir == Path.home() / ".local" / "state" / "exai"
    assert (s.conversation_ttl_hours, s.max_conversation_turns) == (24.0, 40)
    assert s.allowed_roots == [tmp_path.resolve()]
    assert s.max_file_bytes == 262144
    assert (s.max_result_tokens, s.disabled_tools) == (20000, None)
    assert (s.log_level, s.log_format) == ("INFO", "text")
    assert (s.kimi_api_key, s.kimi_base_url) == (None, "https://api.moonshot.ai/v1")
    assert (s.glm_api_key, s.glm_base_url) == (None, "https://api.z.ai/api/paas/v4")
    assert s.default_model == "auto"
    assert s.store_url == f"sqlite:///{Path.home()}/.local/state/exai/conversations.sqlite3"
    assert s.store_location == config.SqliteLocation(s.state_dir / "conversations.sqlite3")
    assert (s.replica_lease_secs, s.task_after_secs) == (10.0, 2.0)
    assert (s.task_timeout_secs, s.task_ttl_secs, s.max_tasks) == (1800.0, 3600.0, 64)
    assert (s.clink_clis, s.models_file) == ({}, None)


def test_env_names_are_the_contract() -> None:
    assert ENV_NAMES["host"] == "EXAI_HOST"
    assert ENV_NAMES["kimi_api_key"] == "KIMI_API_KEY"
    assert ENV_NAMES["glm_base_url"] == "GLM_BASE_URL"
    assert ENV_NAMES["default_model"] == "EXAI_DEFAULT_MODEL"
    plain = {"kimi_api_key", "kimi_base_url", "glm_api_key", "glm_base_url"}
    for name, env in ENV_NAMES.items():
        if name not in plain:
            assert env == f"EXAI_{name.upper()}"
    assert len(ENV_NAMES) == 49


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("EXAI_PORT", "9001")
    monkeypatch.setenv("EXAI_TOOL_TIMEOUT_SECS", "60.5")
    monkeypatch.setenv("EXAI_PROVIDER_TIMEOUT_SECS", "30")
    monkeypatch.setenv("EXAI_KIMI_RPM", "120")
    monkeypatch.setenv("EXAI_KIMI_ALLOWED_MODELS", " kimi-k2 , kimi-latest,")
    monkeypatch.setenv("EXAI_ALLOWED_ROOTS", f"{tmp_path}{os.pathsep}{other}{os.pathsep}")
    monkeypatch.setenv("EXAI_FALLBACK", "no")
    monkeypatch.setenv("EXAI_DISABLED_TOOLS", " consensus, planner,")
    monkeypatch.setenv("EXAI_LOG_LEVEL", "debug")
    monkeypatch.setenv("EXAI_LOG_FORMAT", "JSON")
    monkeypatch.setenv("KIMI_API_KEY", SECRET)
    monkeypatch.setenv("GLM_BASE_URL", "http://127.0.0.1:8090/v1/")
    s = load_settings()
    assert s.port == 9001
    assert (s.tool_timeout_secs, s.provider_timeout_secs) == (60.5, 30.0)
    assert s.kimi_rpm == 120
    assert s.kimi_allowed_models == ["kimi-k2", "kimi-latest"]
    assert s.allowed_roots == [tmp_path.resolve(), other.resolve()]
    assert s.fallback is False
    assert s.disabled_tools == ["consensus", "planner"]
    assert (s.log_level, s.log_format) == ("DEBUG", "json")
    assert isinstance(s.kimi_api_key, SecretStr)
    assert s.kimi_api_key.get_secret_value() == SECRET
    assert s.glm_base_url == "http://127.0.0.1:8090/v1"


def test_empty_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EXAI_KIMI_RPM", "EXAI_GLM_RPM", "EXAI_AUTH_TOKEN", "KIMI_API_KEY", "GLM_API_KEY"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("EXAI_KIMI_ALLOWED_MODELS", "")
    monkeypatch.setenv("EXAI_GLM_ALLOWED_MODELS", " , ")
    s = load_settings()
    assert (s.kimi_rpm, s.glm_rpm, s.auth_token, s.kimi_api_key, s.glm_api_key) == (None,) * 5
    assert (s.kimi_allowed_models, s.glm_allowed_models) == (None, None)


def test_dotenv_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("EXAI_PORT=9100\nEXAI_MONITOR_PORT=9101\nEXAI_MAX_QUEUED=7\n")
    monkeypatch.setenv("EXAI_MONITOR_PORT", "9200")
    s = load_settings()
    assert (s.port, s.monitor_port, s.max_queued) == (9100, 9200, 7)


def test_overrides_beat_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("EXAI_PORT=9100\n")
    monkeypatch.setenv("EXAI_HOST", "localhost")
    s = load_settings(host="127.0.0.2", port=0)
    assert (s.host, s.port) == ("127.0.0.2", 0)


def test_construct_by_field_name() -> None:
    s = Settings(host="::1", port=0, max_queued=0, auth_token=SecretStr(SECRET))
    assert (s.host, s.port, s.max_queued) == ("::1", 0, 0)
    assert s.auth_token is not None and s.auth_token.get_secret_value() == SECRET
    s = Settings.model_validate({"glm_allowed_models": ["glm-4.6"], "fallback": False})
    assert s.glm_allowed_models == ["glm-4.6"]
    assert s.fallback is False


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="prot"):
        load_settings(prot=1)


def test_env_example_lists_every_variable_with_its_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    example = (REPO / ".env.example").read_text()
    lines = example.splitlines()
    for env in ENV_NAMES.values():
        assigned = [i for i, line in enumerate(lines) if line.startswith((f"{env}=", f"# {env}="))]
        assert len(assigned) == 1, env
        assert lines[assigned[0] - 1].startswith("# "), f"{env} has no comment line"
    # Used as .env as it is, the example gives exactly the defaults.
    defaults = load_settings()
    (tmp_path / ".env").write_text(example)
    assert set(dotenv_values(tmp_path / ".env")) <= set(ENV_NAMES.values())
    assert load_settings() == defaults


# -- invalid values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "value", "rule"),
    [
        ("EXAI_PORT", "abc", "must be an integer from 0 to 65535"),
        ("EXAI_PORT", "70000", "must be an integer from 0 to 65535"),
        ("EXAI_MONITOR_PORT", "-1", "must be an integer from 0 to 65535"),
        ("EXAI_HTTP_PORT", "65536", "must be an integer from 0 to 65535"),
        ("EXAI_HTTP_SESSION_IDLE_SECS", "0", "must be a number > 0"),
        ("EXAI_MAX_CONNECTIONS", "0", "must be an integer >= 1"),
        ("EXAI_GLOBAL_MAX_INFLIGHT", "-3", "must be an integer >= 1"),
        ("EXAI_MAX_MESSAGE_BYTES", "1.5", "must be an integer >= 1"),
        ("EXAI_MAX_FILE_BYTES", "0", "must be an integer >= 1"),
        ("EXAI_MAX_RESULT_TOKENS", "0", "must be an integer >= 1"),
        ("EXAI_MAX_QUEUED", "-1", "must be an integer >= 0"),
        ("EXAI_PROVIDER_MAX_RETRIES", "-1", "must be an integer >= 0"),
        ("EXAI_MAX_AUTO_STEPS", "many", "must be an integer >= 0"),
        ("EXAI_KIMI_RPM", "0", "must be an integer >= 1"),
        ("EXAI_TOOL_TIMEOUT_SECS", "0", "must be a number > 0"),
        ("EXAI_STREAM_IDLE_SECS", "soon", "must be a number > 0"),
        ("EXAI_CIRCUIT_COOLDOWN_SECS", "nan", "must be a number > 0"),
        ("EXAI_SHUTDOWN_GRACE_SECS", "-1", "must be a number >= 0"),
        (
            "EXAI_LOG_LEVEL",
            "loud",
            "must be one of TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR, CRITICAL",
        ),
        ("EXAI_LOG_FORMAT", "xml", "must be one of text, json"),
        ("KIMI_BASE_URL", "ftp://example.com", "must be an http:// or https:// URL"),
        ("GLM_BASE_URL", "example.com/v1", "must be an http:// or https:// URL"),
        ("GLM_BASE_URL", "http://host:port", "must be an http:// or https:// URL"),
        ("EXAI_FALLBACK", "maybe", "must be a boolean"),
        ("EXAI_DEFAULT_MODEL", "", "must not be empty"),
        ("EXAI_HOST", "", "must be a host name or IP address"),
        ("EXAI_STATE_DIR", "", "must be a directory path"),
        ("EXAI_ALLOWED_ROOTS", os.pathsep, "must name at least one existing directory"),
    ],
)
def test_invalid_value_names_variable_value_and_rule(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, rule: str
) -> None:
    monkeypatch.setenv(env, value)
    text = problem_of()
    shown = value if value else '""'
    assert text.startswith(f"{env}={shown}: "), text
    assert rule in text


def test_nonexistent_allowed_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    monkeypatch.setenv("EXAI_ALLOWED_ROOTS", f"{tmp_path}{os.pathsep}{missing}")
    text = problem_of()
    assert text.startswith("EXAI_ALLOWED_ROOTS=")
    assert f"{missing} is not an existing directory" in text


def test_allowed_root_that_is_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("EXAI_ALLOWED_ROOTS", str(tmp_path / "file"))
    assert "is not an existing directory" in problem_of()


def test_provider_timeout_above_tool_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_TOOL_TIMEOUT_SECS", "60")
    monkeypatch.setenv("EXAI_PROVIDER_TIMEOUT_SECS", "90")
    text = problem_of()
    assert text == "EXAI_PROVIDER_TIMEOUT_SECS=90: must not exceed EXAI_TOOL_TIMEOUT_SECS (60)"


def test_equal_timeouts_and_limits_are_fine() -> None:
    s = load_settings(
        tool_timeout_secs=5, provider_timeout_secs=5, global_max_inflight=2, session_max_inflight=2
    )
    assert (s.provider_timeout_secs, s.session_max_inflight) == (5.0, 2)


def test_session_limit_above_global_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_SESSION_MAX_INFLIGHT", "30")
    assert (
        problem_of()
        == "EXAI_SESSION_MAX_INFLIGHT=30: must not exceed EXAI_GLOBAL_MAX_INFLIGHT (24)"
    )


def test_non_loopback_host_needs_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_HOST", "0.0.0.0")
    text = problem_of()
    assert text.startswith("EXAI_HOST=0.0.0.0: ")
    assert "EXAI_AUTH_TOKEN" in text
    monkeypatch.setenv("EXAI_AUTH_TOKEN", SECRET)
    assert load_settings().host == "0.0.0.0"


def test_several_problems_make_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_PORT", "abc")
    monkeypatch.setenv("EXAI_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert len(info.value.problems) == 2
    assert str(info.value) == "; ".join(info.value.problems)
    assert "EXAI_PORT=abc" in str(info.value) and "EXAI_LOG_FORMAT=xml" in str(info.value)


def test_invalid_override_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^EXAI_PORT=70000: must be an integer from 0 to 65535$"):
        load_settings(port=70000)


def test_odd_values_stay_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_PORT", "80\n80")
    assert problem_of().startswith("EXAI_PORT=80\\n80: ")
    monkeypatch.setenv("EXAI_PORT", "x" * 500)
    assert len(problem_of()) < 200


def test_unreadable_dotenv_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"EXAI_PORT=\xff\xfe\n")
    text = problem_of()
    assert text.startswith(".env: cannot read")


# -- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["KIMI_API_KEY", "GLM_API_KEY", "EXAI_AUTH_TOKEN"])
def test_invalid_secret_is_redacted_in_errors(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv(env, f"{SECRET} trailing words")
    text = problem_of()
    assert SECRET not in text
    assert text.startswith(f"{env}=****: ")


def test_secrets_absent_from_errors_of_other_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMI_API_KEY", SECRET)
    monkeypatch.setenv("EXAI_AUTH_TOKEN", SECRET)
    monkeypatch.setenv("EXAI_SESSION_MAX_INFLIGHT", "100")
    monkeypatch.setenv("EXAI_PORT", "-5")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_secrets_absent_from_describe_and_config_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("KIMI_API_KEY", SECRET)
    (tmp_path / ".env").write_text(f"GLM_API_KEY={SECRET}-glm\nEXAI_AUTH_TOKEN={SECRET}-token\n")
    rows = {env: (value, source) for env, value, source in describe_settings()}
    assert rows["KIMI_API_KEY"] == ("****", "environment")
    assert rows["GLM_API_KEY"] == ("****", ".env")
    assert rows["EXAI_AUTH_TOKEN"] == ("****", ".env")
    assert SECRET not in repr(rows)
    assert run_config_command(check=False) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err


# -- describe_settings and `exai config` ---------------------------------------------------


def test_describe_settings_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("EXAI_MONITOR_PORT=9101\nEXAI_MAX_QUEUED=7\n# EXAI_GLM_RPM=5\n")
    monkeypatch.setenv("EXAI_MAX_QUEUED", "9")
    monkeypatch.setenv("EXAI_LOG_LEVEL", "warning")
    rows = describe_settings({"port": 0, "host": None})
    assert [env for env, _, _ in rows] == list(ENV_NAMES.values())
    table = {env: (value, source) for env, value, source in rows}
    assert table["EXAI_PORT"] == ("0", "command line")
    assert table["EXAI_HOST"] == ("127.0.0.1", "default")
    assert table["EXAI_MONITOR_PORT"] == ("9101", ".env")
    assert table["EXAI_MAX_QUEUED"] == ("9", "environment")
    assert table["EXAI_LOG_LEVEL"] == ("WARNING", "environment")
    assert table["EXAI_GLM_RPM"] == ("unset", "default")
    assert table["EXAI_TOOL_TIMEOUT_SECS"] == ("180", "default")
    assert table["EXAI_FALLBACK"] == ("true", "default")
    assert table["EXAI_AUTH_TOKEN"] == ("unset", "default")
    assert table["EXAI_ALLOWED_ROOTS"] == (str(tmp_path.resolve()), "default")


def test_describe_settings_raises_on_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_PORT", "abc")
    with pytest.raises(ConfigError, match="EXAI_PORT=abc"):
        describe_settings()


def test_config_command_prints_aligned_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXAI_PORT", "9001")
    assert run_config_command(check=False) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == len(ENV_NAMES)
    port_line = next(line for line in lines if line.startswith("EXAI_PORT "))
    assert port_line.split() == ["EXAI_PORT", "9001", "(environment)"]
    # Aligned: every value and every source starts in the same column.
    value_columns = {len(line) - len(line[len(line.split()[0]) :].lstrip()) for line in lines}
    source_columns = {line.rindex("(") for line in lines}
    assert len(value_columns) == 1 and len(source_columns) == 1


def test_config_command_invalid(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXAI_LOG_FORMAT", "xml")
    assert run_config_command(check=False) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "exai: invalid configuration: EXAI_LOG_FORMAT=xml: must be one of text, json\n"


def test_config_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_config_command(check=True) == 0
    assert capsys.readouterr() == ("configuration ok\n", "")


def test_config_check_invalid(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXAI_HOST", "192.0.2.1")
    assert run_config_command(check=True) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("exai: invalid configuration: EXAI_HOST=192.0.2.1: ")
    assert err.count("\n") == 1


def exai_config_check(cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """`exai config --check` as a user runs it: its own process, only `variables` set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAI_", "KIMI_", "GLM_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", "from exai.cli import main; main()", "config", "--check"],
        env={**env, **variables},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_cli_config_check_exits_2_with_one_line(tmp_path: Path) -> None:
    result = exai_config_check(tmp_path, EXAI_PORT="abc")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "EXAI_PORT=abc" in result.stderr


# -- is_loopback ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert load_settings(host=host).host == host


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "128.0.0.1", "localhost.example"]
)
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_constants_are_the_field_defaults() -> None:
    fields = Settings.model_fields
    assert fields["port"].default == config.DEFAULT_PORT == 8079
    assert fields["monitor_port"].default == config.DEFAULT_MONITOR_PORT == 8080
    assert fields["tool_timeout_secs"].default == config.DEFAULT_TOOL_TIMEOUT_SECS == 180.0
    assert fields["kimi_base_url"].default == config.DEFAULT_KIMI_BASE_URL


# -- EXAI_DISABLED_TOOLS: checked against the names the caller knows -------------------------


def test_disabled_tools_checked_against_the_known_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_DISABLED_TOOLS", "debug,nonesuch")
    with pytest.raises(ConfigError) as info:
        load_settings(known_tools=TOOL_NAMES)
    assert str(info.value) == (
        f"EXAI_DISABLED_TOOLS=debug,nonesuch: unknown tool nonesuch (known: {', '.join(TOOL_NAMES)})"
    )
    # Without the registry's names config has nothing to check them against.
    assert load_settings().disabled_tools == ["debug", "nonesuch"]
    monkeypatch.setenv("EXAI_DISABLED_TOOLS", "debug")
    assert load_settings(known_tools=TOOL_NAMES).disabled_tools == ["debug"]


def test_config_command_refuses_unknown_disabled_tool(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXAI_DISABLED_TOOLS", "nonesuch")
    assert run_config_command(check=True) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("exai: invalid configuration: EXAI_DISABLED_TOOLS=nonesuch: unknown tool")


def test_config_imports_no_tool_provider_or_store() -> None:
    code = (
        "import sys, exai.config; "
        "print(sorted(m for m in sys.modules if m.startswith(('exai.tools', 'exai.providers', "
        "'exai.store', 'exai.server'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# -- the variables of tasks, replicas, clink and the model file -----------------------------


@pytest.mark.parametrize(
    ("env", "value", "rule"),
    [
        ("EXAI_REPLICA_LEASE_SECS", "0", "must be a number > 0"),
        ("EXAI_TASK_AFTER_SECS", "-1", "must be a number >= 0"),
        ("EXAI_TASK_AFTER_SECS", "soon", "must be a number >= 0"),
        ("EXAI_TASK_TIMEOUT_SECS", "0", "must be a number > 0"),
        ("EXAI_TASK_TTL_SECS", "inf", "must be a number > 0"),
        ("EXAI_MAX_TASKS", "0", "must be an integer >= 1"),
        ("EXAI_MAX_TASKS", "2.5", "must be an integer >= 1"),
    ],
)
def test_invalid_task_settings(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, rule: str
) -> None:
    monkeypatch.setenv(env, value)
    assert problem_of() == f"{env}={value}: {rule}"


def test_task_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_TASK_AFTER_SECS", "0")
    monkeypatch.setenv("EXAI_TASK_TIMEOUT_SECS", "60")
    monkeypatch.setenv("EXAI_TASK_TTL_SECS", "120.5")
    monkeypatch.setenv("EXAI_MAX_TASKS", "1")
    monkeypatch.setenv("EXAI_REPLICA_LEASE_SECS", "3")
    s = load_settings()
    assert (s.task_after_secs, s.task_timeout_secs, s.task_ttl_secs) == (0.0, 60.0, 120.5)
    assert (s.max_tasks, s.replica_lease_secs) == (1, 3.0)


def test_clink_clis_are_name_to_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_CLINK_CLIS", ' gemini=gemini , codex=codex exec --flag "two words",')
    assert load_settings().clink_clis == {
        "gemini": ("gemini",),
        "codex": ("codex", "exec", "--flag", "two words"),
    }
    rows = {env: value for env, value, _ in describe_settings()}
    assert rows["EXAI_CLINK_CLIS"] == "gemini=gemini,codex=codex exec --flag 'two words'"
    monkeypatch.setenv("EXAI_CLINK_CLIS", " , ")
    assert load_settings().clink_clis == {}


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("gemini", "gemini: must be name=command"),
        ("=gemini", "=gemini: must be name=command"),
        ("gemini=", "gemini=: must be name=command"),
        ("my cli=gemini", "my cli=gemini: must be name=command"),
        ('gemini=gemini "open', 'gemini=gemini "open: No closing quotation'),
        ("a=x,a=y", "a is given twice"),
    ],
)
def test_invalid_clink_clis(monkeypatch: pytest.MonkeyPatch, value: str, rule: str) -> None:
    monkeypatch.setenv("EXAI_CLINK_CLIS", value)
    assert problem_of() == f"EXAI_CLINK_CLIS={value}: {rule}"


def test_models_file_must_be_a_readable_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    models = tmp_path / "models.toml"
    models.write_text("")
    monkeypatch.setenv("EXAI_MODELS_FILE", "models.toml")
    assert load_settings().models_file == models
    for bad in ("missing.toml", str(tmp_path)):
        monkeypatch.setenv("EXAI_MODELS_FILE", bad)
        assert problem_of() == f"EXAI_MODELS_FILE={bad}: must be the path of a readable TOML file"
    monkeypatch.setenv("EXAI_MODELS_FILE", "")
    assert load_settings().models_file is None


# -- EXAI_STORE_URL ----------------------------------------------------------------------------


def test_store_url_default_follows_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXAI_STATE_DIR", str(tmp_path / "state"))
    s = load_settings()
    assert s.store_url == f"sqlite:///{tmp_path}/state/conversations.sqlite3"
    assert s.store_location.path == tmp_path / "state" / "conversations.sqlite3"
    table = {env: (value, source) for env, value, source in describe_settings()}
    assert table["EXAI_STORE_URL"] == (s.store_url, "default")
    monkeypatch.setenv("EXAI_STORE_URL", "")
    assert load_settings().store_url == s.store_url


def test_store_url_sqlite_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EXAI_STORE_URL", f"sqlite:///{tmp_path}/elsewhere.db")
    assert load_settings().store_location.path == tmp_path / "elsewhere.db"
    monkeypatch.setenv("EXAI_STORE_URL", "sqlite:///relative/threads.db")
    s = load_settings()
    assert s.store_location.path == tmp_path / "relative" / "threads.db"
    assert s.store_url == f"sqlite:///{tmp_path}/relative/threads.db"


def test_store_url_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_STORE_URL", "redis://localhost:6379/0")
    s = load_settings()
    assert (s.store_location.host, s.store_location.port, s.store_location.db) == ("localhost", 6379, 0)
    assert s.store_location.password is None
    # A password (percent-encoded when it holds URL characters) is kept for the client and
    # shown nowhere: not in the settings table, the location's text or its repr.
    monkeypatch.setenv("EXAI_STORE_URL", "redis://:hun%2Fter2@[::1]:6380/3")
    s = load_settings()
    assert s.store_location.password == "hun/ter2"
    assert (s.store_location.host, s.store_location.port, s.store_location.db) == ("::1", 6380, 3)
    assert str(s.store_location) == "redis://:****@[::1]:6380/3"
    assert "hun" not in repr(s.store_location)
    table = {env: value for env, value, _ in describe_settings()}
    assert table["EXAI_STORE_URL"] == "redis://:****@[::1]:6380/3"


REDIS_FORM = "must be redis://[:password@]host:port/db"


@pytest.mark.parametrize(
    ("value", "shown", "rule"),
    [
        ("redis://:hunter2@localhost:6379/16", "redis://:****@localhost:6379/16", f"{REDIS_FORM} (a database number from 0 to 15)"),
        ("redis://admin:hunter2@localhost:6379/0", "redis://admin:****@localhost:6379/0", f"{REDIS_FORM} (a password after ':', no user name)"),
        ("redis://localhost/0", None, f"{REDIS_FORM} (host, port and database number)"),
        ("redis://localhost:6379", None, f"{REDIS_FORM} (host, port and database number)"),
        ("redis://localhost:0/0", None, f"{REDIS_FORM} (a port from 1 to 65535)"),
        ("redis://localhost:http/0", None, f"{REDIS_FORM} (a port from 1 to 65535)"),
        ("redis://localhost:6379/x", None, f"{REDIS_FORM} (a database number from 0 to 15)"),
        ("postgres://db/x", None, "postgres:// scheme not supported (sqlite:///PATH or redis://[:password@]host:port/db)"),
        ("/var/lib/exai.db", None, "must be a URL (sqlite:///PATH or redis://[:password@]host:port/db)"),
        ("sqlite://", None, "must be sqlite:///PATH"),
        ("sqlite:///", None, "must be sqlite:///PATH"),
        ("sqlite://host/x.db", None, "must be sqlite:///PATH"),
    ],
)  # fmt: skip
def test_invalid_store_url(
    monkeypatch: pytest.MonkeyPatch, value: str, shown: str | None, rule: str
) -> None:
    monkeypatch.setenv("EXAI_STORE_URL", value)
    text = problem_of()
    assert text.startswith(f"EXAI_STORE_URL={shown or value}: {rule}"), text
    assert "hunter2" not in text


# -- an EXAI_ variable that is not a setting ---------------------------------------------------


def test_unknown_variable_names_the_nearest_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_TOOL_TIMEOUT_SEC", "5")
    assert problem_of() == "EXAI_TOOL_TIMEOUT_SEC is not a setting; did you mean EXAI_TOOL_TIMEOUT_SECS?"


def test_unknown_variable_with_nothing_near(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_FOO", "1")
    assert problem_of() == "EXAI_FOO is not a setting"


@pytest.mark.parametrize(
    ("variable", "nearest"),
    [
        ("EXAI_KIMI_API_KEY", "KIMI_API_KEY"),  # a provider variable given the EXAI_ prefix
        ("exai_port", "EXAI_PORT"),  # names are the contract's, in its case
        ("Exai_Max_Queued", "EXAI_MAX_QUEUED"),
        ("kimi_api_key", "KIMI_API_KEY"),
        ("EXAI_STORE_URI", "EXAI_STORE_URL"),
    ],
)
def test_unknown_variable_spellings(
    monkeypatch: pytest.MonkeyPatch, variable: str, nearest: str
) -> None:
    monkeypatch.setenv(variable, "1")
    assert problem_of() == f"{variable} is not a setting; did you mean {nearest}?"


def test_other_variables_are_not_settings_and_not_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMI_REGION", "cn")
    monkeypatch.setenv("MY_EXAI_PORT", "1")
    monkeypatch.setenv("EXAIPORT", "1")
    assert load_settings().port == 8079


def test_unknown_variable_in_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("EXAI_PORT=9100\nEXAI_MAX_QUEUE=7\n# EXAI_NOT_READ=1\n")
    assert problem_of() == "EXAI_MAX_QUEUE is not a setting; did you mean EXAI_MAX_QUEUED?"


def test_unknown_variables_join_other_problems_on_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("EXAI_FOO=1\nEXAI_TOOL_TIMEOUT_SEC=5\n")
    monkeypatch.setenv("EXAI_TOOL_TIMEOUT_SEC", "5")  # in both: named once
    monkeypatch.setenv("EXAI_PORT", "abc")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.problems == [
        "EXAI_FOO is not a setting",
        "EXAI_TOOL_TIMEOUT_SEC is not a setting; did you mean EXAI_TOOL_TIMEOUT_SECS?",
        "EXAI_PORT=abc: must be an integer from 0 to 65535",
    ]


def test_unknown_variable_fails_config_and_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXAI_TOOL_TIMEOUT_SEC", "5")
    with pytest.raises(ConfigError, match="EXAI_TOOL_TIMEOUT_SEC is not a setting"):
        describe_settings()
    for check in (True, False):
        assert run_config_command(check=check) == 2
        assert capsys.readouterr() == (
            "",
            "exai: invalid configuration: EXAI_TOOL_TIMEOUT_SEC is not a setting; "
            "did you mean EXAI_TOOL_TIMEOUT_SECS?\n",
        )


@pytest.mark.slow
def test_cli_config_check_refuses_unknown_variable_in_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("EXAI_TOOL_TIMEOUT_SEC=5\n")
    result = exai_config_check(tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "exai: invalid configuration: EXAI_TOOL_TIMEOUT_SEC is not a setting; "
        "did you mean EXAI_TOOL_TIMEOUT_SECS?\n"
    )


# -- properties over any input -------------------------------------------------------------

ANY_INPUT = hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@ANY_INPUT
@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40))
def test_any_variable_is_a_setting_or_one_line_naming_it(suffix: str) -> None:
    for name in (f"EXAI_{suffix}", f"exai_{suffix}", suffix):
        problem = config._stray(name)
        # The spec: a setting's own name passes; any other spelling of EXAI_* or of a setting fails.
        looks_like_a_setting = name.upper().startswith("EXAI_") or name.upper() in ENV_NAMES.values()
        if name in ENV_NAMES.values() or not looks_like_a_setting:
            assert problem is None
            continue
        assert problem is not None and "\n" not in problem
        assert problem.startswith(f"{name} is not a setting")
        if "; did you mean " in problem:
            assert problem.removesuffix("?").rsplit(" ", 1)[1] in ENV_NAMES.values()


@ANY_INPUT
@given(st.text(max_size=80))
def test_any_clink_clis_text_is_parsed_or_one_line(text: str) -> None:
    try:
        clis = load_settings(clink_clis=text).clink_clis
    except ConfigError as exc:
        assert str(exc).startswith("EXAI_CLINK_CLIS=") and "\n" not in str(exc)
    else:
        assert all(name and argv and all(isinstance(a, str) for a in argv) for name, argv in clis.items())


@ANY_INPUT
@given(st.text(max_size=80))
def test_any_store_url_is_a_location_or_one_line(text: str) -> None:
    try:
        location = load_settings(store_url=text).store_location
    except ConfigError as exc:
        assert str(exc).startswith("EXAI_STORE_URL=") and "\n" not in str(exc)
    else:
        assert location.path.is_absolute()
