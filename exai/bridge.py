"""`exai stdio`: an MCP stdio bridge to the daemon, through the client library (WebSocket,
or Streamable HTTP when the URL is http://).

Each line on stdin (one JSON-RPC message) goes to the daemon as one message, unchanged;
each message from the daemon is written to stdout as one line (compact JSON). stdout carries
nothing else: logs go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any, Final

import trio
from loguru import logger

from exai.client import MAX_MESSAGE_BYTES, CannotConnect, ConnectionLost, ExaiClient, connect
from exai.clientcli import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    quiet_logs,
    resolve_token,
    resolve_url,
)

READ_CHUNK_BYTES: Final = 65536
MAX_LINE_BYTES: Final = MAX_MESSAGE_BYTES


class LineTooLong(Exception):
    """A line on stdin exceeds MAX_LINE_BYTES."""


class DaemonClosed(Exception):
    """The daemon ended the connection while the bridge still had work."""


class _Outstanding:
    """Requests forwarded to the daemon and not yet answered, so that at stdin EOF the
    bridge waits for their responses before closing (a client may pipe requests and close)."""

    def __init__(self) -> None:
        self._ids: Counter[Any] = Counter()
        self._changed = trio.Event()

    @staticmethod
    def _key(value: Any) -> Any:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return (type(value).__name__, value)
        return None

    def _bump(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def sent(self, line: str) -> None:
        message = _parse(line)
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if method == "notifications/cancelled":
            # A cancelled request gets no response at all.
            params = message.get("params")
            if isinstance(params, dict):
                self._done(params.get("requestId"))
        elif method == "subscriptions/listen":
            pass  # open until the client cancels it: stdin's end must not wait for it
        elif isinstance(method, str) and message.get("jsonrpc") == "2.0":
            key = self._key(message.get("id"))
            if key is not None:
                self._ids[key] += 1

    def received(self, message: Any) -> None:
        if isinstance(message, dict) and "method" not in message:
            self._done(message.get("id"))

    def _done(self, request_id: Any) -> None:
        key = self._key(request_id)
        if key is not None and self._ids[key] > 0:
            self._ids[key] -= 1
            if self._ids[key] == 0:
                del self._ids[key]
            self._bump()

    async def wait_empty(self) -> None:
        while self._ids:
            await self._changed.wait()


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


async def _stdin_to_daemon(client: ExaiClient, outstanding: _Outstanding) -> None:
    """Forward stdin lines until EOF. Raises DaemonClosed if the daemon went away."""
    buffer = bytearray()
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while True:
            chunk = await stdin.receive_some(READ_CHUNK_BYTES)
            if chunk:
                buffer += chunk
            elif buffer:
                buffer += b"\n"  # a last line without its newline still counts
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end]).decode("utf-8", errors="replace").strip()
                del buffer[: end + 1]
                if line:
                    outstanding.sent(line)
                    try:
                        await client.send_raw(line)
                    except ConnectionLost as exc:
                        raise DaemonClosed(str(exc)) from None
            if len(buffer) > MAX_LINE_BYTES:
                raise LineTooLong(f"a line on stdin is longer than {MAX_LINE_BYTES} bytes")
            if not chunk:
                return


async def _daemon_to_stdout(client: ExaiClient, outstanding: _Outstanding) -> None:
    """Write each daemon message to stdout as one line. Returns when the daemon closes."""
    async with trio.lowlevel.FdStream(os.dup(sys.stdout.fileno())) as stdout:
        while True:
            try:
                message = await client.receive_raw()
            except ConnectionLost:
                return
            if isinstance(message, str | bytes):  # not JSON: passed on, on one line
                text = message.decode("utf-8", errors="replace") if isinstance(message, bytes) else message
                line = text.replace("\r", " ").replace("\n", " ")
            else:  # compact JSON has no newline, which stdio framing forbids
                line = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
            await stdout.send_all(line.encode("utf-8") + b"\n")
            outstanding.received(message)


async def _pump(client: ExaiClient, outstanding: _Outstanding) -> int:
    """Run both directions until stdin EOF (and its answers) or until either side goes."""
    exit_code = EXIT_OK

    async def pump_out() -> None:
        nonlocal exit_code
        try:
            await _daemon_to_stdout(client, outstanding)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.info("stdout closed; stopping")
        else:
            exit_code = EXIT_UNREACHABLE
            print(f"exai stdio: {client.closed_reason or 'the daemon closed the connection'}", file=sys.stderr)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump_out)
        try:
            await _stdin_to_daemon(client, outstanding)
        except DaemonClosed:
            await trio.sleep_forever()  # pump_out reports it and ends the bridge
        except LineTooLong as exc:
            print(f"exai stdio: {exc}", file=sys.stderr)
            exit_code = EXIT_ERROR
        else:
            await outstanding.wait_empty()
        nursery.cancel_scope.cancel()
    return exit_code


async def _bridge(url: str, token: str | None) -> int:
    try:
        async with connect(url, token=token, initialize=False) as client:
            logger.info("bridging stdio to {}", url)
            return await _pump(client, _Outstanding())
    except CannotConnect as exc:
        print(f"exai stdio: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def run_stdio(*, url: str | None, token: str | None) -> int:
    """`exai stdio`: bridge until stdin EOF (exit 0, after the answers to requests already
    forwarded) or until the daemon closes (exit 4). The connection is closed on the way out."""
    quiet_logs("INFO")
    try:
        return trio.run(_bridge, resolve_url(url), resolve_token(token))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
