"""JSON-RPC 2.0 / MCP messages and error codes. Plain data in, plain data out; no I/O.

Everything a client sends is checked here, field by field, before anything else reads it:
bad input becomes a BadMessage / RpcError with the contract's code, never another exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import orjson

from exai.errors import ExaiError

# JSON nested deeper than this (the message object is level 1) is refused with -32600.
MAX_DEPTH: Final = 64
# `_meta.exai/timeout` above this counts as this (the tool timeout shortens it further anyway).
MAX_TIMEOUT_S: Final = 1e9
PROTOCOL_VERSION: Final = "2025-11-25"
SUPPORTED_VERSIONS: Final = ("2025-11-25", "2025-06-18", "2025-03-26")  # legacy: by initialize
MODERN_VERSIONS: Final = ("2026-07-28",)  # modern: stated by every request's _meta
ALL_VERSIONS: Final = (*MODERN_VERSIONS, *SUPPORTED_VERSIONS)

# The modern revision's reserved _meta keys.
META_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT: Final = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL: Final = "io.modelcontextprotocol/logLevel"
META_SERVER: Final = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION: Final = "io.modelcontextprotocol/subscriptionId"
MAX_CLIENT_NAME: Final = 128  # characters of clientInfo.name: it names a limiter in /api/status
LOG_LEVELS: Final = frozenset({"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"})

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
OVERLOADED: Final = -32000
TIMED_OUT: Final = -32001
HEADER_MISMATCH: Final = -32020
UNSUPPORTED_VERSION: Final = -32022

RequestId = str | int


class RpcError(ExaiError):
    """An error answered as a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    """A response the client sent us (we send no requests, so it is ignored)."""

    id: RequestId | None


Message = Request | Notification | Response


class BadMessage(RpcError):
    """The frame cannot be handled; `id` is what the error response must carry."""

    def __init__(self, code: int, message: str, id: RequestId | None = None):
        super().__init__(code, message)
        self.id = id


def is_request_id(value: Any) -> TypeGuard[RequestId]:
    """A JSON-RPC id we accept: a string or an integer that fits 64 bits (so it can be echoed
    back), not a bool (which Python calls an integer)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**64
    return isinstance(value, str)


def loads(frame: str | bytes) -> Any:
    """Parse JSON, or raise BadMessage(-32700): invalid UTF-8, lone surrogates, NaN, Infinity
    and numbers that overflow a double are not JSON here. Integers beyond 64 bits become floats."""
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError as exc:  # its text gives a position, never the input
        raise BadMessage(PARSE_ERROR, f"Parse error: the frame is not valid JSON ({exc})") from None


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels in `value` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_message(frame: str | bytes) -> Message:
    """Parse one text frame into a message, or raise BadMessage with the right code and id."""
    obj = loads(frame)
    if isinstance(obj, list):
        raise BadMessage(INVALID_REQUEST, "Invalid Request: batches are not supported")
    if not isinstance(obj, dict):
        raise BadMessage(INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
    raw_id = obj.get("id")
    id_ok = is_request_id(raw_id)
    reply_id = raw_id if id_ok else None
    if nested_deeper_than(obj, MAX_DEPTH):
        raise BadMessage(INVALID_REQUEST, f"Invalid Request: JSON nested deeper than {MAX_DEPTH} levels", reply_id)
    if obj.get("jsonrpc") != "2.0":
        raise BadMessage(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', reply_id)
    method = obj.get("method")
    if method is None and ("result" in obj or "error" in obj):
        return Response(reply_id)
    if not isinstance(method, str):
        raise BadMessage(INVALID_REQUEST, 'Invalid Request: "method" must be a string', reply_id)
    params = obj.get("params", {})
    if params is None:
        params = {}
    if "id" not in obj:
        if not isinstance(params, dict):
            params = {}
        return Notification(method, params)
    if raw_id is None:
        raise BadMessage(INVALID_REQUEST, "Invalid Request: the id must not be null")
    if not id_ok:
        raise BadMessage(INVALID_REQUEST, "Invalid Request: the id must be a string or an integer")
    if not isinstance(params, dict):
        raise BadMessage(INVALID_PARAMS, 'Invalid params: "params" must be an object', reply_id)
    return Request(raw_id, method, params)


def dump(message: dict[str, Any]) -> str:
    """One message as compact JSON text, non-ASCII characters as they are."""
    return orjson.dumps(message).decode()


def result_message(id: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "result": result}


def error_message(id: RequestId | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": error}


def notification_message(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def negotiate_version(requested: Any) -> str:
    """Answer with the client's revision when we support it, else with ours."""
    return requested if requested in SUPPORTED_VERSIONS else PROTOCOL_VERSION


