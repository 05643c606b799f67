"""The tools the daemon serves."""

from __future__ import annotations

from typing import Any, Final

from exai.tools.analyze import Analyze
from exai.tools.base import ServedTool
from exai.tools.chat import Chat
from exai.tools.codereview import CodeReview
from exai.tools.consensus import Consensus
from exai.tools.debug import Debug
from exai.tools.info import ListModels, Status, Version
from exai.tools.planner import Planner
from exai.tools.thinkdeep import ThinkDeep

TOOL_CLASSES: Final = (Chat, ThinkDeep, Debug, Analyze, CodeReview, Planner, Consensus, ListModels, Version, Status)
TOOL_NAMES: Final = tuple(cls.name for cls in TOOL_CLASSES)


def all_tools(settings: Any = None) -> dict[str, ServedTool]:
    """Every tool by name, less those EXAI_DISABLED_TOOLS names: the daemon never sees those."""
    disabled = set(getattr(settings, "disabled_tools", None) or ())
    return {cls.name: cls() for cls in TOOL_CLASSES if cls.name not in disabled}
