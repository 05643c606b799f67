"""The ASGI app at /mcp: the checks every request passes (path, method, Origin, token, body),
then the request's era, decided once from its message, picks who answers it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Final

from loguru import logger

from exai.asgi import (
    ClientGone,
    Headers,
    Receive,
    Reply,
    Send,
    accepts,
    header_map,
    lifespan,
    read_body,
)
from exai.auth import bearer_ok
from exai.protocol import SUPPORTED_VERSIONS, BadMessage, error_message, parse_message
from exai.protocol import dump as dump_message
from exai.transports.http.legacy import LegacyHttp
from exai.transports.http.modern import ModernHttp, is_modern_post

if TYPE_CHECKING:
    from exai.server import Daemon

MCP_PATH: Final = "/mcp"


class HttpTransport:
    """The ASGI app at /mcp."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.settings = daemon.settings
        self.legacy = LegacyHttp(daemon)
        self.modern = ModernHttp(daemon)
        self.origins: frozenset[str] = frozenset()
        token = self.settings.auth_token
        self.token = token.get_secret_value() if token is not None else None

    def bound_to(self, port: int) -> None:
        """Origins this server answers: its own, by the names a local browser would use."""
        host = self.settings.host.strip("[]")
        shown = f"[{host}]" if ":" in host else host
        names = {"127.0.0.1", "localhost", "[::1]", shown}
        self.origins = frozenset(f"http://{name}:{port}".lower() for name in names)

    async def app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        reply = Reply(send)
        try:
            await self._handle(scope, receive, reply)
        except ClientGone:
            return
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            logger.exception("http {} {} failed, error id {}", scope["method"], scope["path"], error_id)
            if not reply.started:
                await reply.refuse(500, "Internal error", -32603, {"error_id": error_id})

    async def _handle(self, scope: dict[str, Any], receive: Receive, reply: Reply) -> None:
        headers = header_map(scope["headers"])
        reply.body_unread = "transfer-encoding" in headers or headers.get("content-length", "0").strip() != "0"
        if scope["path"].rstrip("/") != MCP_PATH:
            await reply.refuse(404, f"no MCP endpoint at {scope['path']}; use {MCP_PATH}")
            return
        refusal = self._refusal(scope["method"], headers, scope["headers"])
        if refusal is not None:
            status, message, extra = refusal
            await reply.refuse(status, message, headers=extra)
            return
        if scope["method"] == "POST":
            client = scope.get("client")
            await self._post(headers, str(client[0]) if client else "unknown", receive, reply)
        elif scope["method"] == "GET":
            if not accepts(headers.get("accept", "*/*"), "text/event-stream"):
                await reply.refuse(406, "Accept must include text/event-stream")
                return
            await self.legacy.get(headers, receive, reply)
        else:
            await self.legacy.delete(headers, reply)

    def _refusal(
        self, method: str, headers: dict[str, str], raw_headers: Headers
    ) -> tuple[int, str, Headers] | None:
        if method not in ("POST", "GET", "DELETE"):
            return 405, f"method {method} not allowed", [(b"allow", b"GET, POST, DELETE")]
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in self.origins:
            return 403, "Origin not allowed: only this server's own origin may call it", []
        if self.token is not None and not bearer_ok(raw_headers, self.token):
            return 401, "missing or wrong Authorization: Bearer token", [(b"www-authenticate", b"Bearer")]
        version = headers.get("mcp-protocol-version")
        if method != "POST" and version is not None and version not in SUPPORTED_VERSIONS:
            supported = ", ".join(SUPPORTED_VERSIONS)
            return 400, f"unsupported MCP-Protocol-Version {version!r}; supported: {supported}", []
        return None

    async def _post(self, headers: dict[str, str], peer: str, receive: Receive, reply: Reply) -> None:
        accept = headers.get("accept", "*/*")
        json_ok, sse_ok = accepts(accept, "application/json"), accepts(accept, "text/event-stream")
        if not (json_ok or sse_ok):
            await reply.refuse(406, "Accept must include application/json or text/event-stream")
            return
        content_type = headers.get("content-type", "application/json")
        if content_type.split(";")[0].strip().lower() != "application/json":
            await reply.refuse(415, "Content-Type must be application/json")
            return
        limit = self.settings.max_message_bytes
        body = await read_body(headers, receive, limit)
        reply.body_unread = body is None
        if body is None:
            await reply.refuse(413, f"message larger than EXAI_MAX_MESSAGE_BYTES ({limit})")
            return
        try:
            message = parse_message(body)
        except BadMessage as bad:
            await reply.json(400, dump_message(error_message(bad.id, bad.code, bad.message)).encode())
            return
        if is_modern_post(message, headers):  # the era, decided once: Mcp-Session-Id plays no part
            await self.modern.post(message, headers, peer, receive, reply, json_ok, sse_ok)
            return
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in SUPPORTED_VERSIONS:
            supported = ", ".join(SUPPORTED_VERSIONS)
            await reply.refuse(400, f"unsupported MCP-Protocol-Version {version!r}; supported: {supported}")
            return
        await self.legacy.post(message, headers, receive, reply, json_ok, sse_ok)