def parse_initialize(params: dict[str, Any]) -> str | None:
    """The `protocolVersion` the client asked for, if any; RpcError(-32602) if not a string."""
    version = params.get("protocolVersion")
    if version is not None and not isinstance(version, str):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "protocolVersion" must be a string')
    return version


@dataclass(frozen=True, slots=True)
class Cancelled:
    request_id: RequestId
    reason: str


def parse_cancelled(params: dict[str, Any]) -> Cancelled:
    """`notifications/cancelled` params; RpcError(-32602) naming the field when malformed."""
    request_id = params.get("requestId")
    if not is_request_id(request_id):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "requestId" must be a string or an integer')
    reason = params.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "reason" must be a string')
    return Cancelled(request_id, reason or "")


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    progress_token: RequestId | None
    timeout: float | None


def parse_tool_call(params: dict[str, Any]) -> ToolCall:
    """Check the shape of `tools/call` params; raise RpcError(-32602) naming what is wrong."""
    name = params.get("name")
    if not isinstance(name, str) or not name:
        raise RpcError(INVALID_PARAMS, 'Invalid params: "name" must be a non-empty string')
    arguments = params.get("arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "arguments" must be an object')
    meta = params.get("_meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "_meta" must be an object')
    token = meta.get("progressToken")
    if token is not None and not is_request_id(token):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "_meta.progressToken" must be a string or an integer')
    timeout = meta.get("exai/timeout")
    if timeout is not None:
        # Any finite positive value: the call's deadline is the shorter of it and the tool timeout.
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
            raise RpcError(INVALID_PARAMS, 'Invalid params: "_meta.exai/timeout" must be a positive number of seconds')
        timeout = float(min(timeout, MAX_TIMEOUT_S))  # an int beyond a double is just "long"
    return ToolCall(name, arguments, token, timeout)


def meta_of(params: dict[str, Any]) -> dict[str, Any] | None:
    """`params._meta` when it is an object."""
    meta = params.get("_meta")
    return meta if isinstance(meta, dict) else None


def is_modern(params: dict[str, Any]) -> bool:
    """A request is modern when its `_meta` states a protocol version (any value)."""
    meta = meta_of(params)
    return meta is not None and META_VERSION in meta


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a modern request says about itself in `_meta`."""

    version: str
    capabilities: dict[str, Any]
    client_name: str


def unsupported_version(requested: str) -> RpcError:
    return RpcError(
        UNSUPPORTED_VERSION, "Unsupported protocol version", {"supported": list(ALL_VERSIONS), "requested": requested}
    )


def parse_envelope(params: dict[str, Any]) -> Envelope:
    """A modern request's `_meta`, checked key by key; RpcError -32022 for a version exai does
    not serve, -32602 naming the key that is missing or malformed."""
    meta = meta_of(params)
    if meta is None:
        raise RpcError(INVALID_PARAMS, 'Invalid params: "_meta" must be an object')
    version = meta.get(META_VERSION)
    if not isinstance(version, str):
        raise RpcError(INVALID_PARAMS, f"Invalid params: _meta {META_VERSION!r} must be a string")
    if version not in MODERN_VERSIONS:
        raise unsupported_version(version)
    capabilities = meta.get(META_CAPABILITIES)
    if capabilities is None:
        raise RpcError(INVALID_PARAMS, f"Invalid params: _meta is missing {META_CAPABILITIES!r}")
    if not isinstance(capabilities, dict):
        raise RpcError(INVALID_PARAMS, f"Invalid params: _meta {META_CAPABILITIES!r} must be an object")
    client = meta.get(META_CLIENT)
    name = "anonymous"
    if client is not None:
        raw = client.get("name") if isinstance(client, dict) else None
        if not isinstance(raw, str) or not raw or len(raw) > MAX_CLIENT_NAME or not raw.isprintable():
            raise RpcError(
                INVALID_PARAMS,
                f"Invalid params: _meta {META_CLIENT!r} must be an object whose \"name\" is a printable "
                f"string of 1 to {MAX_CLIENT_NAME} characters",
            )
        name = raw
    level = meta.get(META_LOG_LEVEL)
    if level is not None and (not isinstance(level, str) or level not in LOG_LEVELS):
        raise RpcError(INVALID_PARAMS, f"Invalid params: _meta {META_LOG_LEVEL!r} must be one of {sorted(LOG_LEVELS)}")
    return Envelope(version, capabilities, name)
