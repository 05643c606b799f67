"""Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol.

A real browser, no driver download: chromium listens on a loopback DevTools port (port 0,
read back from DevToolsActivePort) and we speak CDP over trio-websocket. Used by the
dashboard's browser test and by scripts/dashboard_screenshot.py.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

CHROMIUM: Final = Path("/usr/bin/chromium")
FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S: Final = 30.0
# Installed before any page script: uncaught errors land in window.__errors for the tests.
CATCH_ERRORS: Final = (
    "window.__errors = [];"
    "addEventListener('error', e => window.__errors.push(String(e.message)));"
    "addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));"
)


class Page:
    """One browser tab: navigate, evaluate JavaScript, take screenshots."""

    def __init__(self, ws: WebSocketConnection):
        self.ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command; events that arrive meanwhile are skipped."""
        message_id = next(self._ids)
        await self.ws.send_message(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.ws.get_message())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        with trio.fail_after(15):
            while await self.evaluate("document.readyState") != "complete":  # noqa: ASYNC110 - the browser's state
                await trio.sleep(0.05)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path, *, width: int = 1440) -> None:
        """A PNG of the whole page (as tall as its content)."""
        height = int(await self.evaluate("document.documentElement.scrollHeight"))
        await self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        await trio.sleep(0.3)  # let the charts redraw at the new size
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await trio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        await trio.Path(path).write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def open_page(profile_dir: Path, *, width: int = 1440, height: int = 1000) -> AsyncIterator[Page]:
    """Start headless Chromium with a fresh profile in `profile_dir`; stop it on exit."""
    await trio.Path(profile_dir).mkdir(parents=True, exist_ok=True)
    args = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"]
    process = await trio.lowlevel.open_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile_dir / "DevToolsActivePort"
        with trio.fail_after(START_TIMEOUT_S):
            while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
                if process.returncode is not None:
                    raise RuntimeError(f"chromium exited with {process.returncode}")
                await trio.sleep(0.05)
            port = int(port_file.read_text().splitlines()[0])
            async with httpx.AsyncClient() as http:
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        async with open_websocket_url(page_url, max_message_size=64 * 1024 * 1024) as ws:
            page = Page(ws)
            await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            await page.send("Page.enable")
            await page.send("Page.addScriptToEvaluateOnNewDocument", source=CATCH_ERRORS)
            yield page
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
