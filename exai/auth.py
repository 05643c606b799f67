"""The bearer-token check shared by every HTTP-speaking edge (WebSocket handshake, Streamable
HTTP, monitor)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def bearer_ok(headers: Iterable[tuple[bytes, bytes]], token: str) -> bool:
    """Whether some `Authorization: Bearer <token>` header carries `token`.

    Takes header bytes as they came (any bytes, any length) and never raises; compares in
    constant time on bytes. `token` is printable ASCII (config checks it at start-up).
    """
    expected = token.encode()
    found = False
    for name, value in headers:
        if bytes(name).lower() != b"authorization":
            continue
        scheme, _, given = bytes(value).strip().partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), expected):
            found = True
    return found
