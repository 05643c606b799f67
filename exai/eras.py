"""MCP's protocol eras: what differs between them, in one place both transports use.

Legacy revisions (2025-11-25 and older) open a session with `initialize`; everything after it
relies on that session. The era of a request is decided once, by `era_of`, from the request
itself; the session then asks that era whether the request may run, which method answers it
and how a result is dressed. Nothing else in the code asks which era it is in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from exai import __version__
from exai.protocol import (
    INVALID_REQUEST,
    Request,
    RpcError,
    negotiate_version,
    parse_initialize,
)

if TYPE_CHECKING:
    from exai.session import Session

Result = dict[str, Any]
# Answers a request at once (a result), or starts work that answers later (None).
Handler = Callable[["Session", Request], Result | None]

SERVER_NAME: Final = "exai"
INSTRUCTIONS: Final = "exai serves AI workflow tools backed by GLM and Kimi; see tools/list."


class Era(Protocol):
    """One protocol era's rules for a request that has reached a session."""

    name: str
    methods: Mapping[str, Handler]

    def admit(self, session: Session, request: Request) -> None:
        """Raise RpcError when the request may not run in this session now."""

    def finish(self, result: Result) -> Result:
        """The result as this era sends it."""


def list_tools(session: Session, request: Request) -> Result:
    return {"tools": [tool.describe() for tool in session.services.tools.values()]}


def call_tool(session: Session, request: Request) -> None:
    session.start_call(request)


class Legacy:
    """2025-11-25 / 2025-06-18 / 2025-03-26: `initialize` first, then the session's requests."""

    name = "legacy"

    def __init__(self) -> None:
        self.methods: Mapping[str, Handler] = {
            "initialize": self.initialize,
            "ping": lambda session, request: {},
            "tools/list": list_tools,
            "tools/call": call_tool,
        }

    def admit(self, session: Session, request: Request) -> None:
        if request.method != "initialize" and not session.initialized:
            raise RpcError(INVALID_REQUEST, f"Invalid Request: {request.method} before initialize")

    def finish(self, result: Result) -> Result:
        return result

    def initialize(self, session: Session, request: Request) -> Result:
        if session.initialized:
            raise RpcError(INVALID_REQUEST, "Invalid Request: initialize was already done")
        version = negotiate_version(parse_initialize(request.params))
        session.initialized = True
        session.protocol_version = version
        return {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": SERVER_NAME, "version": __version__},
            "instructions": INSTRUCTIONS,
        }


LEGACY: Final = Legacy()


def era_of(request: Request) -> Era:
    """The era a request speaks, from the request alone."""
    return LEGACY
