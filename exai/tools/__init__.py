"""The tools the daemon serves."""

from __future__ import annotations

from exai.tools.base import Tool
from exai.tools.chat import Chat
from exai.tools.info import ListModels, Status, Version


def all_tools() -> dict[str, Tool]:
    tools: list[Tool] = [Chat(), ListModels(), Version(), Status()]
    return {tool.name: tool for tool in tools}
