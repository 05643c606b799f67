"""Logs: one line per event, JSON on request, secrets never printed."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from loguru import logger

from exai.config import Settings
from exai.logs import setup_logging


@pytest.fixture
def restore_logger() -> Any:
    yield
    logger.remove()
    logger.configure(patcher=lambda record: None)
    logger.add(__import__("sys").stderr, level="DEBUG")


def settings(tmp_path: Any, **overrides: Any) -> Settings:
    return Settings(
        kimi_api_key="sk-kimi-SECRET",
        glm_api_key="glm-SECRET-key",
        auth_token="token-SECRET",
        allowed_roots=[tmp_path],
        **overrides,
    )


def test_text_lines_carry_ids_and_hide_secrets(tmp_path: Any, restore_logger: Any) -> None:
    out = io.StringIO()
    setup_logging(settings(tmp_path), sink=out)
    logger.bind(rid="c1/7").info("calling with key sk-kimi-SECRET and token token-SECRET")
    try:
        raise RuntimeError("upstream said: bad key glm-SECRET-key")
    except RuntimeError:
        logger.bind(conn="c1").exception("it failed")
    text = out.getvalue()
    assert "SECRET" not in text
    assert "[c1/7]" in text and "[c1]" in text
    assert "****" in text
    assert text.splitlines()[0].endswith("calling with key **** and token ****")


def test_json_format_is_one_object_per_line(tmp_path: Any, restore_logger: Any) -> None:
    out = io.StringIO()
    setup_logging(settings(tmp_path, log_format="json"), sink=out)
    logger.bind(rid="c2/1").info("hello sk-kimi-SECRET")
    logger.warning("plain")
    try:
        raise ValueError("glm-SECRET-key")
    except ValueError:
        logger.exception("boom")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["rid"] == "c2/1" and first["message"] == "hello ****" and first["level"] == "INFO"
    assert second["level"] == "WARNING" and "rid" not in second
    assert "ValueError" in third["exception"] and "SECRET" not in lines[2]


def test_level_filters(tmp_path: Any, restore_logger: Any) -> None:
    out = io.StringIO()
    setup_logging(settings(tmp_path, log_level="WARNING"), sink=out)
    logger.info("quiet")
    logger.warning("loud")
    assert out.getvalue().count("\n") == 1 and "loud" in out.getvalue()


def test_client_text_cannot_forge_log_lines(tmp_path: Any, restore_logger: Any) -> None:
    out = io.StringIO()
    setup_logging(settings(tmp_path), sink=out)
    logger.bind(rid="c1/evil\nFAKE").info("method x\n2026-01-01 INFO forged line")
    assert len(out.getvalue().splitlines()) == 1
    assert "evil\\nFAKE" in out.getvalue()
