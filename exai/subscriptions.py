"""Who hears that the tool set changed: open `subscriptions/listen` requests and sessions.

A change (SIGHUP re-reading EXAI_DISABLED_TOOLS) is told to every listener at once; each
sends its own notification in its own time, so a slow client delays nobody.
"""

from __future__ import annotations

from typing import Protocol

import trio

from exai.protocol import RequestId


class HearsToolChanges(Protocol):
    def tools_changed(self) -> None:
        """The tool set changed: send the client a notification soon; never blocks."""


class Subscription:
    """One open `subscriptions/listen` request: what it asked for, and how it ends."""

    def __init__(self, request_id: RequestId, wants_tools: bool):
        self.id = request_id
        self.wants_tools = wants_tools
        self.scope = trio.CancelScope()
        self.graceful = False  # ended by the server: it answers the request before it goes
        self._changed = trio.Event()

    def tools_changed(self) -> None:
        if self.wants_tools:
            self._changed.set()

    async def next_change(self) -> None:
        """Wait for the next change this subscription asked for (changes in between merge)."""
        await self._changed.wait()
        self._changed = trio.Event()

    def end(self) -> None:
        """End it from the server's side: its request gets its (empty) result."""
        self.graceful = True
        self.scope.cancel()


class Listeners:
    """Every session and subscription alive now, to be told of tool-set changes."""

    def __init__(self) -> None:
        self.sessions: set[HearsToolChanges] = set()
        self.subscriptions: set[Subscription] = set()

    def tools_changed(self) -> int:
        """Tell everyone; returns how many were told."""
        everyone: list[HearsToolChanges] = [*self.sessions, *self.subscriptions]
        for listener in everyone:
            listener.tools_changed()
        return len(everyone)

    def end_subscriptions(self) -> None:
        """Shutdown: every subscription answers its request and ends."""
        for subscription in list(self.subscriptions):
            subscription.end()
