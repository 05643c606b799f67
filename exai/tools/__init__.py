"""The tools the daemon serves."""

from __future__ import annotations

from typing import Final

from exai.config import Settings
from exai.tools.analyze import Analyze
from exai.tools.base import ServedTool
from exai.tools.challenge import Challenge
from exai.tools.chat import Chat
from exai.tools.clink import Clink
from exai.tools.codereview import CodeReview
from exai.tools.consensus import Consensus
from exai.tools.debug import Debug
from exai.tools.docgen import DocGen
from exai.tools.info import ListModels, Status, Version
from exai.tools.planner import Planner
from exai.tools.precommit import Precommit
from exai.tools.refactor import Refactor
from exai.tools.secaudit import SecAudit
from exai.tools.testgen import TestGen
from exai.tools.thinkdeep import ThinkDeep
from exai.tools.tracer import Tracer

TOOL_CLASSES: Final = (
    Chat, ThinkDeep, Debug, Analyze, CodeReview, Planner, Consensus,
    Precommit, SecAudit, Refactor, TestGen, DocGen, Tracer, Challenge, Clink,
    ListModels, Version, Status,
)  # fmt: skip
TOOL_NAMES: Final = tuple(cls.name for cls in TOOL_CLASSES)


def all_tools(settings: Settings | None = None) -> dict[str, ServedTool]:
    """Every tool by name, less those EXAI_DISABLED_TOOLS names (the daemon never sees those),
    and less clink while EXAI_CLINK_CLIS is unset (it has nothing to run). No settings: every tool."""
    if settings is None:
        return {cls.name: cls() for cls in TOOL_CLASSES}
    disabled = set(settings.disabled_tools or ())
    if not settings.clink_clis:
        disabled.add(Clink.name)
    return {cls.name: cls() for cls in TOOL_CLASSES if cls.name not in disabled}
