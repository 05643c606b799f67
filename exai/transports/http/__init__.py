"""MCP over Streamable HTTP on hypercorn, on the daemon's own event loop.

Only moves messages. Rooms: `app` (the checks every request passes, then its era picks who
answers), `legacy` (sessions minted by `initialize`, GET and DELETE), `httpsession` (one
legacy session: its streams and replay), `modern` (MCP 2026-07-28: the routing headers
checked against the body, each request on a stream of its own whose closing cancels it),
`sse` (a request's stream and its writer).

Per call, the handler hypercorn spawns is the only task beside the call's own: it dispatches
the message itself and waits for the stream's events and for the client leaving in one wait
(see `Stream.wait`), so each event costs one wakeup and one write.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from exai.asgi import accepts
from exai.session import CLOSE_TIMEOUT_S
from exai.transports.http.app import MCP_PATH, HttpTransport
from exai.transports.http.httpsession import REPLAY_MAX_EVENTS

if TYPE_CHECKING:
    from exai.server import Daemon

__all__ = ["MCP_PATH", "REPLAY_MAX_EVENTS", "HttpTransport", "accepts", "serve_http"]

# hypercorn closes a kept-alive connection idle this long (its default, stated here).
KEEP_ALIVE_S: Final = 5.0


async def serve_http(daemon: Daemon, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve MCP Streamable HTTP until cancelled; task_status gets the /mcp URL (real port).

    Meant to run in `daemon.connection_nursery`: it keeps answering while the daemon drains
    (so calls finishing in the grace period still reach their clients) and stops with it.
    """
    settings = daemon.settings
    transport = HttpTransport(daemon)
    host = settings.host
    shown = f"[{host}]" if ":" in host else host
    config = Config()
    config.bind = [f"{shown}:{settings.http_port}"]
    config.accesslog = None
    config.include_server_header = False  # one header less to build and validate per response
    config.loglevel = "WARNING"
    config.graceful_timeout = CLOSE_TIMEOUT_S
    config.keep_alive_timeout = KEEP_ALIVE_S
    app: Any = transport.app  # hypercorn's ASGI types are stricter than a plain callable's
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, mode="asgi"))
        port = urlsplit(binds[0]).port
        assert port is not None
        transport.bound_to(port)
        task_status.started(f"http://{shown}:{port}{MCP_PATH}")
