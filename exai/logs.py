"""Logging: loguru, one line per event, secrets redacted whatever text carries them."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from exai.config import Settings

REDACTED = "****"


def secrets_of(settings: Settings) -> list[str]:
    values = []
    for name in ("auth_token", "kimi_api_key", "glm_api_key"):
        secret = getattr(settings, name, None)
        if secret is not None and secret.get_secret_value():
            values.append(secret.get_secret_value())
    return values


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def setup_logging(settings: Settings, sink: Any = None) -> None:
    """Send logs to stderr (or `sink`) at EXAI_LOG_LEVEL, as text or one JSON object per line."""
    secrets = secrets_of(settings)
    level = settings.log_level
    target = sink if sink is not None else sys.stderr

    def patch(record: Any) -> None:
        # One line per event, whatever a client put in an id or a method name.
        record["message"] = one_line(redact(record["message"], secrets))
        for key in ("rid", "conn"):
            if key in record["extra"]:
                record["extra"][key] = one_line(str(record["extra"][key]))
        if record["exception"] is not None:
            record["extra"]["exc_text"] = redact(_format_exception(record["exception"]), secrets)

    def text_format(record: Any) -> str:
        ctx = ""
        if "rid" in record["extra"]:
            ctx = " [{extra[rid]}]"
        elif "conn" in record["extra"]:
            ctx = " [{extra[conn]}]"
        tail = "\n{extra[exc_text]}" if "exc_text" in record["extra"] else ""
        return "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7}" + ctx + " {message}" + tail + "\n"

    def json_sink(message: Any) -> None:
        record = message.record
        obj = {
            "time": record["time"].isoformat(),
            "level": record["level"].name,
            "message": record["message"],
        }
        for key in ("rid", "conn"):
            if key in record["extra"]:
                obj[key] = record["extra"][key]
        if "exc_text" in record["extra"]:
            obj["exception"] = record["extra"]["exc_text"]
        target.write(json.dumps(obj, ensure_ascii=False) + "\n")
        target.flush()

    logger.remove()
    logger.configure(patcher=patch)
    if settings.log_format == "json":
        logger.add(json_sink, level=level, format="{message}", backtrace=False, diagnose=False, catch=False)
    else:
        logger.add(target, level=level, format=text_format, backtrace=False, diagnose=False, colorize=False)


def _format_exception(exception: Any) -> str:
    import traceback

    return "".join(traceback.format_exception(exception.type, exception.value, exception.traceback)).rstrip()
