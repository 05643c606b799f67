"""MCP's protocol eras: what differs between them, in one place both transports use.

Legacy revisions (2025-11-25 and older) open a session with `initialize`; everything after it
relies on that session. The modern revision (2026-07-28) has no session: every request states
its version and the client's capabilities in `_meta`, and every result says what it is. The era of a request is decided once, by `era_of`, from the request
itself; the session then asks that era whether the request may run, which method answers it
and how a result is dressed. Nothing else in the code asks which era it is in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from exai import __version__
from exai.protocol import (
    ALL_VERSIONS,
    INVALID_PARAMS,
    INVALID_REQUEST,
    META_SERVER,
    Request,
    RpcError,
    is_modern,
    negotiate_version,
    parse_envelope,
    parse_initialize,
)

if TYPE_CHECKING:
    from exai.session import Session

Result = dict[str, Any]
# Answers a request at once (a result), or starts work that answers later (None).
Handler = Callable[["Session", Request], Result | None]

SERVER_NAME: Final = "exai"
INSTRUCTIONS: Final = "exai serves AI workflow tools backed by GLM and Kimi; see tools/list."
# How long a client may keep server/discover and tools/list: the tool set changes only on
# SIGHUP, and then every subscriber hears of it at once.
CACHE_TTL_MS: Final = 300_000
TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"


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
            "capabilities": {"tools": {"listChanged": True}},
            "serverInfo": {"name": SERVER_NAME, "version": __version__},
            "instructions": INSTRUCTIONS,
        }


class Modern:
    """2026-07-28: no session; each request carries its own envelope in `_meta`."""

    name = "modern"

    def __init__(self) -> None:
        self.methods: Mapping[str, Handler] = {
            "server/discover": lambda session, request: self.discover(),
            "tools/list": self.list_tools,
            "tools/call": call_tool,
            "subscriptions/listen": self.listen,
        }

    def admit(self, session: Session, request: Request) -> None:
        parse_envelope(request.params)

    def finish(self, result: Result) -> Result:
        meta = result.get("_meta")
        server = {META_SERVER: {"name": SERVER_NAME, "version": __version__}}
        return {"resultType": "complete", **result, "_meta": {**meta, **server} if isinstance(meta, dict) else server}

    def discover(self) -> Result:
        return {
            "supportedVersions": list(ALL_VERSIONS),
            "capabilities": {"tools": {"listChanged": True}, "extensions": {TASKS_EXTENSION: {}}},
            "instructions": INSTRUCTIONS,
            "ttlMs": CACHE_TTL_MS,
            "cacheScope": "private",
        }

    def list_tools(self, session: Session, request: Request) -> Result:
        return list_tools(session, request) | {"ttlMs": CACHE_TTL_MS, "cacheScope": "private"}

    def listen(self, session: Session, request: Request) -> None:
        wanted = request.params.get("notifications", {})
        if not isinstance(wanted, dict):
            raise RpcError(INVALID_PARAMS, 'Invalid params: "notifications" must be an object')
        tools = wanted.get("toolsListChanged", False)
        if not isinstance(tools, bool):
            raise RpcError(INVALID_PARAMS, 'Invalid params: "notifications.toolsListChanged" must be a boolean')
        session.start_subscription(request, tools, self)


LEGACY: Final = Legacy()
MODERN: Final = Modern()


def era_of(request: Request) -> Era:
    """The era a request speaks, from the request alone: modern when its `_meta` states a
    protocol version, legacy otherwise."""
    return MODERN if is_modern(request.params) else LEGACY
