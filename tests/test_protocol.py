"""JSON-RPC parsing and MCP params checks: plain data, no I/O."""

from __future__ import annotations

import pytest

from exai.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    BadMessage,
    Notification,
    Request,
    Response,
    RpcError,
    is_request_id,
    negotiate_version,
    parse_cancelled,
    parse_message,
    parse_tool_call,
)


def test_a_request_a_notification_and_a_response() -> None:
    assert parse_message('{"jsonrpc":"2.0","id":1,"method":"ping"}') == Request(1, "ping", {})
    assert parse_message('{"jsonrpc":"2.0","id":"a","method":"x","params":{"k":1}}') == Request("a", "x", {"k": 1})
    assert parse_message('{"jsonrpc":"2.0","method":"notifications/initialized"}') == Notification(
        "notifications/initialized", {}
    )
    assert parse_message('{"jsonrpc":"2.0","id":3,"result":{}}') == Response(3)
    assert parse_message(b'{"jsonrpc":"2.0","id":4,"method":"ping","params":null}') == Request(4, "ping", {})


@pytest.mark.parametrize(
    "frame, code, reply_id",
    [
        ("{", PARSE_ERROR, None),
        (b"\xff\xfe", PARSE_ERROR, None),
        ("[]", INVALID_REQUEST, None),
        ("42", INVALID_REQUEST, None),
        ('{"id":1,"method":"ping"}', INVALID_REQUEST, 1),
        ('{"jsonrpc":"2.0","id":null,"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":true,"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":5}', INVALID_REQUEST, 5),
        ('{"jsonrpc":"2.0","id":6,"method":"x","params":[1]}', INVALID_PARAMS, 6),
        ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":NaN}}', PARSE_ERROR, None),
        ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":Infinity}}', PARSE_ERROR, None),
        ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":1e400}}', PARSE_ERROR, None),
        ('{"jsonrpc":"2.0","id":1,"method":"\\ud800"}', PARSE_ERROR, None),
        (b'{"jsonrpc":"2.0","id":1,"method":"\xed\xa0\x80"}', PARSE_ERROR, None),  # a surrogate in UTF-8
        ("[" * 100_000, PARSE_ERROR, None),
        ('{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":7,"method":"ping","params":{"x":' + "[" * 64 + "]" * 64 + "}}", INVALID_REQUEST, 7),
    ],
)
def test_bad_frames_get_the_right_code_and_id(frame: str | bytes, code: int, reply_id: object) -> None:
    with pytest.raises(BadMessage) as bad:
        parse_message(frame)
    assert bad.value.code == code
    assert bad.value.id == reply_id


def test_tool_call_params() -> None:
    call = parse_tool_call(
        {"name": "chat", "arguments": {"prompt": "x"}, "_meta": {"progressToken": "t", "exai/timeout": 2}}
    )
    assert (call.name, call.arguments, call.progress_token, call.timeout) == ("chat", {"prompt": "x"}, "t", 2.0)
    assert parse_tool_call({"name": "version"}).arguments == {}


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"name": ""},
        {"name": 3},
        {"name": "chat", "arguments": "x"},
        {"name": "chat", "_meta": []},
        {"name": "chat", "_meta": {"progressToken": True}},
        {"name": "chat", "_meta": {"exai/timeout": 0}},
        {"name": "chat", "_meta": {"exai/timeout": "5"}},
        {"name": "chat", "_meta": {"exai/timeout": float("nan")}},
    ],
)
def test_bad_tool_call_params_are_32602(params: dict[str, object]) -> None:
    with pytest.raises(RpcError) as bad:
        parse_tool_call(params)
    assert bad.value.code == INVALID_PARAMS


@pytest.mark.parametrize("timeout, expected", [(10**400, 1e9), (2**64, 1e9), (5e-324, 5e-324), (3, 3.0)])
def test_any_finite_positive_timeout_is_taken(timeout: float, expected: float) -> None:
    # Found by fuzzing: an int beyond a double's range raised OverflowError (-32603).
    call = parse_tool_call({"name": "chat", "_meta": {"exai/timeout": timeout}})
    assert call.timeout == expected


@pytest.mark.parametrize("value", [True, False, 2**64, -(2**63) - 1, 1.0, None, [1], {"a": 1}])
def test_ids_tokens_and_cancelled_ids_of_the_wrong_type(value: object) -> None:
    with pytest.raises(RpcError) as bad:
        parse_tool_call({"name": "chat", "_meta": {"progressToken": value}} if value is not None else {"name": None})
    assert bad.value.code == INVALID_PARAMS
    with pytest.raises(RpcError) as bad:
        parse_cancelled({"requestId": value})
    assert bad.value.code == INVALID_PARAMS
    assert not is_request_id(value)


@pytest.mark.parametrize("value", [0, -(2**63), 2**64 - 1, "", "x" * 1000])
def test_ids_that_fit(value: object) -> None:
    assert is_request_id(value)
    assert parse_cancelled({"requestId": value, "reason": "r"}).request_id == value


def test_version_negotiation() -> None:
    assert negotiate_version("2025-03-26") == "2025-03-26"
    assert negotiate_version("1999-01-01") == "2025-11-25"
    assert negotiate_version(None) == "2025-11-25"
