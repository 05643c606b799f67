"""JSON-RPC 2.0 / MCP messages and error codes. Plain data in, plain data out; no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

PROTOCOL_VERSION: Final = "2025-11-25"
SUPPORTED_VERSIONS: Final = ("2025-11-25", "2025-06-18", "2025-03-26")

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
OVERLOADED: Final = -32000
TIMED_OUT: Final = -32001

RequestId = str | int


class RpcError(Exception):
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


def parse_message(frame: str | bytes) -> Message:
    """Parse one text frame into a message, or raise BadMessage with the right code and id."""
    try:
        obj = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        raise BadMessage(PARSE_ERROR, "Parse error: the frame is not valid JSON") from None
    if isinstance(obj, list):
        raise BadMessage(INVALID_REQUEST, "Invalid Request: batches are not supported")
    if not isinstance(obj, dict):
        raise BadMessage(INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
    raw_id = obj.get("id")
    id_ok = isinstance(raw_id, str) or (isinstance(raw_id, int) and not isinstance(raw_id, bool))
    reply_id = raw_id if id_ok else None
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
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


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


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    progress_token: str | int | None
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
    if token is not None and (
        isinstance(token, bool) or not isinstance(token, str | int)
    ):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "_meta.progressToken" must be a string or an integer')
    timeout = meta.get("exai/timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise RpcError(INVALID_PARAMS, 'Invalid params: "_meta.exai/timeout" must be a positive number of seconds')
        timeout = float(timeout)
    return ToolCall(name, arguments, token, timeout)
