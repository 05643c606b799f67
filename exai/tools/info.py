"""version, listmodels, status: what the daemon is and what it can do right now."""

from __future__ import annotations

import platform
import sys

from exai import __version__
from exai.protocol import PROTOCOL_VERSION
from exai.tools.base import Tool, ToolArgs, ToolContext, ToolOutput


class NoArgs(ToolArgs):
    pass


class Version(Tool[NoArgs]):
    name = "version"
    description = "The exai version, MCP protocol revision, Python and platform of the daemon."
    Args = NoArgs

    async def run(self, args: NoArgs, ctx: ToolContext) -> ToolOutput:
        info = {
            "exai": __version__,
            "protocol": PROTOCOL_VERSION,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "demo": bool(getattr(ctx.gateway, "demo", False)),
        }
        text = "\n".join(f"{key}: {value}" for key, value in info.items())
        return ToolOutput(text, structured=info)


class ListModels(Tool[NoArgs]):
    name = "listmodels"
    description = (
        "List the models exai can use, by provider, with context window, availability and the "
        "provider's circuit state. Use a listed name as the `model` argument of other tools."
    )
    Args = NoArgs

    async def run(self, args: NoArgs, ctx: ToolContext) -> ToolOutput:
        models = ctx.gateway.list_models()
        lines = []
        for m in models:
            state = "available" if m.get("available") else f"unavailable: {m.get('reason', '')}"
            lines.append(
                f"{m['name']} ({m['provider']}, context {m.get('context_window', '?')}, "
                f"circuit {m.get('circuit', '?')}): {state}"
            )
        return ToolOutput("\n".join(lines) or "no models", structured={"models": models})


class Status(Tool[NoArgs]):
    name = "status"
    description = "The daemon's live status: connections, calls in flight, limiters, provider circuits."
    Args = NoArgs

    async def run(self, args: NoArgs, ctx: ToolContext) -> ToolOutput:
        import json

        snapshot = ctx.status()
        return ToolOutput(json.dumps(snapshot, indent=2), structured=snapshot)
